"""Shared helpers for the benchmark scripts: machine description and timing."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, torch {torch.__version__}"


def header(title: str) -> str:
    cmd = " ".join(["python", *sys.argv])
    return f"## {title}\n\n- date: {datetime.date.today()}\n- machine: {machine()}\n- command: `{cmd}`\n"


@contextmanager
def timer(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def best_of(n: int, fn) -> float:
    """Fastest of ``n`` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in GiB) of the child."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
