"""Build ``hubertkit/corpora/demo``: real read speech from speechocean762's ``train`` split.

Speakers are drawn evenly from the four groups the corpus records (adult or child, male or
female), utterances of 2.5-4.5 s with a transcript; each is written as 16-bit FLAC under
its speaker's folder, and ``hubertkit align`` (PocketSphinx, the ``align`` extra) makes
the word and phone alignments from the transcripts. Only ``train`` is read: the corpus's
``test`` split is kept for independent evaluation.

    python tools/make_real_demo_corpus.py SPEECHOCEAN762_DIR hubertkit/corpora/demo
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

import soundfile as sf

from hubertkit.data.forced_align import align
from hubertkit.data.manifest import make_manifest

GROUPS = [("adult", "m"), ("adult", "f"), ("child", "m"), ("child", "f")]
ADULT_AGE = 18


def table(path: Path) -> dict[str, str]:
    rows = [line.split(None, 1) for line in path.read_text().splitlines() if line.strip()]
    return {k: v.strip() for k, v in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="a speechocean762 checkout (WAVE/, train/, resource/)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--speakers", type=int, default=24, help="a multiple of 4: as many from each group")
    ap.add_argument("--per-speaker", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    split = a.corpus / "train"  # never the corpus's test split
    wav, text, spk = table(split / "wav.scp"), table(split / "text"), table(split / "utt2spk")
    age, gender = table(split / "spk2age"), table(split / "spk2gender")
    rng = random.Random(a.seed)
    by_speaker: dict[str, list[str]] = {}
    for utt in sorted(wav):
        seconds = sf.info(str(a.corpus / wav[utt])).duration
        if 2.5 <= seconds <= 4.5 and text.get(utt):
            by_speaker.setdefault(spk[utt], []).append(utt)
    chosen = []
    for group, sex in GROUPS:
        members = sorted(s for s, utts in by_speaker.items() if len(utts) >= a.per_speaker and gender[s] == sex
                         and (int(age[s]) >= ADULT_AGE) == (group == "adult"))
        chosen += rng.sample(members, a.speakers // len(GROUPS))
    if a.out.exists():
        shutil.rmtree(a.out)
    texts = []
    for s in sorted(chosen):
        for utt in sorted(rng.sample(by_speaker[s], a.per_speaker)):
            audio, rate = sf.read(a.corpus / wav[utt], dtype="int16")
            dest = a.out / f"spk{s}" / f"{utt}.flac"
            dest.parent.mkdir(parents=True, exist_ok=True)
            sf.write(dest, audio, rate, subtype="PCM_16")
            texts.append(f"spk{s}/{utt}.flac\t{text[utt]}\n")
    with tempfile.TemporaryDirectory() as tmp:
        make_manifest(a.out, tmp, valid_percent=0.0)
        (Path(tmp) / "texts.tsv").write_text("".join(texts))
        summary = align(tmp, "train", Path(tmp) / "texts.tsv", Path(tmp) / "al.jsonl", a.corpus / "resource" / "lexicon.txt")
        with open(a.out / "alignments.jsonl", "w") as f:
            for line in (Path(tmp) / "al.jsonl").read_text().splitlines():
                record = json.loads(line)
                speaker = record["path"].split("/")[0]
                f.write(json.dumps({**record, "speaker": speaker, "age": int(age[speaker[3:]]),
                                    "gender": gender[speaker[3:]]}) + "\n")
    for utt in summary.failed:  # the corpus is what has an alignment
        (a.out / utt).unlink(missing_ok=True)
    print(f"{len(texts)} utterances of {len(chosen)} speakers drawn; {summary}")


if __name__ == "__main__":
    main()
