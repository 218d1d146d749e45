"""Interleaved wall-clock timing, the one timer of the benchmark scripts.

Calls are timed in rounds, one call of each per round in a fixed order, so that slow
phases of a shared machine (other jobs, frequency changes) hit every side alike; the
median over rounds is reported.
"""

import statistics
import time
from typing import Callable, Dict, List, Mapping


def time_interleaved(calls: Mapping[str, Callable[[], object]], rounds: int,
                     warmup: int = 2) -> Dict[str, float]:
    """Median seconds per call of every entry of ``calls``.

    Args:
        calls: ``{name: zero-argument callable}``; each round calls them in this order.
        rounds: timed rounds (at least 1).
        warmup: untimed rounds first (allocator, caches, lazy initialisation).
    Returns:
        ``{name: median seconds}``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
