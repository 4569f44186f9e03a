"""Ordered parallel map on threads (I/O-and-BLAS-bound loops over files or chunks) or on
processes (pure-Python or GIL-holding parsing)."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

from hubertkit.errors import HubertkitError

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], jobs: int, processes: bool = False) -> Iterator[R]:
    """``map(fn, items)`` on ``jobs`` threads (or processes), results in input order, at
    most ``4 · jobs`` items in flight.

    Threads suffice where the work releases the GIL (audio decoding, file reads, numpy
    and torch kernels): unlike processes they start instantly and need no copy of the
    results. Each thread's torch ops run single-threaded meanwhile (parallel over items,
    not inside each small op). Processes are started with ``spawn``: safe in a process
    that holds threads or a GPU context, and ``fn`` must be importable.
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    if processes:
        try:
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                yield from _in_order(pool, fn, items, jobs)
        except BrokenProcessPool:
            raise HubertkitError("a worker process died before it could start (if hubertkit is called from a script, "
                                 "put the call under `if __name__ == \"__main__\":`, which worker processes skip)") from None
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(jobs) as pool:
            yield from _in_order(pool, fn, items, jobs)
    finally:
        torch.set_num_threads(threads)


def _in_order(pool: Executor, fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= 4 * jobs:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
