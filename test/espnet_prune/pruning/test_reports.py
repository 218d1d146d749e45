"""The end-of-training report (``train.log``) of one size and of several: one path, one INFO line
per reached budget and one WARNING per missed one, for every size."""

import logging

import torch

from espnet_prune.pruning.espnet_glue import report_budgets
from test.espnet_prune.pruning.fixtures import make_checkpoints as fixtures
from test.espnet_prune.pruning.test_checkpoint_fixtures import saved_state


def loaded(case, deterministic):
    model = fixtures.build(case)
    model.load_state_dict(saved_state(case))
    model.frontend.controller.deterministic_ratios = lambda: dict(deterministic)
    with torch.no_grad():
        expected = {name: float(v) for name, v in model.frontend.controller.expected_ratios().items()}
    return model, expected


def records(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_one_size_logs_each_reached_budget_and_warns_of_each_missed_one(caplog):
    model, expected = loaded("single", {"cnn": 0.71, "transformer": 0.45})
    with caplog.at_level(logging.INFO):
        warnings = report_budgets(model)
    assert records(caplog, logging.INFO) == [
        f"pruning budget 'cnn' (macs) reached: the pruned structure keeps 0.710 (expected under the gates "
        f"{expected['cnn']:.3f}), target 0.700"]
    assert records(caplog, logging.WARNING) == warnings == [
        f"pruning budget 'transformer' (macs) missed its target: the pruned structure keeps 0.450 (expected under "
        f"the gates {expected['transformer']:.3f}) against a target of 0.600 after 5 optimizer steps; only 1 steps "
        "followed the ramp: train at least 8 optimizer steps (2 x warmup_steps), or lower warmup_steps to at most 2"]
    assert model.frontend.controller.size_warnings() == []


def test_several_sizes_log_every_size(caplog):
    model, expected = loaded("multi", {"total": 0.61})
    info = model.frontend.controller.snapshots.info(0)
    with caplog.at_level(logging.INFO):
        warnings = report_budgets(model)
    assert records(caplog, logging.INFO) == [
        f"size 2 of 2 (target 0.60): pruning budget 'total' (params) reached at step 8: the pruned structure keeps "
        f"0.610 (expected under the gates {expected['total']:.3f}), target 0.600"]
    assert records(caplog, logging.WARNING) == warnings == model.frontend.controller.size_warnings() == [
        f"size 1 of 2 (target 0.80): pruning budget 'total' (params) missed its target: the pruned structure keeps "
        f"{info['deterministic_total']:.3f} (expected under the gates {info['expected_total']:.3f}) against a target "
        "of 0.800 at step 6; the gates did not settle within this size's hold and its extension (hold_steps more): "
        "raise hold_steps, or reg_lr (gates and multipliers move faster), or warmup_steps"]
