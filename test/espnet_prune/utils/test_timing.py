"""The interleaved timer: medians per call, calls interleaved round by round."""

import time

import pytest

from espnet_prune.utils.timing import time_interleaved


def test_medians_rank_the_calls_and_rounds_interleave():
    order = []

    def sleeper(name, seconds):
        def call():
            order.append(name)
            time.sleep(seconds)
        return call

    medians = time_interleaved({"fast": sleeper("fast", 0.001), "slow": sleeper("slow", 0.02)}, rounds=3, warmup=1)
    assert set(medians) == {"fast", "slow"}
    assert medians["fast"] < medians["slow"] and medians["slow"] >= 0.02
    assert order == ["fast", "slow"] * 4


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        time_interleaved({"a": lambda: None}, rounds=0)


def test_rotation_and_per_round_report():
    order, reported = [], []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    medians = time_interleaved(calls, rounds=3, warmup=1, rotate=True,
                               on_round=lambda index, seconds: reported.append((index, sorted(seconds))))
    assert order == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert reported == [(index, ["a", "b", "c"]) for index in range(3)]
    assert set(medians) == {"a", "b", "c"} and all(value >= 0 for value in medians.values())


def test_the_clock_can_be_chosen():
    """Each timed call reads the given clock twice; a clock that ticks once per reading gives 1."""
    ticks = iter(range(1000))
    medians = time_interleaved({"a": lambda: None, "b": lambda: None}, rounds=3, warmup=1,
                               clock=lambda: float(next(ticks)))
    assert medians == {"a": 1.0, "b": 1.0}
