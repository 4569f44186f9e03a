"""dump-mfcc throughput (audio seconds per wall second, FLAC decoding and writing
included) against a kaldi-native-fbank loop on the same files and cores, and against
merely decoding the same FLAC files.

    python benchmarks/bench_dump_mfcc.py [--repeat 20] [--jobs 2]

The demo corpus is listed ``--repeat`` times in one manifest (the files stay in the
page cache for every contender alike). Each contender runs 3 times; the best counts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, header  # noqa: E402

from hubertkit.data.manifest import make_manifest, read_manifest  # noqa: E402
from hubertkit.features.dump import dump_mfcc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def knf_features(path: str) -> np.ndarray:
    import kaldi_native_fbank as knf

    wav, _ = sf.read(path, dtype="float32")
    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 23
    opts.use_energy = False
    m = knf.OnlineMfcc(opts)
    m.accept_waveform(16000, wav)
    m.input_finished()
    ceps = np.stack([m.get_frame(i) for i in range(m.num_frames_ready)])
    return knf.compute_deltas(knf.DeltaOptions(order=2, window=2), ceps)


def decode(path: str) -> int:
    return len(sf.read(path, dtype="float32")[0])


def run_pool(fn, paths, jobs):
    if jobs == 1:
        return list(map(fn, paths))
    with mp.get_context("spawn").Pool(jobs) as pool:
        return pool.map(fn, paths, chunksize=8)


def knf_loop(paths, out, jobs):
    feats = run_pool(knf_features, paths, jobs)
    np.save(out, np.concatenate(feats))
    with open(str(out) + ".len", "w") as f:
        f.writelines(f"{len(x)}\n" for x in feats)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    make_manifest(ROOT / "hubertkit/corpora/demo", tmp / "one", valid_percent=0)
    lines = (tmp / "one/train.tsv").read_text().splitlines()
    (tmp / "train.tsv").write_text("\n".join([lines[0]] + lines[1:] * args.repeat) + "\n")
    manifest = read_manifest(tmp / "train.tsv")
    paths = [u.path for u in manifest.utterances]
    audio = sum(u.num_samples for u in manifest.utterances) / 16000
    decode(paths[0])

    rates = {}
    for jobs in sorted({1, args.jobs}):
        rates[f"decode only, {jobs} proc"] = audio / best_of(3, lambda: run_pool(decode, paths, jobs))
        rates[f"kaldi-native-fbank loop, {jobs} proc"] = audio / best_of(3, lambda: knf_loop(paths, tmp / "knf.npy", jobs))
        rates[f"hubertkit dump-mfcc --jobs {jobs}"] = audio / best_of(
            3, lambda: dump_mfcc(tmp, "train", 1, 0, tmp / "feat", jobs=jobs, progress=False)
        )
    j = args.jobs
    ours = rates[f"hubertkit dump-mfcc --jobs {j}"]
    print(header("dump-mfcc throughput"))
    print(f"{len(paths)} utterances, {audio / 3600:.2f} h of audio (the demo corpus x{args.repeat}); real-time factors, best of 3:\n")
    print("| contender | audio s / wall s |\n|---|---:|")
    for k, v in rates.items():
        print(f"| {k} | {v:.0f} |")
    print(f"\n- hubertkit ({j} jobs) / kaldi-native-fbank loop (1 proc): **{ours / rates['kaldi-native-fbank loop, 1 proc']:.2f}x** (target >= 2)")
    print(f"- hubertkit ({j} jobs) / kaldi-native-fbank loop ({j} proc): **{ours / rates[f'kaldi-native-fbank loop, {j} proc']:.2f}x**")
    print(f"- hubertkit ({j} jobs) / decoding only ({j} proc): **{ours / rates[f'decode only, {j} proc']:.2f}** (target >= 0.5)")
    print(f"- hubertkit ({j} jobs) / decoding only (1 proc): **{ours / rates['decode only, 1 proc']:.2f}**")


if __name__ == "__main__":
    main()
