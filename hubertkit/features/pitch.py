"""F0 and voicing per frame, for the disentangling variant's pitch output and the F0 probe.

The tracker is Praat's autocorrelation method (Boersma 1993) through parselmouth: on
harmonic tones and glottal-pulse vowels it is exact to within 0.1 %, it runs at a few
hundred times real time on one core, and it ships as a binary wheel (docs/disentangle.md
compares it with WORLD).

Frames follow the model's: frame ``i`` at ``rate`` Hz covers the samples
``[i·hop, i·hop + 400)`` (hop = 16000 / rate), so at 50 Hz there is one pitch frame per
HuBERT frame and at 100 Hz one per MFCC frame. Each row is ``[f0_hz, voiced]``, with
``f0_hz = 0`` where ``voiced = 0``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import parselmouth

from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.errors import HubertkitError
from hubertkit.features.dump import dump_features

WINDOW = 400  # samples: the receptive field of the standard conv stack (and an MFCC window)
F0_FLOOR, F0_CEILING = 50.0, 600.0  # Hz: covers low male voices to children's


def num_frames(num_samples: int, rate: float) -> int:
    hop = SAMPLE_RATE / rate
    return max(0, int((num_samples - WINDOW) // hop) + 1) if num_samples >= WINDOW else 0


def track_pitch(wav: np.ndarray, rate: float = 50.0, floor: float = F0_FLOOR, ceiling: float = F0_CEILING) -> np.ndarray:
    """``[frames, 2]`` float32: F0 in Hz (0 when unvoiced) and voicing (1 or 0)."""

    if rate <= 0 or SAMPLE_RATE % rate:
        raise HubertkitError(f"the pitch rate must divide {SAMPLE_RATE} Hz (50 or 100 for HuBERT labels), got {rate}")
    hop = int(SAMPLE_RATE // rate)
    frames = num_frames(len(wav), rate)
    out = np.zeros((frames, 2), dtype=np.float32)
    if frames == 0:
        return out
    # Praat needs three periods of the floor per analysis window; a shorter clip has no pitch.
    if len(wav) / SAMPLE_RATE < 3.0 / floor:
        return out
    pitch = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=SAMPLE_RATE).to_pitch_ac(
        time_step=hop / SAMPLE_RATE / 2, pitch_floor=floor, pitch_ceiling=ceiling
    )
    f0 = pitch.selected_array["frequency"]
    times = pitch.xs()
    centres = (np.arange(frames) * hop + WINDOW / 2) / SAMPLE_RATE
    nearest = np.clip(np.searchsorted(times, centres), 1, len(times) - 1) if len(times) > 1 else np.zeros(frames, int)
    if len(times) > 1:
        left = nearest - 1
        nearest = np.where(np.abs(times[left] - centres) <= np.abs(times[nearest] - centres), left, nearest)
    out[:, 0] = f0[nearest]
    out[:, 1] = f0[nearest] > 0
    return out


def dump_pitch(tsv_dir, split, nshard, rank, feat_dir, rate: float = 50.0, jobs: int = 1, progress: bool = True):
    """F0 and voicing of every utterance into ``{split}_{rank}_{nshard}.npy/.len`` (2 columns)."""


    return dump_features(tsv_dir, split, nshard, rank, feat_dir, partial(track_pitch, rate=rate), 2, jobs, progress)
