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
