import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf
import torch

from hubertkit.features import mfcc as mfcc_module
from hubertkit.features.mfcc import deltas, mfcc, mfcc_with_deltas, num_frames

U = 2.0**-24  # float32 unit roundoff


def float32_error_bound(wav: np.ndarray) -> np.ndarray:
    """A float32 error scale, per frame and coefficient, for a Kaldi MFCC; two float32
    implementations should differ by well under twice this.

    The pipeline runs in float64 and float32 rounding (u = 2^-24) is propagated through
    it. Framing, DC removal, pre-emphasis and window: a few roundings per sample
    (4u·‖frame‖). A radix-2 FFT of length N is normwise stable,
    ‖ΔX‖ ≤ 7u·log2(N)·‖X‖ with ‖X‖ = √N·‖x‖ (Higham, Accuracy and Stability of Numerical
    Algorithms, Thm 24.2); spread evenly over the N bins that is 7u·log2(N)·‖x‖ per bin
    (the worst case puts it all in one bin, √N = 23x more, which no implementation shows).
    Then |Δ|X_j|²| ≤ 2|X_j|δ + δ², summed through the mel weights; the log of a mel energy
    E (floored at float32 eps) moves by log(max(E+ΔE, floor) / max(E−ΔE, floor)), large
    only for bins near silence; the lifted DCT adds Σ|D| times that, plus its own
    rounding. On the demo corpus the scale is 0.003 at the median frame and up to 0.05
    in near-silent ones (where fairseq's own features differ from ours by 2.7e-3);
    hubertkit and kaldi-native-fbank differ by at most 0.06 of twice the scale, while a
    wrong pre-emphasis, lifter or mel range exceeds it 1000-fold."""
    n_fft = mfcc_module.FFT_SIZE
    x = torch.from_numpy(wav.astype(np.float64))
    frames = x.unfold(0, mfcc_module.FRAME_LENGTH, mfcc_module.FRAME_SHIFT)
    frames = frames - frames.mean(1, keepdim=True)
    pre = torch.cat([frames[:, :1] * (1 - mfcc_module.PREEMPHASIS), frames[:, 1:] - mfcc_module.PREEMPHASIS * frames[:, :-1]], 1)
    windowed = pre * mfcc_module.povey_window().double()
    spectrum = torch.fft.rfft(windowed, n=n_fft)
    delta = U * (7 * np.log2(n_fft) * windowed.norm(dim=1) + 4 * frames.norm(dim=1))[:, None]
    banks = mfcc_module.mel_banks().double()
    energy = spectrum.abs().square() @ banks
    d_energy = (2 * spectrum.abs() * delta + delta**2) @ banks + energy * U * np.log2(n_fft)
    floor = float(torch.finfo(torch.float32).eps)
    d_log = torch.log(torch.clamp(energy + d_energy, min=floor) / torch.clamp(energy - d_energy, min=floor))
    dct = mfcc_module.lifted_dct().double().abs()
    log_e = torch.log(energy.clamp(min=floor))
    return (d_log @ dct + 2 * NUM_MEL * U * (log_e.abs() @ dct)).numpy()


NUM_MEL = mfcc_module.NUM_MEL_BINS


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


def demo_waves(demo_dir):
    files = sorted(demo_dir.glob("*/*.flac"))[::5]  # one per voice
    assert len(files) >= 8
    return [sf.read(f, dtype="float32")[0] for f in files]


def within_float32_bound(ours, ref, wav) -> float:
    """The largest |ours − ref| as a fraction of the two implementations' float32 error bound."""
    return float((np.abs(ours - ref) / (2 * float32_error_bound(wav))).max())


def test_mfcc_matches_kaldi_native_fbank(demo_dir):
    for wav in demo_waves(demo_dir):
        ref = kaldi_mfcc(wav)
        ours = mfcc(torch.from_numpy(wav)).numpy()
        assert ours.shape == ref.shape == (num_frames(len(wav)), 13)
        assert within_float32_bound(ours, ref, wav) <= 1


def test_mfcc_matches_kaldi_on_noise_with_dc_offset():
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000) + 0.05).astype(np.float32)
    assert within_float32_bound(mfcc(torch.from_numpy(wav)).numpy(), kaldi_mfcc(wav), wav) <= 1


@pytest.mark.parametrize("option,value", [("PREEMPHASIS", 0.95), ("CEPSTRAL_LIFTER", 20.0), ("LOW_FREQ", 40.0)])
def test_the_bound_catches_a_wrong_option(demo_dir, monkeypatch, option, value):
    """The tolerance is tight where it matters: any misconfigured option exceeds it."""
    monkeypatch.setattr(mfcc_module, option, value)
    for cached in (mfcc_module.mel_banks, mfcc_module._mel_banks_interleaved, mfcc_module.lifted_dct):
        cached.cache_clear()
    wav = demo_waves(demo_dir)[0]
    try:
        assert within_float32_bound(mfcc(torch.from_numpy(wav)).numpy(), kaldi_mfcc(wav), wav) > 10
    finally:
        monkeypatch.undo()
        for cached in (mfcc_module.mel_banks, mfcc_module._mel_banks_interleaved, mfcc_module.lifted_dct):
            cached.cache_clear()


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
    assert within_float32_bound(feats[:, :13], ceps, wav) <= 1
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


def test_long_audio_in_blocks_is_the_same(monkeypatch):
    """Blocks of frames (flat memory on hour-long files) give the frames of one pass."""
    wav = torch.from_numpy((0.1 * np.random.default_rng(3).standard_normal(16000 * 3)).astype(np.float32))
    whole = mfcc(wav)
    monkeypatch.setattr(mfcc_module, "BLOCK_FRAMES", 64)
    blocked = mfcc(wav)
    assert blocked.shape == whole.shape == (num_frames(len(wav)), 13)
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=1e-5)  # same frames; only BLAS blocking may differ
