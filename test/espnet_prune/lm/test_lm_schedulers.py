"""Schedulers: plans, and incremental runs that emit every size, each continuing the last."""

import pytest

from espnet_prune.lm.methods import prune_step
from espnet_prune.lm.schedulers import plan_schedule, run_schedule


def test_oneshot_plan_reaches_each_target_from_dense_in_one_step():
    assert plan_schedule([0.5, 0.25, 0.75], "oneshot") == [[(0.75, 0.75)], [(0.5, 0.5)], [(0.25, 0.25)]]


def test_incremental_plan_is_one_chain_in_equal_steps():
    chain, = plan_schedule([0.25, 0.75], "incremental", num_increments=2)
    assert [target for _, target in chain] == [None, 0.75, None, 0.25]
    assert [ratio for ratio, _ in chain] == pytest.approx([0.875, 0.75, 0.5, 0.25])


@pytest.mark.parametrize(
    "scheduler, increments, message",
    [("cyclic", 1, "unknown scheduler 'cyclic'"), ("incremental", 0, "num_increments")],
)
def test_bad_schedule_is_refused(scheduler, increments, message):
    with pytest.raises(ValueError, match=message):
        plan_schedule([0.5], scheduler, increments)


def test_run_schedule_prunes_finetunes_and_emits_in_order():
    calls = []

    def prune(model, params):
        calls.append(("prune", model, params))
        return f"{model}>p{params}"

    def finetune(model, tag):
        calls.append(("finetune", model, tag))
        return f"{model}>f"

    emitted = []
    chains = plan_schedule([0.5, 0.25], "incremental", 2)
    run_schedule("dense", 1000, chains, prune, finetune, lambda t, m: emitted.append((t, m)))

    assert [c[2] for c in calls if c[0] == "prune"] == [750, 500, 375, 250]
    assert [c[2] for c in calls if c[0] == "finetune"] == [
        "step01_ratio0.7500", "step02_ratio0.5000", "step03_ratio0.3750", "step04_ratio0.2500"
    ]
    # Every step continues from the previous fine-tuned model; smaller sizes from larger.
    assert emitted == [
        (0.5, "dense>p750>f>p500>f"),
        (0.25, "dense>p750>f>p500>f>p375>f>p250>f"),
    ]


def test_oneshot_run_restarts_from_dense_for_each_target():
    emitted = []
    chains = plan_schedule([0.5, 0.25], "oneshot")
    run_schedule("dense", 100, chains, lambda m, p: f"{m}>p{p}", None, lambda t, m: emitted.append((t, m)))
    assert emitted == [(0.5, "dense>p50"), (0.25, "dense>p25")]


def _incremental_family(dense_lm, method, targets):
    family = {}

    def prune(model, params):
        return prune_step(model, method, "data", params, dense_lm.train_batches)

    chains = plan_schedule(targets, "incremental", 2)
    run_schedule(dense_lm.model, dense_lm.params, chains, prune, None, family.__setitem__)
    return family


def test_incremental_lowrank_emits_every_size_with_nonincreasing_ranks(dense_lm):
    targets = [0.75, 0.5, 0.3]
    family = _incremental_family(dense_lm, "lowrank", targets)
    assert list(family) == targets
    for target, model in family.items():
        expected = round(target * dense_lm.params)
        assert abs(model.lm.num_params() - expected) <= 0.02 * expected
    for larger, smaller in zip(targets, targets[1:]):
        big, small = family[larger].lm.lm_conf["ranks"], family[smaller].lm.lm_conf["ranks"]
        assert set(big) <= set(small)
        assert all(small[name] <= rank for name, rank in big.items())


def test_incremental_unstructured_masks_are_nested(dense_lm):
    targets = [0.6, 0.3]
    family = _incremental_family(dense_lm, "unstructured", targets)
    for target, model in family.items():
        expected = round(target * dense_lm.params)
        assert abs(model.lm.num_params() - expected) <= 0.02 * expected
    large, small = (family[t].lm.matrices() for t in targets)
    for name in large:
        assert bool((small[name].weight_mask <= large[name].weight_mask).all()), name
