"""Kaldi-compatible MFCC with deltas, the features of HuBERT's first iteration.

Matches fairseq's ``dump_mfcc_feature.py`` (torchaudio's Kaldi-compliant ``mfcc`` with
its defaults and ``use_energy=False``, then two ``compute_deltas`` passes) without
torchaudio: 25 ms Povey-windowed frames every 10 ms (``snip_edges``), DC removal,
pre-emphasis 0.97, 512-point power spectrum, 23 Kaldi mel bins from 20 Hz to Nyquist,
log floored at float32 epsilon, orthonormal DCT to 13 coefficients, cepstral lifter 22.
"""

from __future__ import annotations

import functools
import math

import torch

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
PREEMPHASIS = 0.97
NUM_MEL_BINS = 23
NUM_CEPS = 13
LOW_FREQ = 20.0
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 5


def _mel(freq):
    return 1127.0 * torch.log1p(freq / 700.0) if isinstance(freq, torch.Tensor) else 1127.0 * math.log1p(freq / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(sample_rate: int = 16000) -> torch.Tensor:
    """Kaldi's triangular filters in the mel domain, ``[FFT_SIZE // 2 + 1, NUM_MEL_BINS]``.

    Kaldi only spans the first ``FFT_SIZE // 2`` bins; the Nyquist bin gets weight 0.
    """
    mel_low, mel_high = _mel(LOW_FREQ), _mel(sample_rate / 2)
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    bins = torch.arange(FFT_SIZE // 2, dtype=torch.float64)
    mel = _mel(bins * sample_rate / FFT_SIZE)[:, None]
    left = mel_low + delta * torch.arange(NUM_MEL_BINS, dtype=torch.float64)
    center, right = left + delta, left + 2 * delta
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where(mel <= center, up, down).clamp(min=0.0)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros(()))
    return torch.cat([weights, torch.zeros(1, NUM_MEL_BINS, dtype=torch.float64)]).float()


@functools.lru_cache(maxsize=4)
def _mel_banks_interleaved(sample_rate: int) -> torch.Tensor:
    return mel_banks(sample_rate).repeat_interleave(2, dim=0)


@functools.lru_cache(maxsize=1)
def lifted_dct() -> torch.Tensor:
    """Orthonormal DCT-II (Kaldi's ``ComputeDctMatrix``) times the cepstral lifter, ``[23, 13]``."""
    n = torch.arange(NUM_MEL_BINS, dtype=torch.float64)
    k = torch.arange(NUM_CEPS, dtype=torch.float64)
    dct = torch.cos(math.pi / NUM_MEL_BINS * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / NUM_MEL_BINS)
    dct[:, 0] = math.sqrt(1.0 / NUM_MEL_BINS)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * torch.sin(math.pi * k / CEPSTRAL_LIFTER)
    return (dct * lifter).float()


@functools.lru_cache(maxsize=1)
def povey_window() -> torch.Tensor:
    n = torch.arange(FRAME_LENGTH, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (FRAME_LENGTH - 1))).pow(0.85).float()


def num_frames(num_samples: int) -> int:
    """Frames Kaldi makes with ``snip_edges=True``."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


# Frames computed at once: every frame is independent, and blocks keep the memory of a
# long recording flat (all frames of one hour at once would take about 3 GB).
BLOCK_FRAMES = 8192


def mfcc(wav: torch.Tensor, sample_rate: int = 16000) -> torch.Tensor:
    """13 MFCCs per 10 ms frame, ``[frames, 13]``, of a 1-D float waveform in [-1, 1]."""
    if wav.dim() != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(wav.shape)}")
    n = num_frames(wav.shape[0])
    if n == 0:
        return wav.new_zeros(0, NUM_CEPS, dtype=torch.float32)
    if n > BLOCK_FRAMES:
        starts = range(0, n, BLOCK_FRAMES)
        return torch.cat([_mfcc_frames(wav[a * FRAME_SHIFT : (min(a + BLOCK_FRAMES, n) - 1) * FRAME_SHIFT + FRAME_LENGTH],
                                       sample_rate) for a in starts])
    return _mfcc_frames(wav, sample_rate)


def _mfcc_frames(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    frames = wav.float().unfold(0, FRAME_LENGTH, FRAME_SHIFT)
    frames = frames - frames.mean(dim=1, keepdim=True)
    # Kaldi pre-emphasis: x[i] -= c * x[i-1], and x[0] -= c * x[0]; then the window.
    emphasized = torch.empty_like(frames)
    torch.mul(frames[:, :-1], PREEMPHASIS, out=emphasized[:, 1:])
    torch.mul(frames[:, 0], PREEMPHASIS, out=emphasized[:, 0])
    torch.sub(frames, emphasized, out=emphasized)
    emphasized *= povey_window()
    # |X|² summed into mel bins in one product: squares of interleaved (re, im) pairs
    # against each filter weight repeated twice.
    spectrum = torch.view_as_real(torch.fft.rfft(emphasized, n=FFT_SIZE)).reshape(len(frames), -1)
    mel = spectrum.square() @ _mel_banks_interleaved(sample_rate)
    log_mel = mel.clamp(min=torch.finfo(torch.float32).eps).log()
    return log_mel @ lifted_dct()


def deltas(feats: torch.Tensor, window: int = DELTA_WINDOW) -> torch.Tensor:
    """Regression deltas over time with edge frames repeated, as torchaudio's ``compute_deltas``."""
    n = (window - 1) // 2
    if feats.shape[0] == 0:
        return feats.clone()
    padded = torch.cat([feats[:1].expand(n, -1), feats, feats[-1:].expand(n, -1)])
    length = feats.shape[0]
    out = torch.zeros_like(feats)
    for k in range(1, n + 1):
        out += k * (padded[n + k : n + k + length] - padded[n - k : n - k + length])
    return out / (n * (n + 1) * (2 * n + 1) / 3)


def mfcc_with_deltas(wav: torch.Tensor, sample_rate: int = 16000) -> torch.Tensor:
    """fairseq's iteration-1 features ``[mfcc, Δ, ΔΔ]``, ``[frames, 39]`` at 100 Hz."""
    ceps = mfcc(wav, sample_rate)
    d = deltas(ceps)
    return torch.cat([ceps, d, deltas(d)], dim=1)
