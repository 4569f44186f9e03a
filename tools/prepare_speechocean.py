"""Manifests, transcripts and speaker map for speechocean762's ``train`` split, split by
speaker into train and held-out valid, ready for ``hubertkit align`` and the experiments.

speechocean762 (github jimbozhang/speechocean762; Apache-2.0): English read by Mandarin
L1 speakers, 16 kHz. Only its ``train`` directory is read: the corpus's ``test`` split
is kept for independent evaluation and never used here.

    python tools/prepare_speechocean.py CORPUS_DIR OUT_DIR [--valid-speakers 15] [--seed 0]

writes OUT_DIR/{train,valid}.tsv (the root is CORPUS_DIR), texts.tsv and utt2spk.tsv
(``path<TAB>value``), then: ``hubertkit align OUT_DIR train --texts OUT_DIR/texts.tsv
--lexicon CORPUS_DIR/resource/lexicon.txt --out OUT_DIR/train.alignments.jsonl`` (and valid).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import soundfile as sf


def table(path: Path, sep=None) -> dict[str, str]:
    rows = [line.split(sep, 1) for line in path.read_text().splitlines() if line.strip()]
    return {k.strip(): v.strip() for k, v in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--valid-speakers", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    split = a.corpus / "train"  # never the corpus's test split
    wav, text, spk = table(split / "wav.scp"), table(split / "text"), table(split / "utt2spk")
    speakers = sorted(set(spk.values()))
    held_out = set(random.Random(a.seed).sample(speakers, a.valid_speakers))
    a.out.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "valid": []}
    for utt in sorted(wav):
        rel = wav[utt]
        frames = sf.info(str(a.corpus / rel)).frames
        rows["valid" if spk[utt] in held_out else "train"].append(f"{rel}\t{frames}")
    for name, lines in rows.items():
        (a.out / f"{name}.tsv").write_text("\n".join([str(a.corpus.resolve()), *lines]) + "\n")
    (a.out / "texts.tsv").write_text("".join(f"{wav[u]}\t{text[u]}\n" for u in sorted(wav)))
    (a.out / "utt2spk.tsv").write_text("".join(f"{wav[u]}\t{spk[u]}\n" for u in sorted(wav)))
    print(f"{len(rows['train'])} train utterances ({len(speakers) - len(held_out)} speakers), "
          f"{len(rows['valid'])} valid ({len(held_out)} held-out speakers) in {a.out}")


if __name__ == "__main__":
    main()
