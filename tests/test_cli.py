"""The command line as a user types it: fairseq's positional arguments, exit codes, messages."""

import re
import subprocess
import sys

import numpy as np
import pytest

from hubertkit.cli import COMMANDS as DECLARED, GROUPS, parser

COMMANDS = sorted({*DECLARED, *GROUPS})  # every command declared, so a new one gets its help test


def test_the_recipes_commands_are_there():
    """The commands of shared/DESIGN.md's CLI contract, and those this repository's docs use."""
    assert {"manifest", "dump-mfcc", "dump-hubert", "learn-kmeans", "dump-labels", "merge-labels", "make-dict", "train",
            "pipeline", "demo", "export", "label-quality", "units", "dump-pitch", "probe", "finetune", "transcribe",
            "unit-asr train", "unit-asr transcribe", "align", "export-kmeans", "abx", "submit", "segment",
            "pack"} <= set(COMMANDS)


def hubertkit(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "hubertkit", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\n{r.stderr}")
    return r


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([*command.split(), "--help"])
    assert e.value.code == 0
    assert "usage: hubertkit " + command in capsys.readouterr().out


def test_recipe_end_to_end(small_corpus, demo_dir, tmp_path):
    tsv, feat, lab, km = tmp_path / "tsv", tmp_path / "feat", tmp_path / "lab", tmp_path / "km.pt"
    hubertkit("manifest", small_corpus, "--dest", tsv, "--valid-percent", 0.2, "--seed", 1)
    for split in ("train", "valid"):
        r = hubertkit("dump-mfcc", tsv, split, 2, "all", feat, "--jobs", 2, "-q")
        assert "wrote 4 file(s)" in r.stdout
    r = hubertkit("learn-kmeans", feat, "train", 2, km, 20, "--percent", 0.5, "-q")
    assert "20 clusters" in r.stdout
    for split in ("train", "valid"):
        for rank in (0, 1):
            hubertkit("dump-labels", feat, split, km, 2, rank, lab, "-q")
        hubertkit("merge-labels", lab, split, 2)
    r = hubertkit("make-dict", lab)
    assert (lab / "dict.km.txt").read_text().count("\n") == 20
    r = hubertkit("label-quality", lab / "valid.km", demo_dir / "alignments.jsonl", "--label-rate", 100, "--tsv", tsv / "valid.tsv")
    assert "PNMI" in r.stdout
    pnmi, chance = (float(part.split()[0]) for part in r.stdout.split("PNMI")[1:])
    assert 0.1 < pnmi < 1.0 and 0 < chance < pnmi / 3


def test_bad_input_exits_2_without_traceback(tmp_path):
    (tmp_path / "train.tsv").write_text(f"{tmp_path}\nnope.flac\t16000\n")
    r = hubertkit("dump-mfcc", tmp_path, "train", 1, 0, tmp_path / "feat", check=False)
    assert r.returncode == 2
    assert "train.tsv:2" in r.stderr and "nope.flac" in r.stderr and "Traceback" not in r.stderr
    r = hubertkit("dump-mfcc", tmp_path, "train", 1, 0, tmp_path / "feat", "--debug", check=False)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_values_that_mean_nothing_exit_2_naming_the_flag(labelled, tmp_path):
    """Each stopped with a traceback or an unclear message, or replaced its own input."""
    import shutil

    shutil.copy(labelled / "km20.pt", tmp_path / "km.pt")
    for args, message in (
        (["export-kmeans", tmp_path / "km.pt", tmp_path / "km.pt"], "is KM_PATH itself"),
        (["export-kmeans", tmp_path / "km.pt", tmp_path], "is a directory"),
        (["label-quality", labelled / "labels" / "valid.km", tmp_path / "a.jsonl", "--label-rate", 0, "--tsv",
          labelled / "tsv" / "valid.tsv"], "--label-rate must be a positive number"),
        (["make-dict", labelled / "labels", "--n-clusters", 0], "--n-clusters must be in 1.."),
        (["units", tmp_path / "m.pt", tmp_path / "km.pt", labelled / "tsv" / "valid.tsv", "--layer", 1, "--nshard", 0,
          "--out", tmp_path / "u.jsonl"], "NSHARD (--nshard) must be at least 1"),
    ):
        r = hubertkit(*args, check=False)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert (tmp_path / "km.pt").read_bytes() == (labelled / "km20.pt").read_bytes()


def test_pickled_kmeans_needs_trust_flag(tmp_path):
    import joblib
    from sklearn.cluster import KMeans

    joblib.dump(KMeans(n_clusters=2, n_init=1).fit(np.eye(4)), tmp_path / "km.bin")
    r = hubertkit("dump-labels", tmp_path, "train", tmp_path / "km.bin", 1, 0, tmp_path, check=False)
    assert r.returncode == 2 and "--trust-pickle" in r.stderr


def test_demo_runs(tmp_path):
    r = hubertkit("demo", "--out", tmp_path / "demo", "--max-update", 6, "-q")
    assert "PNMI" in r.stdout and (tmp_path / "demo" / "iter1" / "labels" / "dict.km.txt").is_file()
    assert "| iter2 |" in r.stdout and (tmp_path / "demo" / "iter2" / "checkpoints" / "checkpoint_last.pt").is_file()
    assert (tmp_path / "demo" / "report.md").is_file() and (tmp_path / "demo" / "training_iter1.png").is_file()


def test_usage_error_shows_the_subcommands_usage():
    r = hubertkit("dump-hubert", "tsv", "train", "ck.pt", 6, 1, 0, "feat", "--no-such-flag", check=False)
    assert r.returncode == 2 and r.stderr.startswith("usage: hubertkit dump-hubert"), r.stderr
    assert "unrecognized arguments: --no-such-flag" in r.stderr


def test_underscore_spellings_are_aliases():
    args = parser().parse_args(["dump-hubert", "tsv", "train", "ck.pt", "6", "1", "0", "feat", "--max_chunk", "800"])
    assert args.max_chunk == 800


def test_older_weak_spots_exit_2_naming_what_to_change(labelled, tmp_path, capsys):
    """Each was a traceback, a misleading message, or a value silently reinterpreted."""
    from hubertkit.cli import main
    from hubertkit.cluster.kmeans import KMeansModel

    KMeansModel(np.eye(3, dtype=np.float32), {"inertia": "n/a", "frames": [1]}).save(tmp_path / "meta.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.tsv").write_text("/root\n")
    for args, message in (
        (["dump-labels", labelled / "feat", "train", labelled / "km20.pt", 2, 2, tmp_path], "RANK 2 is outside 0..1"),
        (["dump-labels", labelled / "feat", "train", labelled / "km20.pt", 2, -1, tmp_path], "RANK -1 is outside 0..1"),
        (["dump-mfcc", tmp_path / "empty", "train", 1, 0, tmp_path / "f"], "lists no utterances (only its root line)"),
        (["units", tmp_path / "m.pt", labelled / "km20.pt", labelled / "tsv", "--layer", 1], "is a folder: give a manifest "
                                                                                               "file in it (train.tsv"),
        (["demo", "--out", tmp_path / "demo", "--max-update", 0], "--max-update must be at least 1"),
        (["transcribe", tmp_path / "ctc.pt", tmp_path / "a.flac", "--batch-size", 0], "--batch-size must be at least 1"),
        (["transcribe", tmp_path / "ctc.pt", tmp_path / "a.flac", "--chunk-seconds", -1], "--chunk-seconds must be a positive"),
        (["finetune", "--config-name", "demo", f"task.data={labelled / 'tsv'}", "task.label_dir=x", "model.w2v_path=y",
          "model.final_dropout=nan"], "model.final_dropout"),
    ):
        with pytest.raises(SystemExit) as e:
            main([*map(str, args), "-q"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err, (args, err)
    main(["export-kmeans", str(tmp_path / "meta.pt"), str(tmp_path / "km.bin")])  # non-numeric metadata: a traceback before
    assert (tmp_path / "km.bin").is_file()


def _library_defaults(handler) -> dict:
    """The defaults of the hubertkit functions (and classes) a command's handler imports,
    by parameter name."""
    import ast
    import importlib
    import inspect
    import textwrap

    found = {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("hubertkit"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                target = getattr(module, alias.name)
                if not callable(target):
                    continue
                try:
                    params = inspect.signature(target).parameters.values()
                except (TypeError, ValueError):
                    continue
                found.update({p.name: p.default for p in params if p.default is not inspect.Parameter.empty})
    return found


@pytest.mark.parametrize("command", sorted(DECLARED))
def test_a_commands_defaults_are_its_librarys(command):
    """An option named as a parameter of the library function the command calls has that
    parameter's default, and a help text that states a default states that one."""
    help_text, arguments, handler = DECLARED[command]
    library = _library_defaults(handler)
    wrong = []
    for names, kwargs in arguments:
        dest = kwargs.get("dest") or names[-1].lstrip("-").replace("-", "_")
        default = kwargs.get("default")
        if default is not None and dest in library and library[dest] is not None and library[dest] != default:
            wrong.append(f"{names[-1]}: {default!r} here, {library[dest]!r} in the library")
        stated = re.search(r"\(default: ([^);]*)", kwargs.get("help", ""))
        if stated and isinstance(default, (int, float, str)) and not isinstance(default, bool):
            said = stated.group(1)
            if not (said == str(default) or re.fullmatch(r"[\d.e+-]+", said) and float(said) == default
                    or said.startswith(("all ", "the "))):  # a machine's value ("all cores"), said in words
                wrong.append(f"{names[-1]}: help says {said!r}, the default is {default!r}")
    assert not wrong, wrong
