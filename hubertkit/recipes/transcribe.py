"""``hubertkit transcribe``: greedy CTC transcription of audio files or a manifest, in
batches, with long files encoded in overlapping chunks; WER and CER (``jiwer``) when
references are given."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jiwer
import soundfile as sf
import torch

from hubertkit.data.audio import SAMPLE_RATE, read_audio
from hubertkit.data.manifest import Utterance, lookup_by_path, read_manifest
from hubertkit.data.text import normalize_text, read_texts
from hubertkit.errors import HubertkitError
from hubertkit.model.ctc import HubertCTC, frame_lengths, load_ctc
from hubertkit.model.decode import greedy_ids, ids_to_text
from hubertkit.progress import progress_bar

CHUNK_SECONDS = 30.0
CONTEXT_SECONDS = 2.0


@dataclass
class Transcript:
    path: str
    text: str
    reference: str | None = None


def chunked_log_probs(model: HubertCTC, wav: torch.Tensor, chunk: int, context: int) -> torch.Tensor:
    """``[frames, classes]`` of one waveform, encoded ``chunk`` samples at a time with
    ``context`` samples of audio either side; each frame is taken from the chunk that
    holds its centre, so the frames are exactly those of one pass over the whole."""
    hop = model.hubert.cfg.downsample
    field = model.hubert.cfg.receptive_field
    n = len(wav)
    frames = (n - field) // hop + 1
    chunk, context = max(hop, chunk // hop * hop), max(field, -(-context // hop) * hop)
    if n <= chunk + 2 * context:
        return model(wav[None])[0][0]
    parts = []
    for start in range(0, n, chunk):
        seg0 = max(0, start - context)
        seg = wav[seg0 : min(n, start + chunk + context)]
        if len(seg) < field:
            break
        lp = model(seg[None])[0][0]
        first = max(0, -(-(start - field // 2) // hop))  # first global frame whose centre is in [start, start + chunk)
        last = min(frames, -(-(start + chunk - field // 2) // hop))
        parts.append(lp[first - seg0 // hop : last - seg0 // hop])
    return torch.cat(parts)


def audio_inputs(inputs: list[str]) -> list[tuple[Utterance, str]]:
    """Utterances with the keys their references are looked up by: manifest paths for a
    ``.tsv``, file names for audio files."""
    if len(inputs) == 1 and inputs[0].endswith(".tsv"):
        manifest = read_manifest(inputs[0])
        return [(u, u.name) for u in manifest.utterances]
    missing = [p for p in inputs if not Path(p).is_file()]
    if missing:
        raise HubertkitError(f"audio file(s) not found: {', '.join(missing[:5])}")
    return [(Utterance(os.path.abspath(p), sf.info(p).frames, i), os.path.basename(p)) for i, p in enumerate(inputs, start=1)]


@torch.inference_mode()
def transcribe(ckpt: str | os.PathLike, inputs: list[str], batch_size: int = 8, chunk_seconds: float = CHUNK_SECONDS,
               references: str | os.PathLike | None = None, progress: bool = True) -> list[Transcript]:
    if batch_size < 1:
        raise HubertkitError(f"--batch-size must be at least 1, got {batch_size}")
    if not chunk_seconds > 0:  # NaN too
        raise HubertkitError(f"--chunk-seconds must be a positive number of seconds, got {chunk_seconds}")
    model = load_ctc(ckpt)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    sources = audio_inputs(inputs)
    refs = _references(references, sources) if references else None
    chunk = int(chunk_seconds * SAMPLE_RATE)
    out = []
    with progress_bar(total=len(sources), unit="utt", desc="transcribe", disable=not progress) as bar:
        for b in range(0, len(sources), batch_size):
            group = sources[b : b + batch_size]
            wavs = [model.hubert.prepare(torch.from_numpy(read_audio(u, where="transcribe"))) for u, _ in group]
            long = [len(w) > chunk for w in wavs]
            scores: list = [None] * len(wavs)
            for i, w in enumerate(wavs):
                if long[i]:
                    scores[i] = chunked_log_probs(model, w.to(device), chunk, int(CONTEXT_SECONDS * 16000))
            short = [i for i in range(len(wavs)) if not long[i]]
            if short:
                width = max(len(wavs[i]) for i in short)
                batch = torch.zeros(len(short), width)
                pad = torch.ones(len(short), width, dtype=torch.bool)
                for j, i in enumerate(short):
                    batch[j, : len(wavs[i])] = wavs[i]
                    pad[j, : len(wavs[i])] = False
                lp, frame_pad = model(batch.to(device), pad.to(device) if pad.any() else None)
                lengths = frame_lengths(lp, frame_pad)
                for j, i in enumerate(short):
                    scores[i] = lp[j, : lengths[j]]
            for (u, key), s in zip(group, scores):
                ref = refs[key] if refs is not None else None
                out.append(Transcript(u.path, ids_to_text(greedy_ids(s.cpu()), model.vocab), ref))
            bar.update(len(group))
    return out


def _references(path, sources: list[tuple[Utterance, str]]) -> dict[str, str]:
    """References by key: a ``.wrd`` file follows the manifest line by line; any other
    file is a transcript table (``utterance<TAB>text`` or JSON lines)."""
    if str(path).endswith(".wrd"):
        lines = Path(path).read_text().splitlines()
        if len(lines) != len(sources):
            raise HubertkitError(f"{path} has {len(lines)} lines for {len(sources)} inputs: a .wrd file must follow the manifest")
        return {key: normalize_text(line) for (_, key), line in zip(sources, lines)}
    table = read_texts(path)
    return {key: normalize_text(lookup_by_path(table, key, "reference", str(path))) for _, key in sources}


def error_rates(transcripts: list[Transcript], exclude: set[str] = frozenset()) -> dict[str, float]:
    """WER and CER over the transcripts with references, leaving out those whose reference
    is in ``exclude`` (e.g. the train split's texts: a sequence-to-sequence model can
    learn sentences by heart)."""

    pairs = [(t.reference, t.text) for t in transcripts if t.reference is not None and t.reference not in exclude]
    if not pairs:
        return {}
    refs, hyps = zip(*pairs)
    return {"wer": float(jiwer.wer(list(refs), list(hyps))), "cer": float(jiwer.cer(list(refs), list(hyps))),
            "utterances": len(pairs)}


def write_transcripts(transcripts: list[Transcript], fmt: str = "text") -> str:
    if fmt == "jsonl":
        return "".join(json.dumps({k: v for k, v in vars(t).items() if v is not None}, ensure_ascii=False) + "\n"
                       for t in transcripts)
    return "".join(f"{t.text}\n" for t in transcripts)
