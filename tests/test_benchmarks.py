"""benchmarks/bench_gpu.py on a CPU: its FLOP count against torch's own counter, and a
smoke run of the whole script (tiny model, 2 steps) that prints every row."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hubertkit.config import preset
from hubertkit.model import HubertModel

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
from bench_gpu import model_flops  # noqa: E402


@pytest.mark.parametrize("samples, untie", [(16000, True), (23456, False)])
def test_flop_count_matches_torchs_counter(samples, untie):
    cfg = preset("tiny", num_classes=[60], label_rate=50, untie_final_proj=untie)
    model = HubertModel(cfg).train()
    wav, labels = torch.randn(2, samples), torch.randint(0, 60, (2, samples // 320))
    with FlopCounterMode(display=False) as counter:
        model(wav, [labels], generator=torch.Generator().manual_seed(0))
    assert model_flops(cfg, 2, samples, 60) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_bench_gpu_smoke_run_prints_every_row():
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--smoke"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|")[1].strip() for line in out.stdout.splitlines() if line.startswith("| ") and "step (s)" not in line]
    assert rows == ["hubertkit eager", "transformers", "hubertkit train loop"], out.stdout
    assert "model FLOPs per step" in out.stdout


def test_bench_scale_labels_are_one_per_hop_and_parse_back():
    import numpy as np
    from bench_scale import label_text

    from hubertkit.data.label_store import parse_block

    frames = np.array([3, 1, 250, 7])
    values, per_line = parse_block(label_text(frames, np.random.default_rng(0)))
    assert per_line.tolist() == frames.tolist() and 0 <= values.min() and values.max() < 500


def test_bench_scale_smoke_run(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "bench_scale.py"), "--work", str(tmp_path), "--sets", "ll2,ll4",
                          "--procs", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("hubertkit, 1 process: dataset") == 2 and "projected to 60,000 h" in out.stdout
    assert not (tmp_path / "ll2").exists()  # slices are deleted after measuring
