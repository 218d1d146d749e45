"""benchmark_train's timing of the controller calls inside a gated step (the whole benchmark builds
wav2vec2-base and is run by hand)."""

import pytest
import torch

from espnet_prune.bin import benchmark_train
from espnet_prune.pruning.controller import PruningController
from test.espnet_prune.ssl.tiny import tiny_config


def test_timed_calls_record_every_controller_call_and_change_nothing():
    torch.manual_seed(0)
    controller = PruningController(tiny_config(), units=["conv", "head", "interm"], target=0.5)
    torch.manual_seed(0)
    twin = PruningController(tiny_config(), units=["conv", "head", "interm"], target=0.5)
    seconds = {name: [] for name in benchmark_train.CONTROLLER_CALLS}
    ticks = iter(range(1000))
    benchmark_train.timed_calls(controller, seconds, clock=lambda: float(next(ticks)))
    for _ in range(2):
        torch.manual_seed(1)
        masks = controller()
        torch.manual_seed(1)
        assert all(torch.equal(a, b) for a, b in zip(masks["head"], twin()["head"]))
        loss, stats = controller.regularization()
        assert stats == twin.regularization()[1]
        controller.advance(0.01)
        twin.advance(0.01)
    assert seconds == {name: [1.0, 1.0] for name in benchmark_train.CONTROLLER_CALLS}
    assert torch.equal(controller.lambda_1["total"], twin.lambda_1["total"])


def test_systems_must_include_the_gated_one():
    with pytest.raises(SystemExit, match="systems must include 'pruned'"):
        benchmark_train.main(["--systems", "plain,s3prl"])
