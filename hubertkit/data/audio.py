"""Reading audio as fairseq's dump scripts do, with errors that name the manifest line."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from hubertkit.data.archive import member_bytes, read_member
from hubertkit.data.manifest import Utterance
from hubertkit.errors import HubertkitError

log = logging.getLogger(__name__)


def standardize(wav: torch.Tensor) -> torch.Tensor:
    """One utterance at zero mean and unit variance over all its samples: fairseq's
    ``task.normalize`` (a layer norm without weights over the whole waveform), applied
    before any crop. Models trained with it read every waveform this way
    (``HubertModel.prepare``)."""
    return F.layer_norm(wav, wav.shape)

SAMPLE_RATE = 16000
# fairseq's dump scripts tolerate this many samples between the manifest and the file.
LENGTH_TOLERANCE = 160


# libsndfile's reader for each sample type a span is read in
_READERS = {"float32": "sf_readf_float", "int16": "sf_readf_short", "int32": "sf_readf_int"}
# a span's samples are copied in the integer type of their file, so that writing it out changes none
_INTEGER = {"PCM_S8": "int16", "PCM_16": "int16", "PCM_24": "int32"}


def read_span(utt: Utterance, dtype: str, where: str) -> tuple[np.ndarray, int, str]:
    """Samples ``start .. start + num_samples`` of the file (samples × channels), its rate
    and its subtype; a span past the end or a file that reads short is refused.
    ``dtype="native"`` reads the file's own integer type (float32 for float audio), so
    that writing the samples out again changes none.

    The samples are read through libsndfile itself: soundfile's ``read`` seeks to where
    it stopped after every read, which for FLAC is a second search of the file, about 4 %
    of reading a span of 18 s (docs/benchmarks.md)."""
    try:
        with sf.SoundFile(utt.path) as f:
            end = utt.start + utt.num_samples
            if end > f.frames:
                raise HubertkitError(f"{where}the span {utt.start}..{end} is past the end of {utt.path} "
                                     f"({f.frames} samples)")
            if dtype == "native":
                dtype = _INTEGER.get(f.subtype, "float32")
            f.seek(utt.start)
            out = np.empty((utt.num_samples, f.channels), dtype)
            got = getattr(sf._snd, _READERS[dtype])(f._file, sf._ffi.from_buffer(out), utt.num_samples)
            if sf._snd.sf_error(f._file):
                raise sf.LibsndfileError(sf._snd.sf_error(f._file))
            if got != utt.num_samples:
                raise HubertkitError(f"{where}the span of {utt.num_samples} samples from sample {utt.start} of "
                                     f"{utt.path} reads {got} samples (a truncated file?)")
        return out, f.samplerate, f.subtype
    except (sf.LibsndfileError, RuntimeError) as e:
        raise HubertkitError(f"{where}cannot read audio {utt.path}: {e}") from None


def read_audio(utt: Utterance, sample_rate: int = SAMPLE_RATE, where: str = "") -> np.ndarray:
    """Float32 mono waveform in [-1, 1]; stereo is averaged to mono (with a warning). A
    span (``utt.start``) is read by seeking to it: only its samples are decoded."""
    where = f"{where}:{utt.line}: " if where else f"line {utt.line}: "
    if not os.path.isfile(utt.path):
        what = "is a folder, not an audio file" if os.path.isdir(utt.path) else "does not exist"
        raise HubertkitError(f"{where}audio file {utt.path} {what}")
    try:
        if utt.member is not None:
            wav, sr = read_member(utt.path, *utt.member, utt.name, where)
        elif utt.start is None:
            wav, sr = sf.read(utt.path, dtype="float32", always_2d=True)
        else:
            wav, sr, _ = read_span(utt, "float32", where)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise HubertkitError(f"{where}cannot read audio {utt.path}: {e}") from None
    if sr != sample_rate:
        raise HubertkitError(f"{where}{utt.path} is {sr} Hz; hubertkit needs {sample_rate} Hz audio (resample it first)")
    if wav.shape[0] == 0:
        raise HubertkitError(f"{where}{utt.path} is empty")
    if wav.shape[1] > 1:
        log.warning("%s%s has %d channels; averaging to mono", where, utt.path, wav.shape[1])
        wav = wav.mean(axis=1, dtype=np.float32)[:, None]
    wav = wav[:, 0]
    if not np.isfinite(wav).all():  # float files can hold them; every feature of the frame would follow
        bad = np.flatnonzero(~np.isfinite(wav))
        raise HubertkitError(f"{where}{utt.path} has {len(bad)} NaN or infinite sample(s), the first at "
                             f"{bad[0] / sample_rate:.3f} s; repair or drop the file")
    if abs(len(wav) - utt.num_samples) > LENGTH_TOLERANCE:
        raise HubertkitError(
            f"{where}{utt.path} has {len(wav)} samples but the manifest says {utt.num_samples} "
            "(truncated or replaced file? re-run `hubertkit manifest`)"
        )
    return wav


def standalone_name(utt: Utterance) -> str:
    """The name of the utterance as a file of its own (``pack``'s member, ``cut``'s file):
    its manifest name; for a span, its key with ``.flac`` (``.wav`` for float audio)."""
    if utt.start is None:
        return utt.name
    return f"{utt.key}.{'flac' if sf.info(utt.path).subtype in _INTEGER else 'wav'}"


def standalone_bytes(utt: Utterance, where: str) -> bytes:
    """The utterance as a file of its own: a whole file's (or archive member's) bytes,
    unchanged; a span as FLAC of the same integer samples (WAV for float audio), so that
    reading it back gives the same waveform."""
    if utt.member is not None:
        return bytes(member_bytes(utt.path, *utt.member))
    if not os.path.isfile(utt.path):
        raise HubertkitError(f"{where}:{utt.line}: audio file {utt.path} does not exist")
    if utt.start is None:
        with open(utt.path, "rb") as f:
            return f.read()
    samples, rate, subtype = read_span(utt, "native", f"{where}:{utt.line}: ")
    integer = subtype in _INTEGER
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC" if integer else "WAV", subtype=subtype if integer else "FLOAT")
    return out.getvalue()
