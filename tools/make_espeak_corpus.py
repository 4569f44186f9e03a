"""Regenerate ``tests/data/espeak``: synthesized English speech with exact phone alignments,
the corpus the tests run on (the demo runs on real speech: ``make_real_demo_corpus.py``).

Needs espeak-ng (``apt-get install espeak-ng``) and scipy; neither is needed to use
the corpus.  The speech comes from espeak-ng's library through ctypes so that its
phoneme events (sample positions of every phone) give an exact time alignment.

    python tools/make_espeak_corpus.py tests/data/espeak
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import re
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000

# (speaker id, espeak-ng voice, words per minute, base pitch 0-99, pitch range 0-99)
SPEAKERS = [
    ("m1", "en-us+m1", 160, 35, 50),
    ("m2", "en-gb+m3", 150, 25, 40),
    ("m3", "en-us+m7", 170, 45, 60),
    ("m4", "en-gb-x-rp+m2", 155, 30, 70),
    ("f1", "en-us+f2", 165, 60, 60),
    ("f2", "en-gb+f4", 150, 70, 50),
    ("f3", "en-us+f5", 158, 55, 75),
    ("f4", "en-gb-scotland+f1", 162, 65, 45),
]
UTTERANCES_PER_SPEAKER = 22

SENTENCES = """\
The birch canoe slid on the smooth planks near the quiet river.
Glue the sheet to the dark blue background before the paint dries.
It is easy to tell the depth of a well when the water is clear.
These days a chicken leg is a rare dish in the old town market.
Rice is often served in round bowls at the family dinner.
The juice of lemons makes fine punch for a summer party.
The box was thrown beside the parked truck on the gravel road.
The hogs were fed chopped corn and garbage every single morning.
Four hours of steady work faced us before the evening meal.
A large size in stockings is hard to sell in the small shop.
The boy was there when the sun rose over the eastern hills.
A rod is used to catch pink salmon in the cold northern streams.
The source of the huge river is the clear spring in the mountains.
Kick the ball straight and follow through with your whole body.
Help the woman get back to her feet after the long walk.
A pot of tea helps to pass the evening when the rain comes down.
Smoky fires lack flame and heat and fill the room with ash.
The soft cushion broke the man's fall from the wooden ladder.
The salt breeze came across from the sea and cooled the village.
The girl at the booth sold fifty bonds to the eager crowd.
The small pup gnawed a hole in the sock that was left on the floor.
The fish twisted and turned on the bent hook in the shallow pool.
Press the pants and sew a button on the vest before you leave.
The swan dive was far short of perfect but the judges were kind.
The beauty of the view stunned the young boy on the mountain path.
Two blue fish swam in the tank while the children watched them.
Her purse was full of useless trash and a few old coins.
The colt reared and threw the tall rider into the muddy field.
It snowed, rained, and hailed the same morning in the valley.
Read verse out loud for pleasure on a long winter night.
Hoist the load to your left shoulder and walk toward the gate.
Take the winding path to reach the lake behind the old mill.
Note closely the size of the gas tank before the long drive.
Wipe the grease off his dirty face with a clean white towel.
Mend the coat before you go out into the cold wind.
The wrist was badly strained and hung limp after the game.
The stray cat gave birth to kittens under the back porch.
The young girl gave no clear response to the teacher's question.
The meal was cooked before the bell rang for the second time.
What joy there is in living when the spring flowers bloom.
A king ruled the state in the early days of the empire.
The ship was torn apart on the sharp reef during the storm.
Sickness kept him home the third week of the busy month.
The wide road shimmered in the hot sun at noon.
The lazy cow lay in the cool grass beneath the oak tree.
Lift the square stone over the fence and set it down gently.
The rope will bind the seven books at once for the journey.
Hop over the fence and plunge in to the cool green water.
The friendly gang left the drug store after buying cold drinks.
Mesh wire keeps chicks inside the yard and foxes outside.
The frosty air passed through the coat and chilled his bones.
The crooked maze failed to fool the mouse for very long.
Adding fast leads to wrong sums when you are very tired.
The show was a flop from the very start of the first act.
A saw is a tool used for making boards out of rough logs.
The wagon moved on well oiled wheels across the dusty plain.
March the soldiers past the next hill before the sun goes down.
A cup of sugar makes sweet fudge for the school fair.
Place a rosebush near the porch steps where the light is good.
Both lost their lives in the raging storm off the rocky coast.
We talked of the side show in the circus after the parade.
Use a pencil to write the first draft of the long letter.
He ran half way to the hardware store before he turned back.
The clock struck to mark the third period of the school day.
A small creek cut across the field and watered the cattle.
Cars and busses stalled in snow drifts along the highway.
The set of china hit the floor with a crash in the kitchen.
This is a grand season for hikes on the northern road.
The dune rose from the edge of the water and hid the town.
Those words were the cue for the actor to leave the stage.
A yacht slid around the point into the bay at sunset.
The two met while playing on the sand by the harbour.
The ink stain dried on the finished page of the old diary.
The walled town was seized without a fight by the rebels.
The lease ran out in sixteen weeks and they had to move.
A tame squirrel makes a nice pet for a patient child.
The horn of the car woke the sleeping cop on the corner.
The heart beat strongly and with firm strokes after the race.
The pearl was worn in a thin silver ring on her left hand.
The fruit peel was cut in thick slices and left to dry.
The navy attacked the big task force near the southern islands.
See the cat glaring at the scared mouse behind the cupboard.
There are more than two factors here that explain the result.
The hat brim was wide and too droopy for the windy day.
The lawyer tried to lose his case but the jury disagreed.
The grass curled around the fence post after the summer rain.
Cut the pie into large parts and share them with your friends.
Men strive but seldom get rich working long hours in the mine.
Always close the barn door tight before the animals sleep.
He lay prone and hardly moved a limb during the long night.
The slush lay deep along the street after the sudden thaw.
A wisp of cloud hung in the blue air above the green valley.
A pound of sugar costs more than eggs at the corner store.
The fin was sharp and cut the clear water as the shark passed.
The play seems dull and quite stupid to the restless audience.
Bail the boat to stop it from sinking in the rising waves.
The term ended in late June that year with a quiet party.
A tusk is used to make costly gifts in distant countries.
Ten pins were set in order on the polished bowling lane.
The bill was paid every third week by the careful old man.
Oak is strong and also gives shade on a long summer afternoon.
Cats and dogs each hate the other when they share a house.
The pipe began to rust while new in the damp basement.
Open the crate but do not break the glass inside it.
"""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EVENT_END_OF_LIST, _EVENT_PHONEME = 0, 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class Espeak:
    """espeak-ng in synchronous mode, collecting audio and phoneme start samples."""

    def __init__(self):
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        # AUDIO_OUTPUT_SYNCHRONOUS = 2, espeakINITIALIZE_PHONEME_EVENTS = 1
        self.rate = self.lib.espeak_Initialize(2, 0, None, 1)
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            if events[i].type == _EVENT_PHONEME:
                self._phones.append((events[i].id.string.decode(), events[i].sample))
            i += 1
        return 0

    def say(self, text, voice, wpm, pitch, pitch_range):
        self._chunks, self._phones = [], []
        self.lib.espeak_SetVoiceByName(voice.encode())
        self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self.lib.espeak_SetParameter(_PARAM_RANGE, pitch_range, 0)
        data = text.encode()
        # position 0, POS_CHARACTER = 1, end 0, espeakCHARS_UTF8 = 1
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0, self._phones


def phone_name(mnemonic: str) -> str:
    """espeak's mnemonics with stress/allophone digits removed; pauses become ``sil``."""
    if mnemonic.startswith("_"):
        return "sil"
    return re.sub(r"\d+$", "", mnemonic) or mnemonic


def alignment(phones, num_in_samples, in_rate, duration):
    """[phone, start_s, end_s] covering the whole utterance, silence included."""
    segments = []
    starts = [s / in_rate for _, s in phones] + [num_in_samples / in_rate]
    if starts[0] > 0:
        segments.append(["sil", 0.0, starts[0]])
    for (name, _), start, end in zip(phones, starts, starts[1:]):
        if end <= start:
            continue
        name = phone_name(name)
        if segments and segments[-1][0] == name == "sil":
            segments[-1][2] = end
        else:
            segments.append([name, start, end])
    segments[-1][2] = duration
    return [[p, round(s, 4), round(min(e, duration), 4)] for p, s, e in segments if min(e, duration) > s]


def main():
    from scipy.signal import resample_poly

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-speaker", type=int, default=5,
                        help=f"utterances kept per voice, the first of the {UTTERANCES_PER_SPEAKER} drawn")
    args = parser.parse_args()

    sentences = [s.strip() for s in SENTENCES.strip().splitlines()]
    rng = random.Random(args.seed)
    engine = Espeak()
    records = []
    for speaker, voice, wpm, pitch, pitch_range in SPEAKERS:
        (args.out / speaker).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(rng.sample(sentences, UTTERANCES_PER_SPEAKER)[: args.per_speaker]):
            wav, phones = engine.say(text, voice, wpm, pitch, pitch_range)
            wav16 = resample_poly(wav, SAMPLE_RATE, engine.rate).astype(np.float32)
            wav16 = np.clip(wav16 / max(1e-3, np.abs(wav16).max()) * 0.7, -1, 1)
            utt = f"{speaker}/{speaker}_{i:03d}"
            sf.write(args.out / f"{utt}.flac", wav16, SAMPLE_RATE, subtype="PCM_16")
            duration = len(wav16) / SAMPLE_RATE
            records.append({
                "utt": utt,
                "path": f"{utt}.flac",
                "speaker": speaker,
                "text": text,
                "duration": round(duration, 4),
                "phones": alignment(phones, len(wav), engine.rate, duration),
            })
    with open(args.out / "alignments.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    total = sum(r["duration"] for r in records)
    print(f"{len(records)} utterances, {len(SPEAKERS)} speakers, {total / 60:.1f} minutes -> {args.out}")


if __name__ == "__main__":
    main()
