"""Ordered parallel map on threads, for I/O-and-BLAS-bound loops over files or chunks."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    """``map(fn, items)`` on ``jobs`` threads, results in input order, at most
    ``4 · jobs`` items in flight.

    Threads suffice: audio decoding, file reads, numpy and torch kernels release the
    GIL, and unlike processes they start instantly and need no copy of the results.
    Each thread's torch ops run single-threaded meanwhile (parallel over items, not
    inside each small op).
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(jobs) as pool:
            pending: deque = deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 4 * jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(threads)
