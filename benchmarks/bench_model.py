"""Forward + backward of HuBERT Base: hubertkit against transformers' HubertModel with an
equivalent pretraining head, on the same batch, each in its own process (time and
peak RSS).

    python benchmarks/bench_model.py [--batch 4] [--seconds 10] [--steps 3] [--compile]

Both run in training mode with the same mask (transformers gets it as
``mask_time_indices``) and the same loss: cosine-similarity logits of the masked frames
against 104 label embeddings (k-means 100 + fairseq's 4 specials), cross-entropy, plus
the feature penalty. The time is the median over ``--steps`` steps after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import header  # noqa: E402

from hubertkit.config.train import HubertCriterionConfig  # noqa: E402
from hubertkit.model import HubertModel, preset  # noqa: E402
from hubertkit.model.convert import hf_config  # noqa: E402
from hubertkit.train.tasks.pretraining import hubert_loss  # noqa: E402

NUM_CLASSES = 104


def batch(n: int, seconds: float):
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(n, int(seconds * 16000), generator=g) * 0.1
    labels = torch.randint(0, NUM_CLASSES, (n, int(seconds * 100)), generator=g)
    return wav, labels


def step_ours(model, wav, labels, mask_gen):
    out = model(wav, [labels], generator=mask_gen)
    loss, n, _ = hubert_loss(out, HubertCriterionConfig(loss_weights=[10.0]))
    (loss / n).backward()


class HFWithHead(torch.nn.Module):
    """transformers' encoder plus the HuBERT pretraining head, written here."""

    def __init__(self, cfg, num_classes: int = NUM_CLASSES):
        super().__init__()
        import transformers

        c = hf_config(cfg)
        c.pop("hubertkit")
        self.hubert = transformers.HubertModel(transformers.HubertConfig(**c))
        self.final_proj = torch.nn.Linear(cfg.encoder_embed_dim, cfg.final_dim)
        self.label_embs = torch.nn.Parameter(torch.rand(num_classes, cfg.final_dim))

    def forward(self, wav, labels, mask, labels_per_frame: int = 2):
        captured = []
        hook = self.hubert.feature_extractor.register_forward_hook(lambda m, i, o: captured.append(o))
        x = self.hubert(wav, mask_time_indices=mask).last_hidden_state
        hook.remove()
        pen = captured[0].float().pow(2).mean()
        proj = self.final_proj(x[mask])
        logits = F.normalize(proj, dim=-1) @ F.normalize(self.label_embs, dim=-1).T / 0.1
        t = labels[:, ::labels_per_frame][:, : x.shape[1]][mask]
        return F.cross_entropy(logits, t, reduction="sum") + 10 * pen * t.numel(), t.numel()


def worker(kind: str, args) -> dict:
    torch.manual_seed(0)
    cfg = preset("base", num_classes=[NUM_CLASSES], label_rate=100, untie_final_proj=False)
    wav, labels = batch(args.batch, args.seconds)
    if kind.startswith("hubertkit"):
        model = HubertModel(cfg).train()
        if kind == "hubertkit-compile":
            model = torch.compile(model)

        def step():
            step_ours(model, wav, labels, torch.Generator().manual_seed(1))
    else:
        model = HFWithHead(cfg).train()
        # hubertkit's mask for the same batch, so both do the same work
        ref = HubertModel(preset("tiny", num_classes=[NUM_CLASSES], label_rate=100)).eval()
        frames = (wav.shape[1] - 400) // 320 + 1
        mask = ref.apply_mask(torch.zeros(wav.shape[0], frames, ref.cfg.encoder_embed_dim), None, torch.Generator().manual_seed(1))[1]

        def step():
            loss, n = model(wav, labels, mask)
            (loss / n).backward()

    start = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"time": statistics.median(times), "first": first,
            "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time hubertkit under torch.compile")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    kinds = ["transformers", "hubertkit"] + (["hubertkit-compile"] if args.compile else [])
    results = {}
    for kind in kinds:
        cmd = [sys.executable, __file__, "--worker", kind, "--batch", str(args.batch), "--seconds", str(args.seconds), "--steps", str(args.steps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[kind] = json.loads(out)
    ref = results["transformers"]
    print(header(f"HuBERT Base forward + backward, batch {args.batch} x {args.seconds:g} s"))
    print("| | step time (s, median) | first step (s) | peak RSS (GiB) | time vs transformers | RSS vs transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, r in results.items():
        print(f"| {kind} | {r['time']:.2f} | {r['first']:.1f} | {r['rss_gib']:.2f} | {r['time'] / ref['time']:.2f} | {r['rss_gib'] / ref['rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
