"""Pitch trackers for dump-pitch: accuracy on signals of known F0 and speed on the demo
corpus, Praat (parselmouth, what hubertkit uses) against WORLD's DIO+StoneMask and
Harvest (pyworld, if installed: ``pip install pyworld 'setuptools<81'``).

    python benchmarks/bench_pitch.py

Accuracy: median relative error of the voiced frames' F0 on harmonic tones (6 pitches,
70-450 Hz) and on a glottal-pulse vowel gliding 100 -> 200 Hz (the worst case is
reported). Speed: real-time factor over the demo corpus's utterances, one thread, best of 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import best_of, header  # noqa: E402
from test_pitch import glottal_vowel, harmonic_tone  # noqa: E402

from hubertkit.features.pitch import F0_CEILING, F0_FLOOR, track_pitch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def trackers() -> dict:
    out = {"Praat ac (parselmouth)": lambda x: track_pitch(x)[:, 0]}
    try:
        import pyworld
    except ImportError:
        return out
    out["WORLD DIO+StoneMask"] = lambda x: pyworld.stonemask(
        x, *pyworld.dio(x, SR, f0_floor=F0_FLOOR, f0_ceil=F0_CEILING, frame_period=20.0), SR)
    out["WORLD Harvest"] = lambda x: pyworld.harvest(x, SR, f0_floor=F0_FLOOR, f0_ceil=F0_CEILING, frame_period=20.0)[0]
    return out


def worst_error(fn) -> float:
    errors = []
    for f0 in (70.0, 110.0, 165.0, 220.0, 330.0, 450.0):
        est = fn(harmonic_tone(f0))
        errors.append(abs(np.median(est[est > 0]) - f0) / f0)
    glide = np.linspace(100.0, 200.0, int(SR * 1.5))
    est = fn(glottal_vowel(glide))
    centres = (np.arange(len(est)) * 320 + 200).clip(max=len(glide) - 1)
    voiced = est > 0
    errors.append(np.median(np.abs(est[voiced] - glide[centres][voiced]) / glide[centres][voiced]))
    return float(max(errors))


def main():
    import torch

    torch.set_num_threads(1)
    wavs = [sf.read(p)[0] for p in sorted((ROOT / "hubertkit" / "corpora" / "demo").glob("*/*.flac"))]
    seconds = sum(len(w) for w in wavs) / SR
    print(header("Pitch trackers (dump-pitch)"))
    print("| tracker | worst median relative F0 error | speed (x real time, 1 thread) |")
    print("|---|---:|---:|")
    for name, fn in trackers().items():
        rtf = seconds / best_of(3, lambda: [fn(w) for w in wavs])
        print(f"| {name} | {worst_error(fn) * 100:.2f} % | {rtf:.0f} |")


if __name__ == "__main__":
    main()
