"""``hubertkit segment``: long recordings to a manifest of spans cut at silences, from
Libri-Light's voice-activity files or the energy detector; resumable; the spans read
back as the audio they name."""

import json

import numpy as np
import pytest
import soundfile as sf

from hubertkit.data import segment as segment_module
from hubertkit.data.audio import read_audio
from hubertkit.data.manifest import read_manifest
from hubertkit.data.segment import pack_spans, segment
from hubertkit.errors import HubertkitError

SR = 16000


def test_spans_gather_voiced_stretches_up_to_the_limit():
    s = SR
    voiced = [(0, 2 * s), (3 * s, 5 * s), (6 * s, 9 * s), (20 * s, 45 * s), (50 * s, 50 * s + 100)]
    spans = pack_spans(voiced, 60 * s, max_seconds=10, min_seconds=1)
    # 0..9 s in one span (pauses kept); 20..45 s cut into 3 equal pieces; the 100-sample blip left out
    cuts = [20 * s + 25 * s * k // 3 for k in range(4)]
    assert spans == [(0, 9 * s)] + [(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]
    assert all(n <= 10 * s for _, n in spans)
    assert pack_spans([(59 * s, 70 * s)], 60 * s, 10, 0.5) == [(59 * s, s)]  # clipped at the recording's end


def long_recordings(demo_dir, out, gap_seconds=0.8, with_vad=False):
    """Two recordings, each three demo utterances apart by silence; the utterances' places."""
    placed = {}
    for speaker in ("f1", "m1"):
        parts, where, t = [], [], 0
        for f in sorted((demo_dir / speaker).glob("*.flac"))[:3]:
            wav, _ = sf.read(f, dtype="int16")
            parts += [wav, np.zeros(int(gap_seconds * SR), np.int16)]
            where.append((t, t + len(wav)))
            t += len(wav) + int(gap_seconds * SR)
        (out / speaker).mkdir(parents=True)
        sf.write(out / speaker / "chapter.flac", np.concatenate(parts), SR, subtype="PCM_16")
        if with_vad:
            (out / speaker / "chapter.json").write_text(json.dumps({"voice_activity": [[a / SR, b / SR] for a, b in where]}))
        placed[f"{speaker}/chapter.flac"] = where
    return placed


@pytest.mark.parametrize("with_vad", [False, True])
def test_spans_cut_in_silences_and_read_back(demo_dir, tmp_path, with_vad):
    placed = long_recordings(demo_dir, tmp_path / "audio", with_vad=with_vad)
    r = segment(tmp_path / "audio", tmp_path / "tsv", max_seconds=4, min_seconds=0.5, valid_percent=0)
    manifest = read_manifest(tmp_path / "tsv" / "train.tsv")
    assert r["recordings"] == 2 and r["train"]["spans"] == len(manifest) > 0 and "valid" not in r
    covered = {k: 0 for k in placed}
    for utt in manifest.utterances:
        rel = utt.name.rsplit("@", 1)[0]
        end = utt.start + utt.num_samples
        for a, b in placed[rel]:  # no utterance is cut: each lies wholly inside a span or outside it
            assert b <= utt.start or a >= end or (utt.start <= a + 480 and b - 480 <= end), (utt.name, a, b)
            covered[rel] += a >= utt.start - 480 and b <= end + 480
        assert utt.num_samples <= 4 * SR and len(read_audio(utt)) == utt.num_samples
    assert covered == {k: 3 for k in placed}  # every utterance is in a span
    if with_vad:  # the VAD file's stretches exactly
        starts = sorted((u.name.rsplit("@", 1)[0], u.start) for u in manifest.utterances)
        assert all(s in [a for a, _ in placed[rel]] for rel, s in starts)


def test_a_rerun_resumes_from_what_was_found(demo_dir, tmp_path, monkeypatch):
    long_recordings(demo_dir, tmp_path / "audio")
    segment(tmp_path / "audio", tmp_path / "tsv", max_seconds=4, valid_percent=0.5, seed=3)
    first = [(tmp_path / "tsv" / f"{s}.tsv").read_text() for s in ("train", "valid") if (tmp_path / "tsv" / f"{s}.tsv").exists()]

    def never(path):
        raise AssertionError(f"{path} was segmented again")

    monkeypatch.setattr(segment_module, "voiced_intervals", never)
    segment(tmp_path / "audio", tmp_path / "tsv", max_seconds=4, valid_percent=0.5, seed=3)
    assert [(tmp_path / "tsv" / f"{s}.tsv").read_text() for s in ("train", "valid")
            if (tmp_path / "tsv" / f"{s}.tsv").exists()] == first
    with pytest.raises(AssertionError, match="segmented again"):  # other settings: found anew
        segment(tmp_path / "audio", tmp_path / "tsv", max_seconds=5, valid_percent=0.5, seed=3)


def test_bad_inputs_are_refused(demo_dir, tmp_path):
    long_recordings(demo_dir, tmp_path / "audio", with_vad=True)
    with pytest.raises(HubertkitError, match="need 0 < --min-seconds <= --max-seconds"):
        segment(tmp_path / "audio", tmp_path / "tsv", max_seconds=0)
    (tmp_path / "audio" / "f1" / "chapter.json").write_text('{"voice_activity": [[2.0, 1.0]]}')
    with pytest.raises(HubertkitError, match="chapter.json: voice activity intervals must be increasing"):
        segment(tmp_path / "audio", tmp_path / "tsv")
    (tmp_path / "audio" / "f1" / "chapter.json").write_text('{"speaker": "1"}')
    with pytest.raises(HubertkitError, match="chapter.json: expected Libri-Light's voice activity"):
        segment(tmp_path / "audio", tmp_path / "tsv")
    with pytest.raises(HubertkitError, match="no \\*.wav files"):
        segment(tmp_path / "audio", tmp_path / "tsv", ext="wav")
    assert not (tmp_path / "tsv" / "train.tsv").exists()
