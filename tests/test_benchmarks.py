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
