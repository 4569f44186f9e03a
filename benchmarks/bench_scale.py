"""The data path at LibriSpeech 960 h and Libri-Light scale: time to build the training
dataset, to batch an epoch and to load the first batch, and memory per process, with
one and with several processes, against a reference version of hubertkit (today's
loader: a git revision) in the same run.

    python benchmarks/bench_scale.py --work /path/with/20GB [--sets ls960,ll1000,ll3000,ll6000]
        [--reference REV] [--procs 4] [--train]
    python benchmarks/bench_scale.py --work DIR --audio HOURS [--read-utterances 3000]

``--audio HOURS``: audio at Libri-Light scale, instead of the label sets. Libri-Light-
shaped long recordings (10-minute chapters of real demo-corpus speech, with pauses, as
symbolic links to four real ones, each with a voice-activity ``.json`` as Libri-Light
ships) are cut by ``hubertkit segment``; the same utterances are read as separate files
(what ``cut_by_vad.py`` writes), as spans of the recordings and as members of
``hubertkit pack``'s archives, each layout by a fresh process with 2 DataLoader workers
in a random order, with the page cache dropped first where the machine allows (cold)
and then again (warm); then, for a tighter ratio, in one process with a warm cache, the
layouts taking turns on the same chunks of utterances; files per layout are projected to
60,000 h.

The sets are made without storing their hours: every manifest entry is a symbolic link
to one of a few real recordings (demo-corpus utterances joined into 8-17 s files) and
carries its true length; labels (K = 500, 50 Hz, as HuBERT-layer labels) are random,
with one label per 320 samples, as a dump makes them. ``ls960``: 283,000 train
utterances of 12.2 s on average (LibriSpeech 960 h has 281,241) and 200 valid;
``llN``: N hours of the same shape (Libri-Light 60k h ≈ 17.7M such utterances, 10.8
billion labels). Sets persist under ``--work`` and are reused.

Memory is read from ``/proc/self/status`` and ``smaps_rollup`` of each measuring
process: ``VmHWM`` (peak RSS), ``RssAnon`` (memory no other process can share: the
process's own cost) and ``Pss`` (resident memory with pages shared by N processes
counted 1/N each), after the dataset is built and the first batch loaded; ``--procs N``
runs N such processes at once, as the ranks of a node would. ``--train`` runs
``hubertkit train --config-name demo`` for one update (its final validation included) on
``ls960``, twice (the first may build caches), and reports the second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE, K, HOP = 16000, 500, 320
PER_SPEAKER = 100
SHAPES = {"ls960": 283_000}  # utterances; llN: N hours


def utterance_count(name: str) -> int:
    return SHAPES.get(name) or int(int(name[2:]) * 3600 / 12.2)


def make_recordings(out: Path) -> list[tuple[str, int]]:
    """Eight real recordings of 8-17 s, joined from demo-corpus utterances."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((ROOT / "hubertkit/corpora/demo").glob("*/*.flac"))
    made, pos = [], 0
    for k, seconds in enumerate(np.linspace(8.0, 16.5, 8)):
        path, parts = out / f"rec{k}.flac", []
        while sum(map(len, parts)) < seconds * RATE:
            parts.append(sf.read(files[pos % len(files)], dtype="float32")[0])
            pos += 1
        wav = np.concatenate(parts)[: int(seconds * RATE)]
        if not path.exists():
            sf.write(path, wav, RATE)
        made.append((str(path), len(wav)))
    return made


def label_text(frames: np.ndarray, rng: np.random.Generator) -> bytes:
    """Random labels in ``.km`` text, vectorised: each label's digits and a space, with the
    last space of each line made a newline."""
    labels = rng.integers(0, K, int(frames.sum()))
    digits = np.char.mod("%d ", np.arange(K)).astype("S4")  # "7 ", "42 ", "499 "
    width = np.char.str_len(digits)
    table = np.frombuffer(digits.tobytes(), np.uint8).reshape(K, 4)
    mask = np.arange(4)[None, :] < width[labels][:, None]
    text = table[labels][mask]
    ends = np.cumsum(width[labels])[np.cumsum(frames) - 1] - 1
    text[ends] = ord("\n")
    return text.tobytes()


def make_set(work: Path, name: str, recordings: list[tuple[str, int]]) -> Path:
    d = work / name
    if (d / "done").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for split, n in (("train", utterance_count(name)), ("valid", 200)):
        which = rng.integers(0, len(recordings), n)
        sizes = np.array([recordings[w][1] for w in which])
        rel = [f"{split}/spk{i // PER_SPEAKER:06d}/{i:08d}.flac" for i in range(n)]
        for i in range(0, n, PER_SPEAKER):
            (d / "audio" / split / f"spk{i // PER_SPEAKER:06d}").mkdir(parents=True)
        for r, w in zip(rel, which.tolist()):
            os.symlink(recordings[w][0], d / "audio" / r)
        (d / f"{split}.tsv").write_text("\n".join([str(d / "audio"), *(f"{r}\t{s}" for r, s in zip(rel, sizes))]) + "\n")
        frames = sizes // HOP
        with open(d / f"{split}.km", "wb") as f:
            for start in range(0, n, 20000):
                f.write(label_text(frames[start : start + 20000], rng))
    (d / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(K)))
    (d / "done").write_text(f"{time.perf_counter() - t:.0f} s\n")
    return d


def memory() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rollup = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    mb = lambda v: int(v.split()[0]) / 1024  # noqa: E731
    return {"peak_rss_mb": mb(status["VmHWM"]), "anon_mb": mb(status["RssAnon"]), "pss_mb": mb(rollup["Pss"])}


def measure(d: Path, barrier: Path | None, procs: int) -> None:
    """One process: build the dataset, batch the epoch, load the first batch; print JSON."""
    t0 = time.perf_counter()
    from hubertkit.data.batching import batches_by_size
    from hubertkit.data.dataset import HubertDataset, load_label_sets
    from hubertkit.train.trainer import BatchDataset

    import hubertkit

    out = {"import_s": time.perf_counter() - t0, "module": hubertkit.__file__,
           **{f"idle_{k}": v for k, v in memory().items()}}
    t = time.perf_counter()
    data = HubertDataset(d / "train.tsv", d, "train", load_label_sets(d, ["km"], 50.0),
                         max_sample_size=250_000, min_keep_size=32_000)
    out["dataset_s"] = time.perf_counter() - t
    t = time.perf_counter()
    batches = batches_by_size(data.num_tokens, 1_400_000, seed=1, epoch=1)
    out["batching_s"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = BatchDataset(data, batches, 1, 1)[0]
    out["first_batch_s"] = time.perf_counter() - t
    out["batches"], out["batch_shape"] = len(batches), list(batch["source"].shape)
    if barrier is not None:  # every process alive at once, so that shared pages are shared
        (barrier / f"{os.getpid()}").touch()
        while len(list(barrier.iterdir())) < procs:
            time.sleep(0.05)
        time.sleep(0.5)
    out.update(memory())
    print(json.dumps(out), flush=True)
    if barrier is not None:
        (barrier / f"{os.getpid()}.done").touch()
        while len(list(barrier.iterdir())) < 2 * procs:
            time.sleep(0.05)


def run_measure(d: Path, pythonpath: Path, procs: int = 1) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    barrier = Path(tempfile.mkdtemp())
    cmd = [sys.executable, __file__, "--measure", str(d), "--barrier", str(barrier), "--procs", str(procs)]
    running = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]
    if any(p.returncode for p in running):
        raise SystemExit(f"a measuring process failed on {d}")
    shutil.rmtree(barrier)
    return results


def build_store(d: Path, pythonpath: Path) -> float:
    """Seconds to build the label stores of train and valid from the text, in a fresh process."""
    for f in [*d.glob("*.km.*.npy"), *d.glob("*.km.store.json")]:
        f.unlink()
    code = ("import time; t = time.perf_counter(); from hubertkit.data.label_store import open_store; "
            f"[open_store('{d}/' + s + '.km') for s in ('train', 'valid')]; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(pythonpath)},
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def timed_train(d: Path, pythonpath: Path, save_dir: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB; the largest of the process and its workers) of one
    ``hubertkit train`` run of one update."""
    shutil.rmtree(save_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "hubertkit", "train", "--config-name", "demo", f"task.data={d}", f"task.label_dir={d}",
           "model.label_rate=50", "optimization.max_update=1", f"checkpoint.save_dir={save_dir}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(pythonpath)}, cwd=pythonpath,  # -m looks in cwd first
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"train failed: {proc.stderr.read()[-2000:]}")
    return wall, usage.ru_maxrss / 2**20


def reference_tree(rev: str) -> Path:
    out = Path(tempfile.mkdtemp()) / rev
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "hubertkit"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


CHAPTER_S = 600  # a Libri-Light-like recording: 10 minutes


def make_chapters(out: Path, seektable: bool = False) -> list[Path]:
    """Four real 10-minute recordings: demo-corpus utterances with 0.3-0.9 s pauses between
    them; each with a voice-activity .json (Libri-Light's format) from the energy detector.
    ``seektable``: re-encoded by the ``flac`` tool, which adds a seek table (a point every
    10 s) as it does by default; libsndfile writes none, so a seek searches the file."""
    from hubertkit.data.segment import _energy_vad

    out.mkdir(parents=True, exist_ok=True)
    files = sorted((ROOT / "hubertkit/corpora/demo").glob("*/*.flac"))
    rng, made, pos = np.random.default_rng(0), [], 0
    for k in range(4):
        path = out / f"chapter{k}.flac"
        if not path.exists():
            parts, total = [], 0
            while total < CHAPTER_S * RATE:
                wav = sf.read(files[pos % len(files)], dtype="int16")[0]
                parts += [wav, np.zeros(int(rng.uniform(0.3, 0.9) * RATE), np.int16)]
                total += len(wav) + len(parts[-1])
                pos += 1
            sf.write(path, np.concatenate(parts)[: CHAPTER_S * RATE], RATE, subtype="PCM_16")
            if seektable:
                subprocess.run(["flac", "-s", "-f", "-o", str(path), str(path)], check=True)
            vad = [[a / RATE, b / RATE] for a, b in _energy_vad(path)]
            path.with_suffix(".json").write_text(json.dumps({"voice_activity": vad}))
        made.append(path)
    return made


def read_layout(tsv: Path, workers: int) -> dict:
    """In this (fresh) process: every utterance of ``tsv`` read once through a DataLoader
    with ``workers`` workers, in a seeded random order; throughput and memory."""
    import torch

    from hubertkit.data.audio import read_audio
    from hubertkit.data.manifest import read_manifest

    idle = memory()["anon_mb"]
    manifest = read_manifest(tsv)
    built = memory()["anon_mb"]

    class Reader(torch.utils.data.Dataset):
        def __len__(self):
            return len(manifest)

        def __getitem__(self, i):
            return len(read_audio(manifest.utterance(i)))

    order = np.random.default_rng(0).permutation(len(manifest)).tolist()
    loader = torch.utils.data.DataLoader(Reader(), batch_size=None, sampler=order, num_workers=workers)
    t = time.perf_counter()
    samples = sum(loader)
    seconds = time.perf_counter() - t
    return {"utterances": len(manifest), "seconds": seconds, "utt_per_s": len(manifest) / seconds,
            "audio_s_per_s": samples / RATE / seconds, "manifest_mb": built - idle, **memory()}


def paired_ratios(layouts: Path, names: tuple[str, ...], chunk: int = 50) -> dict[str, np.ndarray]:
    """Per-utterance reading cost of each layout against files, paired: one process, warm
    cache, the same utterances read in chunks of ``chunk`` by every layout in turn (order
    reversed every other chunk), so that the machine's slow spells fall on all layouts
    alike; the ratio (files' time / the layout's) is taken per chunk."""
    from hubertkit.data.audio import read_audio
    from hubertkit.data.manifest import read_manifest

    manifests = {name: read_manifest(layouts / name / "train.tsv") for name in ("files", *names)}
    order = np.random.default_rng(0).permutation(len(manifests["files"]))
    for m in manifests.values():  # warm the page cache
        for i in order:
            read_audio(m.utterance(int(i)))
    seconds: dict[str, list[float]] = {name: [] for name in manifests}
    for c, start in enumerate(range(0, len(order), chunk)):
        turn = list(manifests) if c % 2 == 0 else list(manifests)[::-1]
        for name in turn:
            t = time.perf_counter()
            for i in order[start:start + chunk]:
                read_audio(manifests[name].utterance(int(i)))
            seconds[name].append(time.perf_counter() - t)
    files = np.array(seconds["files"])
    return {name: files / np.array(seconds[name]) for name in names}


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def audio_layouts(work: Path, hours: float, read_utterances: int, repeats: int = 3, workers: int = 2,
                  seektable: bool = False) -> None:
    from hubertkit.data.manifest import read_manifest
    from hubertkit.data.cut import cut
    from hubertkit.data.pack import pack
    from hubertkit.data.segment import _energy_vad, segment

    print(header(f"Audio at Libri-Light scale: {hours:,.0f} h of long recordings as spans, files and archives"))
    print(f"\nThe recordings' FLAC {'has a seek table (re-encoded by the flac tool, as it writes by default)' if seektable else 'has no seek table (libsndfile)'}.")
    chapters = make_chapters(work / "chapters", seektable)
    t = time.perf_counter()
    for c in chapters:
        _energy_vad(c)
    vad_s = time.perf_counter() - t
    print(f"\n- energy detector (no .json): {len(chapters) * CHAPTER_S / vad_s:,.0f} s of audio per s "
          f"(4 recordings of {CHAPTER_S // 60} min, one thread)")
    corpus = work / "longform"
    count = int(hours * 3600 / CHAPTER_S)
    if not (corpus / "done").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        for i in range(count):
            d = corpus / f"{i // 50:05d}" / f"book{i:07d}"
            d.mkdir(parents=True)
            for ext in ("flac", "json"):
                os.symlink(chapters[i % len(chapters)].with_suffix(f".{ext}"), d / f"chapter.{ext}")
        (corpus / "done").write_text("")
    shutil.rmtree(work / "spans", ignore_errors=True)
    t = time.perf_counter()
    r = segment(corpus, work / "spans", valid_percent=0, jobs=2)
    seg_s = time.perf_counter() - t
    tsv = work / "spans" / "train.tsv"
    spans = read_manifest(tsv)
    mean_span = r["train"]["hours"] * 3600 / len(spans)
    print(f"- `hubertkit segment` with Libri-Light's .json files: {count:,} recordings ({hours:,.0f} h) in "
          f"{seg_s:.1f} s ({count / seg_s:,.0f} recordings/s); {len(spans):,} spans of {mean_span:.1f} s on average, "
          f"{r['train']['hours']:,.0f} h of speech; manifest {tsv.stat().st_size / 1e6:.1f} MB")
    # memory of the manifest itself: the spans against the same number of whole-file lines
    plain = work / "plain.tsv"
    plain.write_text("\n".join([str(corpus), *(f"{u.name.replace('@', '_')}.flac\t{u.num_samples}"
                                               for u in spans.utterances)]) + "\n")
    cost = {}
    for what, path in (("whole files", plain), ("spans", tsv)):
        out = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, sys.argv[2]); "
                              "from bench_scale import memory; from hubertkit.data.manifest import read_manifest; "
                              "a = memory()['anon_mb']; m = read_manifest(sys.argv[1]); "
                              "print(json.dumps(memory()['anon_mb'] - a))", str(path), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        cost[what] = float(out.stdout.strip().splitlines()[-1])
    print(f"- the manifest of {len(spans):,} utterances in a process's own memory: {cost['whole files']:.1f} MB as "
          f"whole files, {cost['spans']:.1f} MB as spans (the third field is read from the mapped text when an "
          "utterance is loaded)")
    # the layouts, on the same utterances: the first ``read_utterances`` spans
    n = min(read_utterances, len(spans))
    layouts = work / "layouts"
    shutil.rmtree(layouts, ignore_errors=True)
    (layouts / "spans").mkdir(parents=True)
    lines = tsv.read_text().splitlines()
    (layouts / "spans" / "train.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
    cut(layouts / "spans", "train", layouts / "files")  # what cut_by_vad.py writes: a FLAC file per span
    t = time.perf_counter()
    packed = pack(layouts / "files", "train", layouts / "archives")
    pack_s = time.perf_counter() - t
    print(f"- `hubertkit pack` of {n:,} utterance files: {packed['archives']} archive(s), "
          f"{packed['bytes'] / 1e6:,.0f} MB in {pack_s:.1f} s")
    print(f"\n{repeats} rounds; in each, every layout is read once with a cold page cache (dropped before each "
          f"read, where the machine allows) and once warm, in turn. Median over rounds (min-max); the ratio to "
          f"files is taken within each round.\n")
    print(f"| layout ({n:,} utterances, {workers} workers) | cache | utterances/s | audio s/s | ratio to files | "
          "own memory of the reading process, MB |\n|---|---|---:|---:|---:|---:|")
    runs: dict = {}
    for _ in range(repeats):
        for cache in ("cold", "warm"):
            for layout in ("files", "spans", "archives"):
                if cache == "cold" and not drop_caches():
                    continue
                out = subprocess.run([sys.executable, __file__, "--read", str(layouts / layout / "train.tsv"),
                                      "--workers", str(workers)], capture_output=True, text=True, check=True, cwd=ROOT)
                runs.setdefault((cache, layout), []).append(json.loads(out.stdout.strip().splitlines()[-1]))

    def spread(values) -> str:
        return f"{np.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"

    for (cache, layout), res in runs.items():
        speed = [r["utt_per_s"] for r in res]
        ratio = [r["utt_per_s"] / f["utt_per_s"] for r, f in zip(res, runs[cache, "files"])]
        print(f"| {layout} | {cache} | {np.median(speed):,.0f} ({min(speed):,.0f}-{max(speed):,.0f}) | "
              f"{np.median([r['audio_s_per_s'] for r in res]):,.0f} | {spread(ratio)} | "
              f"{np.median([r['anon_mb'] for r in res]):.0f} |")
    if ("cold", "files") not in runs:
        print("\n(the page cache could not be dropped here: warm cache only)")
    paired = paired_ratios(layouts, ("spans", "archives"))
    print(f"\nPaired, per utterance (one process, warm cache, the same {n:,} utterances read in chunks of 50 by "
          f"every layout in turn; ratio of files' time to the layout's per chunk, median and quartiles over "
          f"{len(paired['spans'])} chunks):\n")
    for name, ratio in paired.items():
        q1, q2, q3 = np.percentile(ratio, [25, 50, 75])
        print(f"- {name}: **{q2:.3f}** ({q1:.3f}-{q3:.3f})")
    audio_bytes = packed["bytes"] / (n * mean_span)  # bytes per second of audio, FLAC
    per_archive_s = 1024e6 / audio_bytes
    total_s = 60000 * 3600
    print(f"\n**Projected to 60,000 h** (from this set's shapes): separate files: "
          f"**{total_s / mean_span / 1e6:,.1f} M** files; spans: **{2 * total_s / CHAPTER_S:,.0f}** files "
          f"({total_s / CHAPTER_S:,.0f} recordings of {CHAPTER_S // 60} min and their .json), manifest "
          f"{tsv.stat().st_size / r['train']['hours'] * 60000 / 1e9:.1f} GB; archives of 1 GB: "
          f"**{total_s / per_archive_s:,.0f}** files ({audio_bytes * total_s / 1e12:.1f} TB of FLAC)")


def fmt(r: dict) -> str:
    return (f"dataset {r['dataset_s']:.1f} s, batching {r['batching_s']:.2f} s, first batch {r['first_batch_s']:.2f} s; "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, own (RssAnon) {r['anon_mb']:.0f} MB "
            f"(idle process: {r['idle_anon_mb']:.0f} MB), PSS {r['pss_mb']:.0f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hubertkit_scale")
    parser.add_argument("--sets", default="ls960,ll1000,ll3000,ll6000")
    parser.add_argument("--reference", default=None, help="git revision whose loader is the reference (on ls960)")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the llN sets (they are deleted after measuring)")
    parser.add_argument("--audio", type=float, default=None, metavar="HOURS",
                        help="measure audio layouts (files, spans, archives) on this many hours instead")
    parser.add_argument("--read-utterances", type=int, default=3000, help="utterances each layout reads")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of reading each layout")
    parser.add_argument("--seektable", action="store_true", help="recordings re-encoded by the flac tool (needs it)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--read", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure, args.barrier, args.procs)
    if args.read:
        return print(json.dumps(read_layout(args.read, args.workers)))
    if args.audio:
        return audio_layouts(args.work, args.audio, args.read_utterances, args.repeats, seektable=args.seektable)

    recordings = make_recordings(args.work / "recordings")
    ours = ROOT
    ref = reference_tree(args.reference) if args.reference else None
    print(header("Scale: the training data path at LibriSpeech 960 h and Libri-Light slices"))
    slope = []
    for name in args.sets.split(","):
        t = time.perf_counter()
        d = make_set(args.work, name, recordings)
        n = utterance_count(name)
        size = (d / "train.km").stat().st_size
        print(f"\n### {name}: {n:,} train utterances ({n * 12.2 / 3600:,.0f} h), "
              f"{size / 1e9:.2f} GB of label text (set made in {time.perf_counter() - t:.0f} s)\n")
        store_s = build_store(d, ours)
        store_bytes = sum(f.stat().st_size for f in d.glob("train.km.*.npy"))
        print(f"- label store built from the text in **{store_s:.1f} s** ({store_bytes / 1e9:.2f} GB)")
        one = run_measure(d, ours)[0]
        print(f"- hubertkit, 1 process: {fmt(one)}")
        if args.procs > 1:
            many = run_measure(d, ours, args.procs)
            print(f"- hubertkit, {args.procs} processes at once, each: " + "; ".join(
                f"own {r['anon_mb']:.0f} MB, PSS {r['pss_mb']:.0f} MB, dataset {r['dataset_s']:.1f} s" for r in many))
        if ref is not None and name == "ls960":
            theirs = run_measure(d, ref)[0]
            print(f"- reference ({args.reference}, from {Path(theirs['module']).parent}), 1 process: {fmt(theirs)}")
            print(f"- reference load / store build: **{theirs['dataset_s'] / store_s:.1f}x**; reference load / "
                  f"hubertkit load: **{theirs['dataset_s'] / one['dataset_s']:.0f}x**; own memory: "
                  f"{theirs['anon_mb'] - theirs['idle_anon_mb']:.0f} MB against "
                  f"{one['anon_mb'] - one['idle_anon_mb']:.0f} MB above an idle process")
        if name.startswith("ll"):
            slope.append((int(name[2:]), store_s, one["dataset_s"], one["anon_mb"] - one["idle_anon_mb"],
                          one["peak_rss_mb"]))
            if not args.keep:
                shutil.rmtree(d)
        if args.train and name == "ls960":
            for label, tree, runs in (("hubertkit", ours, 2), *((("reference", ref, 1),) if ref else ())):
                for _ in range(runs):  # ours twice: the first may build caches; the reference has none
                    wall, peak = timed_train(d, tree, args.work / "ck")
                print(f"- `hubertkit train --config-name demo ... optimization.max_update=1` ({label}, run {runs}): "
                      f"**{wall:.0f} s, peak RSS {peak:.2f} GB**")
    if len(slope) >= 2:
        hours = np.array([s[0] for s in slope], dtype=float)
        print("\n### Growth over the Libri-Light slices (least squares, per 1,000 h; projected to 60,000 h)\n")
        for k, what, unit in ((1, "store build", "s"), (2, "dataset build", "s"), (3, "own memory", "MB"),
                              (4, "peak RSS", "MB")):
            y = np.array([s[k] for s in slope])
            a, b = np.polyfit(hours, y, 1)
            print(f"- {what}: {', '.join(f'{v:.1f}' for v in y)} {unit} at {', '.join(f'{h:,.0f}' for h in hours)} h; "
                  f"slope {a * 1000:.2f} {unit} per 1,000 h, intercept {b:.1f}; projected to 60,000 h: "
                  f"**{a * 60000 + b:,.0f} {unit}**")


if __name__ == "__main__":
    main()
