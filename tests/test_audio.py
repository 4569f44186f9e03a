import logging

import numpy as np
import pytest
import soundfile as sf

from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import Utterance
from hubertkit.errors import HubertkitError


def utt(path, n, line=5):
    return Utterance(str(path), n, line)


def test_reads_float_mono(demo_dir):
    path = next(demo_dir.glob("*/*.flac"))
    ref, _ = sf.read(path, dtype="float32")
    wav = read_audio(utt(path, len(ref)))
    assert wav.dtype == np.float32 and np.array_equal(wav, ref)


def test_stereo_is_averaged_with_warning(tmp_path, caplog):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1600, 2)).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        wav = read_audio(utt(tmp_path / "s.wav", 1600))
    np.testing.assert_allclose(wav, x.mean(1), atol=1e-7)
    assert "2 channels" in caplog.text


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"garbage" * 100), "cannot read audio"),
        (lambda p: sf.write(p, np.zeros(1600, np.float32), 8000), "8000 Hz"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000, format="WAV"), "is empty"),
        (lambda p: sf.write(p, np.zeros(800, np.float32), 16000), "manifest says 1600"),
    ],
    ids=["missing", "unreadable", "8khz", "empty", "truncated"],
)
def test_bad_audio_names_line_and_path(tmp_path, make, message):
    path = tmp_path / "bad.flac"
    make(path)
    with pytest.raises(HubertkitError, match=message) as err:
        read_audio(utt(path, 1600, line=7), where="x.tsv")
    assert "x.tsv:7" in str(err.value) and "bad.flac" in str(err.value)


def test_truncated_flac_file_is_an_error(tmp_path, demo_dir):
    src = next(demo_dir.glob("*/*.flac"))
    n = sf.info(src).frames
    data = src.read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(HubertkitError, match="cut.flac"):
        read_audio(utt(tmp_path / "cut.flac", n))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    x[8000] = bad
    sf.write(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(HubertkitError, match=r"f.wav has 1 NaN or infinite sample\(s\), the first at 0.500 s"):
        read_audio(utt(tmp_path / "f.wav", 16000))
