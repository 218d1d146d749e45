"""Interleaved wall-clock timing, the one timer of the benchmark scripts.

Calls are timed in rounds, one call of each per round in a fixed order, so that slow
phases of a shared machine (other jobs, frequency changes) hit every side alike; the
median over rounds is reported.
"""

import statistics
import time
from typing import Callable, Dict, List, Mapping, Optional


def time_interleaved(calls: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 2,
                     rotate: bool = False,
                     on_round: Optional[Callable[[int, Dict[str, float]], None]] = None,
                     clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Median seconds per call of every entry of ``calls``.

    Args:
        calls: ``{name: zero-argument callable}``; each round calls them in this order.
        rounds: timed rounds (at least 1).
        warmup: untimed rounds first (allocator, caches, lazy initialisation).
        rotate: start each timed round one entry later (round r calls entry r mod n first), so
            that no call always runs right after the same other one.
        on_round: called after each timed round with its index (0-based) and ``{name: seconds}``.
        clock: the clock (wall time; ``time.process_time`` counts this process's CPU time only,
            which other processes on a shared machine disturb less).
    Returns:
        ``{name: median seconds}``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    names = list(calls)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names) if rotate and names else 0
        for name in names[shift:] + names[:shift]:
            start = clock()
            calls[name]()
            times[name].append(clock() - start)
        if on_round is not None:
            on_round(index, {name: values[-1] for name, values in times.items()})
    return {name: statistics.median(values) for name, values in times.items()}
