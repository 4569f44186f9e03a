import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
import torch

from hubertkit.features.mfcc import deltas, mfcc, mfcc_with_deltas, num_frames


def kaldi_mfcc(wav: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank with fairseq's options, fed the same float waveform in [-1, 1]."""
    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 23
    opts.num_ceps = 13
    opts.use_energy = False
    m = knf.OnlineMfcc(opts)
    m.accept_waveform(16000, wav.tolist())
    m.input_finished()
    return np.stack([m.get_frame(i) for i in range(m.num_frames_ready)])


def test_mfcc_matches_kaldi_native_fbank(demo_dir):
    files = sorted(demo_dir.glob("*/*.flac"))[::20]
    assert len(files) >= 8
    worst = 0.0
    for f in files:
        wav, sr = sf.read(f, dtype="float32")
        assert sr == 16000
        ref = kaldi_mfcc(wav)
        ours = mfcc(torch.from_numpy(wav)).numpy()
        assert ours.shape == ref.shape == (num_frames(len(wav)), 13)
        worst = max(worst, np.abs(ours - ref).max())
    assert worst <= 1e-3, worst


def test_mfcc_matches_kaldi_on_noise_with_dc_offset():
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000) + 0.05).astype(np.float32)
    assert np.abs(mfcc(torch.from_numpy(wav)).numpy() - kaldi_mfcc(wav)).max() <= 1e-3


def reference_deltas(x: np.ndarray, n: int = 2) -> np.ndarray:
    """The regression formula written out with numpy edge padding."""
    padded = np.pad(x, ((n, n), (0, 0)), mode="edge")
    num = sum(k * (padded[n + k : n + k + len(x)] - padded[n - k : n - k + len(x)]) for k in range(1, n + 1))
    return num / (2 * sum(k * k for k in range(1, n + 1)))


def test_deltas_regression_formula():
    x = np.random.default_rng(1).standard_normal((50, 13)).astype(np.float32)
    np.testing.assert_allclose(deltas(torch.from_numpy(x)).numpy(), reference_deltas(x), rtol=1e-5, atol=1e-5)


def test_features_are_mfcc_delta_deltadelta(demo_dir):
    wav, _ = sf.read(next(demo_dir.glob("*/*.flac")), dtype="float32")
    feats = mfcc_with_deltas(torch.from_numpy(wav)).numpy()
    ceps = kaldi_mfcc(wav)
    assert feats.shape == (len(ceps), 39)
    np.testing.assert_allclose(feats[:, :13], ceps, atol=1e-3)
    # Kaldi's add-deltas (kaldi-native-fbank) on our own MFCCs: Δ equal everywhere; ΔΔ
    # equal away from the edges, where Kaldi clamps the wider ±4 window once while
    # torchaudio (and so fairseq) re-pads before the second pass.
    kaldi = knf.compute_deltas(knf.DeltaOptions(order=2, window=2), feats[:, :13])
    np.testing.assert_allclose(feats[:, 13:26], kaldi[:, 13:26], atol=1e-4)
    np.testing.assert_allclose(feats[4:-4, 26:], kaldi[4:-4, 26:], atol=1e-4)
    np.testing.assert_allclose(feats[:, 26:], reference_deltas(reference_deltas(feats[:, :13])), atol=1e-4)


def test_shorter_than_one_frame_gives_no_frames():
    assert mfcc_with_deltas(torch.zeros(399)).shape == (0, 39)
    assert mfcc_with_deltas(torch.zeros(400)).shape == (1, 39)
