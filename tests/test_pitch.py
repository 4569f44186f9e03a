from pathlib import Path

import numpy as np
import pytest
import torch

from hubertkit.config import preset
from hubertkit.data.audio import SAMPLE_RATE
from hubertkit.data.shards import read_utterances
from hubertkit.errors import HubertkitError
from hubertkit.features.pitch import dump_pitch, num_frames, track_pitch

SR = SAMPLE_RATE


def harmonic_tone(f0: float, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return 0.1 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 11))


def glottal_vowel(f0_track: np.ndarray) -> np.ndarray:
    """A pulse train whose period follows ``f0_track`` (Hz per sample), through two
    formant resonators (an /a/-like vowel): speech-like, with a known F0."""
    phase = np.cumsum(f0_track / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    x = pulses.astype(np.float64)
    for formant, bandwidth in ((700.0, 110.0), (1220.0, 120.0)):
        r = np.exp(-np.pi * bandwidth / SR)
        a1, a2 = 2 * r * np.cos(2 * np.pi * formant / SR), -r * r
        y = np.zeros_like(x)
        for n in range(len(x)):
            y[n] = x[n] + a1 * y[n - 1] + a2 * y[n - 2]
        x = y
    return 0.3 * x / np.abs(x).max()


@pytest.mark.parametrize("f0", [70.0, 110.0, 165.0, 220.0, 330.0, 450.0])
def test_harmonic_tones_at_known_f0(f0):
    track = track_pitch(harmonic_tone(f0))
    voiced = track[track[:, 1] > 0, 0]
    assert len(voiced) > 0.9 * len(track)
    assert abs(np.median(voiced) - f0) / f0 < 0.02


def test_glottal_vowel_follows_a_glide():
    seconds = 1.5
    f0 = np.linspace(100.0, 200.0, int(SR * seconds))  # an octave up, as in a question
    track = track_pitch(glottal_vowel(f0))
    centres = (np.arange(len(track)) * 320 + 200).clip(max=len(f0) - 1)
    voiced = track[:, 1] > 0
    assert voiced[2:-2].all()
    rel = np.abs(track[voiced, 0] - f0[centres][voiced]) / f0[centres][voiced]
    assert np.median(rel) < 0.02
    assert np.percentile(rel, 90) < 0.05


def test_noise_and_silence_are_unvoiced():
    rng = np.random.default_rng(0)
    wav = np.concatenate([np.zeros(SR // 2), 0.1 * rng.standard_normal(SR), harmonic_tone(150.0, 0.5)])
    track = track_pitch(wav)
    frame_time = (np.arange(len(track)) * 320 + 200) / SR
    assert not track[frame_time < 1.45, 1].any()  # silence, then white noise
    assert track[frame_time > 1.6, 1].all()
    assert (track[track[:, 1] == 0, 0] == 0).all()


def test_frame_counts_match_the_model_for_many_lengths():
    from hubertkit.model.hubert import HubertModel

    model = HubertModel(preset("tiny"))
    with torch.no_grad():
        for n in (400, 719, 720, 16000, 16321, 48111):
            assert model.conv_features(torch.zeros(1, n)).shape[2] == num_frames(n, 50) == len(track_pitch(np.zeros(n)))
    assert num_frames(16000, 100) == 98 and num_frames(399, 50) == 0


def test_demo_voices_lower_for_men(prepared):
    """The demo's male voices (m*) have lower median F0 than its female ones (f*)."""
    dump_pitch(prepared / "tsv", "train", 1, 0, prepared / "pitch_probe", progress=False)
    from hubertkit.data.manifest import read_manifest

    utts = read_manifest(prepared / "tsv" / "train.tsv").utterances
    medians = {"m": [], "f": []}
    for utt, track in zip(utts, read_utterances(prepared / "pitch_probe", "train")):
        medians[Path(utt.path).parent.name[0]].append(np.median(track[track[:, 1] > 0, 0]))
    assert max(medians["m"]) < min(medians["f"])
    assert 60 < min(medians["m"]) and max(medians["f"]) < 400


def test_bad_rate_is_a_clear_error():
    with pytest.raises(HubertkitError, match="must divide"):
        track_pitch(np.zeros(16000), rate=33)
