"""The wheel a user installs holds what a clone has: the configs and the demo corpus, so
`hubertkit train --config-name ...` and `hubertkit demo` work from any directory."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked sources (nothing the build writes lands in the clone)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "hubertkit", src / "hubertkit", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
                   check=True, capture_output=True)
    (whl,) = out.glob("hubertkit-*.whl")
    return whl


def test_wheel_holds_configs_and_demo_corpus(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # every file of the package, YAML, FLAC and README included (read from the tree, so
    # that an unpacked source archive without git tests the same)
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "hubertkit").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".egg-info"))]
    missing = [n for n in sources if n not in names]
    assert not missing, missing[:10]
    assert "hubertkit/configs/hubert_base_librispeech.yaml" in names and "hubertkit/corpora/demo/alignments.jsonl" in names


def test_installed_wheel_runs_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*args):
        env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "hubertkit", *args], cwd=cwd, env=env, capture_output=True, text=True)

    r = subprocess.run([sys.executable, "-c", "import hubertkit; print(hubertkit.__file__)"], cwd=cwd,
                       env={"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert r.stdout.startswith(str(site)), r  # the wheel's copy, not the clone's
    r = run("train", "--config-name", "hubert_base_librispeech", f"task.data={cwd / 'tsv'}", f"task.label_dir={cwd / 'lab'}",
            "model.label_rate=100")
    assert r.returncode == 2 and "lab/dict.km.txt does not exist" in r.stderr, r.stderr  # config found and read; data next
    r = run("demo", "--out", "demo_out", "--until", "manifest", "-q")
    assert r.returncode == 0, r.stderr
    assert "stopped after manifest" in r.stdout and list((cwd / "demo_out").rglob("train.tsv")), r.stdout
