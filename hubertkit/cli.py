"""The ``hubertkit`` command: each subcommand parses its arguments and calls one
library function. Positional arguments follow fairseq's scripts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from hubertkit.errors import HubertkitError

log = logging.getLogger("hubertkit")


class _Parser(argparse.ArgumentParser):
    """Every ``--multi-word`` option also answers to fairseq's ``--multi_word`` spelling, so
    the recipe's command lines (``--max_iter``, ``--batch_size``, ``--max_chunk``) work
    unchanged; help lists the hyphenated name only."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        for name in names:
            if name.startswith("--") and "-" in name[2:]:
                alias = "--" + name[2:].replace("-", "_")
                if alias not in self._option_string_actions:
                    self._option_string_actions[alias] = action
        return action


def _rank(value: str):
    return value if value in ("all", "auto") else int(value)


# -- declaring commands ----------------------------------------------------------------------
# Each command is declared beside the function it runs: ``@command(name, help, *arguments)``,
# every argument an ``arg(...)`` (``add_argument``'s parameters). ``"unit-asr train"`` is
# the ``train`` subcommand of ``unit-asr``.

COMMANDS: dict[str, tuple[str, tuple, Callable]] = {}
GROUPS = {"unit-asr": "unit-based ASR: text from discrete units (a BART model, or a CTC baseline)"}


def arg(*names, **kwargs) -> tuple[tuple, dict]:
    return names, kwargs


def command(name: str, help: str, *arguments: tuple[tuple, dict]):
    def declare(func: Callable) -> Callable:
        COMMANDS[name] = (help, arguments, func)
        return func
    return declare


RANK_HELP = "shard index; 'all' = every shard here (with --jobs), 'auto' = from SLURM_ARRAY_TASK_ID or torchrun's RANK"
TSV_DIR, SPLIT, CKPT = arg("tsv_dir", metavar="TSV_DIR"), arg("split", metavar="SPLIT"), arg("ckpt", metavar="CKPT")
FEAT_DIR, KM_PATH, LAB_DIR = arg("feat_dir", metavar="FEAT_DIR"), arg("km_path", metavar="KM_PATH"), arg("lab_dir", metavar="LAB_DIR")
NSHARD, RANK = arg("nshard", metavar="NSHARD", type=int), arg("rank", metavar="RANK", type=_rank, help=RANK_HELP)
TRUST_PICKLE = arg("--trust-pickle", action="store_true", help="allow fairseq checkpoints that pickle config objects")
class _HelpConfig(argparse.Action):
    """``--help-config``: print every config key and exit, as ``--help`` does; ``describe``
    names the function that lists them (imported only then)."""

    def __init__(self, option_strings, dest, describe="hubertkit.config.load:describe_config", **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="list every config key with its default and rules, and exit")
        self.describe = describe

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib

        module, name = self.describe.split(":")
        print(getattr(importlib.import_module(module), name)())
        parser.exit()


HELP_CONFIG = arg("--help-config", action=_HelpConfig)
MINIBATCH_OPTIONS = [arg(flag, type=kind, default=None, help="minibatch: MiniBatchKMeans' option of that name "
                         "(default: fairseq learn_kmeans.py's)")
                     for flag, kind in (("--init", str), ("--batch-size", int), ("--n-init", int),
                                        ("--max-no-improvement", int), ("--reassignment-ratio", float))]


@command("manifest", "write train.tsv/valid.tsv for the audio files under AUDIO_DIR",
         arg("audio_dir", metavar="AUDIO_DIR"),
         arg("--dest", default=".", help="output directory (default: .)"),
         arg("--ext", default="flac", help="audio file extension (default: flac)"),
         arg("--valid-percent", type=float, default=0.01, help="fraction of files for valid.tsv (default: 0.01)"),
         arg("--seed", type=int, default=42, help="seed of the split (default: 42)"),
         arg("--path-must-contain", default=None, help="keep only paths containing this string"),
         arg("--jobs", type=int, default=8, help="threads reading audio headers (default: 8; more on network file systems)"),
         arg("--archives", action="store_true", help="also list the audio members of uncompressed .tar archives under "
                   "AUDIO_DIR in place, without unpacking (a hubertkit manifest: fairseq cannot read it)"))
def _cmd_manifest(a):
    from hubertkit.data.manifest import make_manifest

    counts = make_manifest(a.audio_dir, a.dest, a.ext, a.valid_percent, a.seed, a.path_must_contain,
                           jobs=a.jobs, progress=not a.quiet, archives=a.archives)
    return ", ".join(f"{split}.tsv: {n} utterances" for split, n in counts.items()) + f" in {a.dest}"


@command("segment", "a manifest of spans of long recordings (path<TAB>samples<TAB>start), cut at silences: "
            "no file per utterance (Libri-Light's voice-activity .json beside a recording is used when present)",
         arg("audio_dir", metavar="AUDIO_DIR"),
         arg("--dest", default=".", help="output directory of train.tsv/valid.tsv (default: .)"),
         arg("--ext", default="flac", help="audio file extension (default: flac)"),
         arg("--max-seconds", type=float, default=None, help="longest span (default: 20)"),
         arg("--min-seconds", type=float, default=None, help="shorter spans are left out (default: 1)"),
         arg("--valid-percent", type=float, default=0.01, help="fraction of recordings for valid.tsv (default: 0.01)"),
         arg("--seed", type=int, default=42, help="seed of the split (default: 42)"),
         arg("--jobs", type=int, default=4, help="threads decoding recordings (default: 4)"))
def _cmd_segment(a):
    from hubertkit.data.segment import MAX_SECONDS, MIN_SECONDS, segment

    r = segment(a.audio_dir, a.dest, a.ext, MAX_SECONDS if a.max_seconds is None else a.max_seconds,
                MIN_SECONDS if a.min_seconds is None else a.min_seconds, a.valid_percent, a.seed, a.jobs,
                progress=not a.quiet)
    return f"{r['recordings']} recordings: " + ", ".join(
        f"{split}.tsv: {v['spans']} spans, {v['hours']:.2f} h" for split, v in r.items() if split != "recordings") + f" in {a.dest}"


@command("pack", "a split's audio (files, spans or archive members) in uncompressed tar archives, with a manifest "
            "that reads each utterance by byte offset: thousands of files instead of millions",
         TSV_DIR,
         SPLIT,
         arg("--dest", required=True, help="folder of the archives and their {split}.tsv"),
         arg("--shard-mb", type=float, default=None, help="archive size in MB (default: 1024)"))
def _cmd_pack(a):
    from hubertkit.data.pack import SHARD_MB, pack

    r = pack(a.tsv_dir, a.split, a.dest, SHARD_MB if a.shard_mb is None else a.shard_mb, progress=not a.quiet)
    return f"{r['utterances']} utterances in {r['archives']} archive(s), {r['bytes'] / 1e9:.2f} GB; manifest {r['manifest']}"


@command("cut", "a split's spans or archive members as files of their own, with a plain fairseq manifest "
            "(for fairseq, or any tool that reads one file per utterance)",
         TSV_DIR,
         SPLIT,
         arg("--dest", required=True, help="folder of the files and their {split}.tsv (a re-run keeps the files there)"),
         arg("--jobs", type=int, default=1, help="threads reading and writing in parallel (default: 1)"))
def _cmd_cut(a):
    from hubertkit.data.cut import cut

    r = cut(a.tsv_dir, a.split, a.dest, jobs=a.jobs, progress=not a.quiet)
    return (f"{r['utterances']} utterances, {r['written']} file(s) written ({r['bytes'] / 1e9:.2f} GB), "
            f"{r['utterances'] - r['written']} kept from before; manifest {r['manifest']}")


@command("dump-mfcc", "MFCC+Δ+ΔΔ features (39-dim, 100 Hz) of a manifest shard",
         TSV_DIR,
         SPLIT,
         NSHARD,
         RANK,
         FEAT_DIR,
         arg("--jobs", type=int, default=1, help="threads decoding and computing features in parallel (default: 1)"))
def _cmd_dump_mfcc(a):
    from hubertkit.features.dump import dump_mfcc

    return dump_mfcc(a.tsv_dir, a.split, a.nshard, a.rank, a.feat_dir, jobs=a.jobs, progress=not a.quiet)


@command("dump-hubert", "features of a HuBERT layer (any checkpoint hubertkit loads) for a manifest shard",
         TSV_DIR,
         SPLIT,
         arg("ckpt", metavar="CKPT", help="hubertkit or fairseq checkpoint, or transformers folder"),
         arg("layer", metavar="LAYER", type=int, help="transformer layer, 1-based (fairseq's output_layer)"),
         NSHARD,
         RANK,
         FEAT_DIR,
         arg("--max-chunk", type=int, default=1600000, help="encode audio in chunks of this many samples (default: 1600000)"),
         arg("--jobs", type=int, default=1, help="threads (default: 1)"),
         TRUST_PICKLE)
def _cmd_dump_hubert(a):
    from hubertkit.features.hubert import dump_hubert

    return dump_hubert(a.tsv_dir, a.split, a.ckpt, a.layer, a.nshard, a.rank, a.feat_dir, max_chunk=a.max_chunk,
                       jobs=a.jobs, trust_pickle=a.trust_pickle, progress=not a.quiet)


@command("prepare-text", "letter targets for CTC fine-tuning: {split}.ltr, {split}.wrd and dict.ltr.txt",
         TSV_DIR,
         arg("--texts", default=None, help="'utterance<TAB>text' file or JSONL with path and text "
                   "(default: LibriSpeech's *.trans.txt beside the audio)"),
         arg("--splits", nargs="+", default=["train", "valid"], help="manifests to cover; dict.ltr.txt orders the first's letters by frequency, then adds any the others use"),
         arg("--out", default=None, help="output directory (default: TSV_DIR)"))
def _cmd_prepare_text(a):
    from hubertkit.data.text import prepare_text

    counts = prepare_text(a.tsv_dir, a.splits, a.out, a.texts)
    out = a.out or a.tsv_dir
    return ", ".join(f"{split}.ltr/.wrd: {n} utterances" for split, n in counts.items()) + f", dict.ltr.txt in {out}"


@command("align", "word and phone alignments of a transcribed English corpus (PocketSphinx), "
            "the ALIGNMENTS that label-quality and probe read",
         TSV_DIR,
         SPLIT,
         arg("--texts", required=True, help="transcripts: 'utterance<TAB>text' lines or JSON lines with path and text"),
         arg("--out", required=True, help="alignments JSONL to write (one line per aligned utterance)"),
         arg("--lexicon", default=None, help="'WORD PH1 PH2 ...' (ARPAbet) for words the CMU dictionary lacks"))
def _cmd_align(a):
    from hubertkit.data.forced_align import align

    return align(a.tsv_dir, a.split, a.texts, a.out, lexicon=a.lexicon, progress=not a.quiet)


@command("dump-pitch", "F0 and voicing (Praat) at the model's frame rate, for the disentangling variant",
         TSV_DIR,
         SPLIT,
         NSHARD,
         RANK,
         arg("feat_dir", metavar="FEAT_DIR", help="the directory task.feat_dir will name"),
         arg("--rate", type=float, default=50.0, help="frames per second: the model's frame rate (default: 50)"),
         arg("--jobs", type=int, default=1, help="threads (default: 1)"))
def _cmd_dump_pitch(a):
    from hubertkit.features.pitch import dump_pitch

    return dump_pitch(a.tsv_dir, a.split, a.nshard, a.rank, a.feat_dir, rate=a.rate, jobs=a.jobs, progress=not a.quiet)


@command("speakers", "write {split}.spk and dict.spk.txt (the speaker of each utterance) into OUT_DIR",
         TSV_DIR,
         arg("out_dir", metavar="OUT_DIR", help="the directory task.feat_dir will name"),
         arg("--splits", nargs="+", default=["train", "valid"], help="manifests to cover; the first defines the speaker set"),
         arg("--map", default=None, help="'utterance<TAB>speaker' file (default: speakers from paths: "
                   "LibriSpeech's speaker/chapter/utt, else the parent directory)"))
def _cmd_speakers(a):
    from hubertkit.data.speakers import write_speakers

    counts = write_speakers(a.tsv_dir, a.splits, a.out_dir, a.map)
    return ", ".join(f"{split}.spk: {n} speakers" for split, n in counts.items()) + f" in {a.out_dir}"


@command("probe", "linear probes per layer of a frozen model: speaker, phone and F0",
         CKPT,
         TSV_DIR,
         arg("--layers", "--layer", default=None, help="comma-separated layers, 0 = encoder input (default: all)"),
         arg("--alignments", default=None, help="phone alignments JSONL (the phone probe needs it)"),
         arg("--speaker-map", default=None, help="'utterance<TAB>speaker' file (default: speakers from paths)"),
         arg("--train-split", default="train", help="split the probes are fitted on (default: train)"),
         arg("--test-split", default="valid", help="split they are scored on (default: valid)"),
         arg("--max-utterances", type=int, default=1000,
                   help="per split, evenly spread over the manifest (every layer is kept in memory) (default: 1000)"),
         arg("--out", default=None, help="also write probe.json, probe.md and probe.png here"),
         TRUST_PICKLE)
def _cmd_probe(a):
    from hubertkit.recipes.probe import probe_layers, probe_table, write_probes

    layers = [int(x) for x in a.layers.split(",")] if a.layers else None
    results = probe_layers(a.ckpt, a.tsv_dir, a.train_split, a.test_split, layers, a.alignments, a.speaker_map,
                           max_utterances=a.max_utterances, trust_pickle=a.trust_pickle, progress=not a.quiet)
    if a.out:
        write_probes(results, a.out, name=os.path.basename(os.path.normpath(a.ckpt)))
    return probe_table(results).rstrip()


@command("units", "discrete units (k-means ids of a HuBERT layer) per utterance, as JSONL",
         CKPT,
         KM_PATH,
         arg("tsv", metavar="TSV", help="manifest file"),
         arg("--layer", type=int, required=True, help="transformer layer, 1-based"),
         arg("--dedup", action="store_true", help="write only the units with repeats removed, and their durations"),
         arg("--out", default=None, help="output file (default: stdout); with --nshard N, FILE_{rank}_{N} per shard"),
         arg("--nshard", type=int, default=1, help="split the manifest into this many shards, as the dumps (default: 1)"),
         arg("--rank", type=_rank, default=0, help=RANK_HELP + " (default: 0)"),
         arg("--max-chunk", type=int, default=1600000),
         arg("--trust-pickle", action="store_true", help="allow pickled (fairseq/joblib) k-means or checkpoints"))
def _cmd_units(a):
    from hubertkit.recipes.discrete_units import write_units

    return write_units(a.ckpt, a.km_path, a.tsv, a.layer, a.out, dedup_only=a.dedup, max_chunk=a.max_chunk,
                       trust_pickle=a.trust_pickle, nshard=a.nshard, rank=a.rank) or None


@command("learn-kmeans", "fit k-means on feature shards and save the model to KM_PATH",
         FEAT_DIR,
         SPLIT,
         NSHARD,
         KM_PATH,
         arg("n_clusters", metavar="N_CLUSTERS", type=int),
         arg("--percent", type=float, default=-1, help="fraction of utterances per shard to learn from; -1 = all (default)"),
         arg("--seed", type=int, default=0, help="random seed (default: 0)"),
         arg("--algo", choices=["lloyd", "minibatch"], default="lloyd",
                   help="lloyd: streamed full-batch k-means (default); minibatch: fairseq's exact scikit-learn recipe"),
         arg("--max-iter", type=int, default=100, help="maximum passes (epochs for minibatch) (default: 100)"),
         arg("--tol", type=float, default=None, help="lloyd: stop when a pass improves inertia by less than this "
                   "fraction (default: 1e-4); minibatch: scikit-learn's tol (default: 0, as fairseq)"),
         *MINIBATCH_OPTIONS)
def _cmd_learn_kmeans(a):
    from hubertkit.cluster.kmeans import learn_kmeans

    return learn_kmeans(
        a.feat_dir, a.split, a.nshard, a.km_path, a.n_clusters, percent=a.percent, seed=a.seed,
        algo=a.algo, max_iter=a.max_iter, tol=a.tol, progress=not a.quiet, init=a.init, batch_size=a.batch_size,
        n_init=a.n_init, max_no_improvement=a.max_no_improvement, reassignment_ratio=a.reassignment_ratio,
    )


@command("dump-labels", "label feature shards with the nearest k-means centroid",
         FEAT_DIR,
         SPLIT,
         KM_PATH,
         NSHARD,
         RANK,
         LAB_DIR,
         arg("--trust-pickle", action="store_true", help="allow reading a joblib-pickled k-means (fairseq's km.bin)"),
         arg("--jobs", type=int, default=os.cpu_count() or 1, help="threads (default: all cores)"))
def _cmd_dump_labels(a):
    from hubertkit.cluster.kmeans import dump_labels

    r = dump_labels(
        a.feat_dir, a.split, a.km_path, a.nshard, a.rank, a.lab_dir, trust_pickle=a.trust_pickle, jobs=a.jobs, progress=not a.quiet
    )
    return f"wrote {', '.join(r['files'])}: {r['frames']} frames labelled in {r['seconds']:.1f} s"


@command("merge-labels", "concatenate label shards into {split}.km",
         LAB_DIR,
         SPLIT,
         NSHARD,
         arg("--label", default="km", help="label file extension (default: km)"))
def _cmd_merge_labels(a):
    from hubertkit.data.labels import merge_labels

    r = merge_labels(a.lab_dir, a.split, a.nshard, a.label)
    return f"wrote {r['path']}: {r['utterances']} utterances from {len(r['merged_from'])} shard(s)"


@command("make-dict", "write dict.km.txt ('label count') for the merged label files in LAB_DIR",
         LAB_DIR,
         arg("--label", default="km", help="label file extension (default: km)"),
         arg("--n-clusters", type=int, default=None, help="number of labels (default: from the label files' k-means)"))
def _cmd_make_dict(a):
    from hubertkit.data.labels import make_dict

    r = make_dict(a.lab_dir, a.label, a.n_clusters)
    unused = f" ({r['unused']} unused by any frame)" if r["unused"] else ""
    return f"wrote {r['path']}: {r['n_clusters']} labels{unused} counted over {', '.join(r['files'])}"


@command("label-quality", "phone purity, cluster purity and PNMI of a label file against phone "
            "alignments, and their chance level (the labels shuffled)",
         arg("lab_file", metavar="LAB_FILE"),
         arg("alignments", metavar="ALIGNMENTS", help="JSONL with path and [phone, start_s, end_s] per utterance"),
         arg("--label-rate", type=float, required=True, help="label frames per second (100 for MFCC, 50 for HuBERT layers)"),
         arg("--tsv", required=True, help="the manifest whose lines LAB_FILE follows"),
         arg("--json", action="store_true", help="print all metrics as JSON"))
def _cmd_label_quality(a):
    import json

    from hubertkit.cluster.quality import chance_quality, label_quality

    q = label_quality(a.lab_file, a.alignments, a.label_rate, a.tsv)
    chance = chance_quality(a.lab_file, a.alignments, a.label_rate, a.tsv)
    if a.json:
        return json.dumps({**q.as_dict(), "chance": chance.as_dict()}, indent=1)
    return (f"{q}\nchance (the same labels shuffled over the frames): phone purity {chance.phone_purity:.4f}  "
            f"cluster purity {chance.cluster_purity:.4f}  PNMI {chance.pnmi:.4f}")


@command("abx", "ABX error rates (Libri-light / ZeroSpeech 2021: within and across speakers, angular "
            "distance, DTW) of a model's layers, a feature dump or discrete units, on a split with phone alignments",
         arg("source", metavar="CKPT|FEAT_DIR|UNITS", help="a model checkpoint (hubertkit, fairseq, transformers), a "
                   "dump-mfcc/dump-hubert folder, or units: a `hubertkit units` JSONL or a .km label file"),
         TSV_DIR,
         SPLIT,
         arg("--alignments", default=None, help="phone alignments JSONL (`hubertkit align`): the items are made from it"),
         arg("--item", default=None, help="a ZeroSpeech .item file instead of --alignments"),
         arg("--layer", default="all", help="a model's layer (0: the transformer's input) or 'all' (default)"),
         arg("--rate", type=float, default=None, help="frames per second of a dump or of units (default: from their lengths)"),
         arg("--km", default=None, help="units as these k-means centroids instead of one-hot"),
         arg("--mode", choices=["all", "within", "across"], default="all"),
         arg("--max-size-group", type=int, default=10, help="tokens per group at most, subsampled above (default: 10)"),
         arg("--max-x-across", type=int, default=5, help="X speakers per A and B at most, across speakers (default: 5)"),
         arg("--seed", type=int, default=0, help="of the subsampling (default: 0)"),
         arg("--write-item", default=None, help="also write the items as a ZeroSpeech .item file"),
         arg("--out", default=None, help="also write the scores as JSON"),
         TRUST_PICKLE)
def _cmd_abx(a):
    from hubertkit.recipes.abx import abx, format_abx, save_abx

    modes = ("within", "across") if a.mode == "all" else (a.mode,)
    r = abx(a.source, a.tsv_dir, a.split, a.alignments, a.item, a.layer, a.rate, a.km, modes, a.max_size_group,
            a.max_x_across, a.seed, a.write_item, a.trust_pickle, progress=not a.quiet)
    if a.out:
        save_abx(r, a.out)
    return format_abx(r)


@command("export", "convert a checkpoint (hubertkit, fairseq .pt or transformers folder) to another layout",
         CKPT,
         arg("out", metavar="OUT", help="output folder (hf) or .pt file (fairseq)"),
         arg("--format", choices=["hf", "fairseq"], default="hf", help="hf: transformers HubertModel folder; fairseq: HuBERT .pt"),
         TRUST_PICKLE)
def _cmd_export(a):
    from hubertkit.model.io import export

    return export(a.ckpt, a.out, a.format, trust_pickle=a.trust_pickle)


@command("export-kmeans", "write a k-means model as the scikit-learn joblib file fairseq's dump_km_label.py reads",
         arg("km_path", metavar="KM_PATH", help="a hubertkit k-means model (learn-kmeans)"),
         arg("out", metavar="OUT", help="output file, e.g. km.bin"),
         arg("--trust-pickle", action="store_true", help="allow KM_PATH to be a joblib file itself"))
def _cmd_export_kmeans(a):
    from hubertkit.cluster.kmeans import export_kmeans

    return export_kmeans(a.km_path, a.out, trust_pickle=a.trust_pickle)


def _print_transcripts(out, fmt: str) -> None:
    """Transcripts to stdout; WER and CER (when there are references) to stderr as JSON."""
    import json

    from hubertkit.recipes.transcribe import error_rates, write_transcripts

    sys.stdout.write(write_transcripts(out, fmt))
    rates = error_rates(out)
    if rates:
        print(json.dumps(rates), file=sys.stderr)


@command("transcribe", "greedy CTC transcription with a fine-tuned model (hubertkit or transformers HubertForCTC)",
         CKPT,
         arg("inputs", nargs="+", metavar="AUDIO", help="audio files, or one manifest .tsv"),
         arg("--format", choices=["text", "jsonl"], default="text", help="one line of text per input, or JSON lines"),
         arg("--references", default=None, help="transcripts ('utterance<TAB>text' or JSONL with text): "
                   "WER and CER go to stderr as JSON"),
         arg("--batch-size", type=int, default=8),
         arg("--chunk-seconds", type=float, default=30.0, help="encode longer audio in chunks of this length, with context"))
def _cmd_transcribe(a):
    from hubertkit.recipes.transcribe import transcribe

    _print_transcripts(transcribe(a.ckpt, a.inputs, batch_size=a.batch_size, chunk_seconds=a.chunk_seconds,
                                  references=a.references, progress=not a.quiet), a.format)


@command("unit-asr train", "train on units JSONL and transcripts (configs/unit_asr)",
         arg("units", metavar="UNITS_JSONL", help="train split's units (hubertkit units output)"),
         arg("texts", metavar="TEXTS", help="transcripts: 'utterance<TAB>text' lines or JSON lines with path and text"),
         arg("--valid-units", default=None, help="valid split's units JSONL: validation, and the best checkpoint"),
         arg("--config-dir", default=None, help="directory of YAML configs (default: hubertkit's own configs/unit_asr)"),
         arg("--config-name", default="bart_base", help="bart_base, bart_demo or ctc_demo (default: bart_base)"),
         arg("--save-dir", default=None, help="checkpoints and the saved model (default: checkpoint.save_dir)"),
         arg("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optimization.max_update=20000 model.beam=10"),
         HELP_CONFIG)
def _cmd_unit_asr_train(a):
    from hubertkit.recipes.unit_asr import train_unit_asr

    result = train_unit_asr(a.units, a.texts, a.valid_units, a.config_name, a.overrides, a.config_dir, a.save_dir,
                            progress=not a.quiet)
    return f"trained {result['num_updates']} updates; model: {result.get('model', result['save_dir'])}"


@command("unit-asr transcribe", "text from units (or from audio, through HuBERT and k-means)",
         arg("model", metavar="MODEL", help="the model folder (SAVE_DIR/model) or a unit-asr checkpoint"),
         arg("units", nargs="?", default=None, metavar="UNITS_JSONL", help="units to transcribe"),
         arg("--audio", nargs="+", default=None, metavar="FILE", help="audio files or one manifest .tsv instead of units"),
         arg("--hubert", default=None, metavar="CKPT", help="with --audio: the HuBERT checkpoint the units come from"),
         arg("--km", default=None, metavar="KM_PATH", help="with --audio: its k-means model (fairseq joblib needs --trust-pickle)"),
         arg("--layer", type=int, default=None, help="with --audio: the layer the k-means model was fitted on"),
         arg("--max-chunk", type=int, default=1600000, help="with --audio: encode long audio in chunks of this many samples"),
         arg("--trust-pickle", action="store_true", help="allow pickled k-means models and fairseq checkpoints"),
         arg("--beam", type=int, default=None, help="beam width (default: the model's; CTC decodes greedily)"),
         arg("--batch-size", type=int, default=16),
         arg("--references", default=None, help="transcripts: WER and CER go to stderr as JSON"),
         arg("--format", choices=["text", "jsonl"], default="text"))
def _cmd_unit_asr_transcribe(a):
    from hubertkit.recipes.unit_asr import transcribe_units

    _print_transcripts(transcribe_units(a.model, a.units, a.audio, a.hubert, a.km, a.layer, a.beam, a.batch_size,
                                        a.references, a.max_chunk, a.trust_pickle, progress=not a.quiet), a.format)


@command("train", "pretrain HuBERT: fairseq's hydra_train.py command line (config groups and key=value overrides)",
         arg("--config-dir", default=None, help="directory of YAML configs (default: hubertkit's own configs/, e.g. hubert_base_librispeech, demo)"),
         arg("--config-name", required=True, help="config file name without .yaml, e.g. hubert_base_librispeech"),
         arg("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. task.data=DIR task.label_dir=DIR model.label_rate=100"),
         arg("--trust-pickle", action="store_true",
                   help="allow a checkpoint.finetune_from_model / restore_file that pickles config objects (fairseq's own)"),
         HELP_CONFIG)
def _cmd_train(a):
    from hubertkit.train.trainer import train

    r = train(a.config_name, a.overrides, a.config_dir, progress=not a.quiet, trust_pickle=a.trust_pickle)
    return f"trained to update {r['num_updates']} in {r['seconds']:.0f} s; checkpoints in {r['save_dir']}"


@command("submit", "pretrain on a SLURM cluster through submitit: `hubertkit train`'s arguments, "
            "one process per GPU on each node; a preempted job is requeued and resumes (pip install 'hubertkit[slurm]')",
         arg("--nodes", type=int, default=1, help="machines (default: 1)"),
         arg("--gpus-per-node", type=int, default=8, help="GPUs, and training processes, per machine (default: 8)"),
         arg("--partition", default=None, help="SLURM partition"),
         arg("--timeout-min", type=int, default=72 * 60, help="job time limit in minutes; at the limit the job is "
                   "requeued and resumes from checkpoint_last.pt (default: 4320)"),
         arg("--cpus-per-task", type=int, default=10, help="CPUs per process, for data loader workers (default: 10)"),
         arg("--logs", default="slurm_logs", help="submitit's folder of job logs (default: slurm_logs)"),
         arg("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="another sbatch option, e.g. --sbatch account=X --sbatch qos=Y"),
         arg("--local", action="store_true", help="run the job as processes on this machine (submitit's local executor)"),
         arg("--wait", action="store_true", help="wait for the job to end and print its result"),
         arg("--no-check", action="store_true", help="submit without setting the run up here first (by default the "
                   "data, labels and starting checkpoint are loaded here, so mistakes stop before the queue; skip it "
                   "where they are visible to the compute nodes only)"),
         arg("--config-dir", default=None, help="directory of YAML configs (default: hubertkit's own configs/)"),
         arg("--config-name", required=True, help="config file name without .yaml, e.g. hubert_base_librispeech"),
         arg("overrides", nargs="*", metavar="KEY=VALUE", help="as for hubertkit train"),
         arg("--trust-pickle", action="store_true", help="as for hubertkit train"),
         HELP_CONFIG)
def _cmd_submit(a):
    from hubertkit.train.slurm import SlurmJob, submit_training

    bad = [kv for kv in a.sbatch if "=" not in kv]
    if bad:
        raise HubertkitError(f"--sbatch takes KEY=VALUE (e.g. --sbatch account=X), got {bad[0]!r}")
    extra = dict(kv.split("=", 1) for kv in a.sbatch)
    job = submit_training(a.config_name, a.overrides, a.config_dir, SlurmJob(
        nodes=a.nodes, gpus_per_node=a.gpus_per_node, partition=a.partition, timeout_min=a.timeout_min,
        cpus_per_task=a.cpus_per_task, logs=a.logs, cluster="local" if a.local else None, additional=extra),
        trust_pickle=a.trust_pickle, check=not a.no_check)
    if not a.wait:
        return f"submitted job {job.job_id}; logs in {a.logs}"
    r = job.results()[0]
    return f"job {job.job_id} trained to update {r['num_updates']} in {r['seconds']:.0f} s; checkpoints in {r['save_dir']}"


@command("finetune", "CTC fine-tuning of a pretrained model on letter transcripts (fairseq's finetune configs)",
         arg("--config-dir", default=None, help="directory of YAML configs (default: hubertkit's own configs/finetune)"),
         arg("--config-name", required=True, help="e.g. base_10h"),
         arg("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. task.data=DIR task.label_dir=DIR model.w2v_path=CKPT task.normalize=false"),
         arg("--trust-pickle", action="store_true", help="allow a model.w2v_path fairseq checkpoint that pickles config objects"),
         HELP_CONFIG)
def _cmd_finetune(a):
    from hubertkit.train.trainer import finetune

    r = finetune(a.config_name, a.overrides, a.config_dir, progress=not a.quiet, trust_pickle=a.trust_pickle)
    return f"fine-tuned to update {r['num_updates']} in {r['seconds']:.0f} s; checkpoints in {r['save_dir']}"


@command("pipeline", "run the whole iterative recipe from one YAML, resumably",
         arg("config", metavar="CONFIG", help="pipeline YAML (see configs/pipeline_demo.yaml)"),
         arg("--until", default=None, help="stop after this stage (e.g. iter1.kmeans) or iteration (e.g. iter1)"),
         arg("--jobs", type=int, default=None, help="threads for dumps and labelling (default: the config's)"),
         arg("--out", default=None, help="output directory (default: the config's)"),
         arg("--help-config", action=_HelpConfig, describe="hubertkit.config.pipeline:describe_pipeline"))
def _cmd_pipeline(a):
    from hubertkit.config.pipeline import load_pipeline
    from hubertkit.recipes.pipeline import run_pipeline

    overrides = {k: v for k, v in (("out", a.out), ("jobs", a.jobs)) if v is not None}
    r = run_pipeline(load_pipeline(a.config, overrides), until=a.until, progress=not a.quiet)
    return f"report: {r['report']}" if "report" in r else f"stopped after {r['stopped']}"


@command("demo", "run the recipe on the demo corpus shipped with hubertkit",
         arg("--out", default="demo_out", help="output directory (default: demo_out)"),
         arg("--corpus", default=None, help="corpus directory with alignments.jsonl (default: the one shipped in the package)"),
         arg("--jobs", type=int, default=2, help="threads for feature dumps (default: 2)"),
         arg("--max-update", type=int, default=None, help="pretraining updates (default: configs/demo.yaml's 400)"),
         arg("--until", default=None, help="stop after this stage (e.g. manifest, iter1.kmeans); a re-run resumes"))
def _cmd_demo(a):
    from hubertkit.recipes.demo import run_demo

    return run_demo(a.out, corpus=a.corpus, jobs=a.jobs, progress=not a.quiet, max_update=a.max_update, until=a.until)


def parser() -> argparse.ArgumentParser:
    """The ``hubertkit`` parser, built from the declared commands."""
    top = _Parser(
        prog="hubertkit",
        description="HuBERT pretraining end to end; the fairseq recipe's steps with the same arguments and files.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__import__('hubertkit').__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {}
    for name, (help, arguments, func) in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        if group and group not in groups:
            children = [n.rpartition(" ")[2] for n in COMMANDS if n.startswith(group + " ")]
            g = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group])
            groups[group] = g.add_subparsers(dest=f"{group.replace('-', '_')}_command", required=True,
                                             metavar="{" + ",".join(children) + "}")
        p = (groups[group] if group else sub).add_parser(leaf, parents=[common], help=help, description=help)
        p.set_defaults(func=func, parser=p)
        for names, kwargs in arguments:
            p.add_argument(*names, **kwargs)
    return top


def main(argv: list[str] | None = None) -> None:
    args, unknown = parser().parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top level's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.func(args)
    except HubertkitError as e:
        if args.debug:
            raise
        print(f"hubertkit {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full or read-only disk, a missing permission: the file and the reason, no traceback
        if args.debug or e.errno is None:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"hubertkit {args.command}: error: cannot write or read{where}: {e.strerror} "
              "(outputs are written atomically: nothing half-written was left; fix this and re-run)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"hubertkit {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    if result is not None:
        print(result)
