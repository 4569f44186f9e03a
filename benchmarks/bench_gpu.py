"""HuBERT Base pretraining throughput on one GPU: the bare step of hubertkit (eager and
``torch.compile``) and of transformers' HubertModel with the same head and mask, then the
full ``hubertkit train`` loop on audio files, in one table.

    python benchmarks/bench_gpu.py                       # Base, fairseq's per-GPU batch, bf16
    python benchmarks/bench_gpu.py --smoke               # tiny model, 2 steps, any device (a test)
    python benchmarks/bench_gpu.py --model tiny --batch 2 --crop 32000 --skip compile,transformers --workers 2
                                                         # the loop against the bare step, on a CPU

A step is forward + backward + AdamW (fused on CUDA) under bf16 autocast (float32 on a
CPU, where bf16 matmuls are emulated and many times slower), on fairseq's
per-GPU batch: ``max_tokens`` 1,400,000 samples of crops of 250,000 (5 crops of 15.6 s).
MFU = model FLOPs per step (3 x the forward's: convolutions, projections, attention and
feed-forward matmuls, logits; counted by ``model_flops``) / step time / the GPU's dense
bf16 peak (``PEAK_TFLOPS``, or ``--peak-tflops``). The train loop is timed from its own
log: the median wall time between logged updates after the warm-up, so data loading,
masking, the loss and per-update logging are in it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import HFWithHead  # noqa: E402
from common import header  # noqa: E402

from hubertkit.config import HubertConfig, preset  # noqa: E402
from hubertkit.config.train import HubertCriterionConfig  # noqa: E402
from hubertkit.model import HubertModel  # noqa: E402
from hubertkit.train.tasks.pretraining import hubert_loss  # noqa: E402
from hubertkit.train.trainer import train  # noqa: E402

NUM_CLASSES = 504  # k-means 500 + fairseq's 4 specials: Base's second iteration
# dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity)
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def frames_of(cfg: HubertConfig, samples: int) -> list[int]:
    """Output length of each conv layer for ``samples`` input samples."""
    lengths, n = [], samples
    for _, kernel, stride in cfg.conv_layers:
        n = (n - kernel) // stride + 1
        lengths.append(n)
    return lengths


def model_flops(cfg: HubertConfig, batch: int, samples: int, num_classes: int) -> float:
    """Forward FLOPs (2 per multiply-add) of HuBERT on ``batch`` crops of ``samples``:
    what ``torch.utils.flop_counter`` counts (matmuls, convolutions, attention)."""
    flops, c_in = 0.0, 1
    lengths = frames_of(cfg, samples)
    for (c_out, kernel, _), length in zip(cfg.conv_layers, lengths):
        flops += 2 * c_in * c_out * kernel * length
        c_in = c_out
    t, d, f = lengths[-1], cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
    if c_in != d:
        flops += 2 * t * c_in * d  # post_extract_proj
    k = cfg.conv_pos
    flops += 2 * d * (d // cfg.conv_pos_groups) * k * (t + 2 * (k // 2) - k + 1)  # positional conv
    per_layer = 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * t * d + 2 * 2 * t * d * f
    flops += cfg.encoder_layers * per_layer
    final = cfg.final_dim or d
    flops += 2 * t * d * final * (len(cfg.num_classes) if cfg.untie_final_proj else 1)  # final_proj, every frame
    flops += 2 * t * final * num_classes  # cosine logits, every frame (masked and unmasked)
    return batch * flops


def device_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, f"{override:g} TFLOP/s (given)"
    if device.type != "cuda":
        return None, "no peak for a CPU: MFU not computed"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_TFLOPS.items():
        if key in name:
            return peak, f"{name}: {peak:g} TFLOP/s dense bf16"
    return None, f"{name}: peak unknown, pass --peak-tflops"


def bare_steps(kind: str, cfg: HubertConfig, args, device: torch.device) -> dict:
    """Median time of ``args.steps`` optimizer steps after ``args.warmup``, and peak memory."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    wav = (torch.randn(args.batch, args.crop, generator=g) * 0.1).to(device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch, frames_of(cfg, args.crop)[-1]), generator=g).to(device)
    criterion = HubertCriterionConfig(loss_weights=[10.0])
    if kind == "transformers":
        model = HFWithHead(cfg, NUM_CLASSES).to(device).train()
        ref = HubertModel(preset("tiny", num_classes=[NUM_CLASSES], label_rate=50)).eval()  # the same mask as ours
        blank = torch.zeros(args.batch, labels.shape[1], ref.cfg.encoder_embed_dim)
        mask = ref.apply_mask(blank, None, torch.Generator().manual_seed(1))[1].to(device)

        def loss_of():
            loss, n = model(wav, labels, mask, labels_per_frame=1)
            return loss / n
    else:
        model = HubertModel(cfg).to(device).train()
        forward = torch.compile(model, dynamic=False) if kind == "hubertkit compile" else model

        def loss_of():
            loss, n, _ = hubert_loss(forward(wav, [labels], generator=torch.Generator().manual_seed(1)), criterion)
            return loss / n
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synced():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    start = synced()
    for _ in range(args.warmup):
        step()
    first = synced() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = synced()
        step()
        times.append(synced() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"step_s": statistics.median(times), "warmup_s": first, "memory_gib": memory}


def train_loop(cfg_name: str, overrides: list[str], args, work: Path) -> dict:
    """``hubertkit train`` on written audio files of the crop's length with random labels:
    the median seconds per update after the warm-up, from its log."""
    rng = np.random.default_rng(0)
    seconds = args.crop / 16000
    n_files = args.batch * (args.warmup + args.steps + 2)
    (work / "audio").mkdir(parents=True, exist_ok=True)
    lines, labels = [str(work / "audio")], []
    frames = int(seconds * 50)
    for i in range(n_files):
        t = np.arange(args.crop) / 16000
        wav = 0.1 * np.sin(2 * np.pi * (150 + 10 * i) * t) + 0.01 * rng.standard_normal(args.crop)
        sf.write(work / "audio" / f"{i}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"{i}.wav\t{args.crop}")
        labels.append(" ".join(map(str, rng.integers(0, NUM_CLASSES - 4, frames))))
    for split in ("train", "valid"):
        (work / f"{split}.tsv").write_text("\n".join(lines if split == "train" else lines[:3]) + "\n")
        (work / f"{split}.km").write_text("\n".join(labels if split == "train" else labels[:2]) + "\n")
    (work / "dict.km.txt").write_text("".join(f"{k} 1\n" for k in range(NUM_CLASSES - 4)))
    updates = args.warmup + args.steps
    run = [f"task.data={work}", f"task.label_dir={work}", "task.labels=[km]", "model.label_rate=50",
           f"checkpoint.save_dir={work / 'ck'}", "checkpoint.save_interval_updates=0", f"optimization.max_update={updates}",
           f"dataset.max_tokens={args.batch * args.crop}", f"task.max_sample_size={args.crop}",
           f"task.min_sample_size={args.crop}",
           "dataset.validate_interval_updates=0", "common.log_interval=1", "common.log_format=json",
           "common.tensorboard_logdir=null", "distributed_training.distributed_world_size=1",
           f"dataset.num_workers={args.workers}", f"common.bf16={torch.cuda.is_available()}", *overrides]
    train(cfg_name, run, progress=False)
    log = [json.loads(line) for line in (work / "ck" / "train_log.jsonl").read_text().splitlines()]
    walls = [r["wall_s"] for r in log if r["split"] == "train"]
    gaps = np.diff(walls)[args.warmup:]
    return {"step_s": float(np.median(gaps)) if len(gaps) else float("nan")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 steps, short crops: checks the script, not the speed")
    parser.add_argument("--batch", type=int, default=5, help="crops per step (fairseq: max_tokens 1.4M / 250k)")
    parser.add_argument("--crop", type=int, default=250000, help="samples per crop")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=6, help="data loader workers of the train loop")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out: compile, transformers, loop")
    parser.add_argument("--model", choices=("base", "tiny"), default="base",
                        help="the architecture (the train loop uses hubert_base_librispeech for base, demo for tiny)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        args.batch, args.crop, args.steps, args.warmup, args.workers = 2, 16000, 2, 1, 0
        skip.add("compile")
    name = "tiny" if args.smoke else args.model
    cfg = preset(name, num_classes=[NUM_CLASSES], label_rate=50)
    if not args.smoke:
        torch.backends.cuda.matmul.allow_tf32 = True
    kinds = ["hubertkit eager"] + ["hubertkit compile"] * ("compile" not in skip) + ["transformers"] * ("transformers" not in skip)
    results = {kind: bare_steps(kind, cfg, args, device) for kind in kinds}
    if "loop" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            config = "demo" if name == "tiny" else "hubert_base_librispeech"
            results["hubertkit train loop"] = train_loop(config, [] if name == "tiny" else ["common.fp16=false"], args, Path(tmp))
    peak, peak_text = device_peak(device, args.peak_tflops)
    step_flops = 3 * model_flops(cfg, args.batch, args.crop, NUM_CLASSES)
    audio_s = args.batch * args.crop / 16000
    precision = "bf16" if device.type == "cuda" else "float32"
    print(header(f"HuBERT {name} pretraining step on {device.type}, batch {args.batch} x {args.crop} samples, {precision}"))
    print(f"- model FLOPs per step: {step_flops / 1e12:.3f} TFLOP (3 x forward); peak: {peak_text}\n")
    print("| | step (s) | crops/s | audio s/s | peak memory (GiB) | MFU | crops/s vs transformers | vs bare eager step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref = results.get("transformers")
    for kind, r in results.items():
        mfu = f"{step_flops / r['step_s'] / (peak * 1e12):.1%}" if peak else "-"
        vs_hf = f"{ref['step_s'] / r['step_s']:.2f}" if ref else "-"
        vs_bare = f"{results['hubertkit eager']['step_s'] / r['step_s']:.2f}"
        memory = f"{r['memory_gib']:.1f}" if r.get("memory_gib") == r.get("memory_gib") and "memory_gib" in r else "-"
        print(f"| {kind} | {r['step_s']:.3f} | {args.batch / r['step_s']:.2f} | {audio_s / r['step_s']:.1f} | {memory} "
              f"| {mfu} | {vs_hf} | {vs_bare} |")
    if not args.smoke and device.type == "cuda" and "hubertkit eager" in results:
        best = min(r["step_s"] for k, r in results.items() if k.startswith("hubertkit") and "loop" not in k)
        for label, updates in (("iteration 1", 250_000), ("iteration 2", 400_000)):
            hours = updates * 32 * best / 3600  # 32 GPUs' batches per update, on this one GPU
            print(f"\n- {label}: {updates:,} updates x 32 GPU-batches x {best:.3f} s = {hours:,.0f} GPU-hours on this GPU")


if __name__ == "__main__":
    main()
