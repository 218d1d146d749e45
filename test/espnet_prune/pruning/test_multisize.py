"""Several sizes from one run: the ``targets`` keys, the stage schedule (ramps and holds), the
snapshots in the state dict (resume, averaged files) and export's choice of a size."""

import pytest
import torch
from torch import nn

from espnet_prune.asr.frontend.pruned_ssl import PrunedSSLFrontend
from espnet_prune.export.compact import select_size
from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.multisize import SizeSchedule, size_name
from test.espnet_prune.asr.recipe_steps import TINY_ARCH
from test.espnet_prune.ssl.tiny import tiny_config

BAD = [
    ({"targets": [0.6, 0.8]}, r"frontend_conf\.pruning\.targets must be strictly decreasing.*entry 1 \(0\.8\)"),
    ({"targets": [0.8, 0.8]}, r"targets must be strictly decreasing"),
    ({"targets": [1.2, 0.5]}, r"frontend_conf\.pruning\.targets\[0\].*keep ratio in \(0, 1\], got 1\.2"),
    ({"targets": [0.5, 0.0]}, r"targets\[1\].*\(0, 1\], got 0\.0"),
    ({"targets": [0.8, -0.2]}, r"targets\[1\].*\(0, 1\]"),
    ({"targets": [0.8, 0.6], "target": 0.5}, r"\['targets'\] \(several sizes\) is exclusive with \['target'\]"),
    ({"targets": [0.8, 0.6], "cnn_target": 0.5}, r"exclusive with \['cnn_target'\]"),
    ({"targets": [0.8, 0.6], "transformer_targets": [0.8, 0.6]}, r"'targets' \(joint budget\) is exclusive"),
    ({"targets": 0.8}, r"targets must be a list of keep ratios"),
    ({"targets": "0.8, 0.6"}, r"targets must be a list of keep ratios"),
    ({"targets": [0.8]}, r"targets needs at least two sizes.*'target: 0\.8'"),
    ({"targets": [0.8, "0.6"]}, r"targets\[1\] must be a number, got str"),
    ({"targets": [0.8, True]}, r"targets\[1\] must be a number, got bool"),
    ({"cnn_targets": [0.8, 0.6], "transformer_targets": [0.9, 0.7, 0.5]}, r"same number of sizes"),
    ({"cnn_targets": [0.6, 0.8], "transformer_targets": [0.9, 0.7]}, r"cnn_targets must not increase"),
    ({"cnn_targets": [0.7, 0.7], "transformer_targets": [0.7, 0.7]}, r"sizes 0 and 1 .* are equal"),
    ({"units": ["head"], "cnn_targets": [0.8, 0.6]}, r"cnn_targets < 1 needs the 'conv' unit"),
    ({"target": 0.5, "hold_steps": 10}, r"hold_steps applies to several sizes"),
    ({"targets": [0.8, 0.6], "hold_steps": 2.5}, r"hold_steps must be a whole number"),
    ({"targets": [0.8, 0.6], "hold_steps": -1}, r"hold_steps must be >= 0"),
]


@pytest.mark.parametrize("pruning, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_sizes_name_their_key_before_the_encoder_is_built(pruning, message):
    with pytest.raises(ValueError, match=message):
        PrunedSSLFrontend(arch=TINY_ARCH, pruning=pruning)
    with pytest.raises(ValueError, match=message):  # before any checkpoint is read
        PrunedSSLFrontend(checkpoint="/nonexistent/wav2vec_small.pt", pruning=pruning)


def test_sizes_of_joint_and_separate_budgets_and_presets():
    config = PruningConfig.from_dict({"targets": [0.8, 0.6, 0.4]})
    assert config.is_multi_size and config.sizes() == [{"total": 0.8}, {"total": 0.6}, {"total": 0.4}]
    assert config.effective_hold_steps == config.warmup_steps  # hold_steps: null
    assert PruningConfig.from_dict({"targets": [0.8, 0.6], "hold_steps": 7.0}).effective_hold_steps == 7
    separate = PruningConfig.from_dict({"cnn_targets": [0.7, 0.7], "transformer_targets": [0.8, 0.5]})
    assert separate.sizes() == [{"cnn": 0.7, "transformer": 0.8}, {"cnn": 0.7, "transformer": 0.5}]
    assert PruningConfig.from_dict({"transformer_targets": [0.8, 0.5]}).sizes() == [{"transformer": 0.8},
                                                                                   {"transformer": 0.5}]
    assert PruningConfig.from_dict({"target": 0.5}).sizes() == [{"total": 0.5}]
    assert not PruningConfig.from_dict({"target": 0.5}).is_multi_size
    # Sizes beside a preset replace its single target; the rest of the preset stays.
    preset = PruningConfig.from_dict({"preset": "hj_macs0.5", "targets": [0.8, 0.6]})
    assert preset.target is None and preset.sizes()[-1] == {"total": 0.6} and "ffn_layer" in preset.units
    assert PruningConfig.from_dict(config.to_dict()) == config
    assert size_name({"total": 0.8}) == "target0.80"
    assert size_name({"cnn": 0.7, "transformer": 0.5}) == "cnn0.70_transformer0.50"


def test_each_size_ramps_from_the_previous_one_then_holds():
    sizes = [{"total": 0.8}, {"total": 0.6}, {"total": 0.4}]
    assert [s.end for s in SizeSchedule(sizes, 10, 5, {"total": 1.0}).stages] == [None, None, None]
    schedule = SizeSchedule(sizes, warmup_steps=10, hold_steps=5, ramp_start={"total": 1.0}, ends=lambda: [15, 30])
    assert [(s.ramp_begin, s.ramp_end, s.hold_end) for s in schedule.stages] == [(0, 10, 15), (15, 25, 30),
                                                                                  (30, 40, 45)]
    assert schedule.recommended_steps == 45
    expected = {0: 1.0, 5: 0.9, 10: 0.8, 14: 0.8, 15: 0.8, 20: 0.7, 25: 0.6, 29: 0.6, 30: 0.6, 35: 0.5, 40: 0.4,
                45: 0.4, 1000: 0.4}
    for step, target in expected.items():
        assert schedule.targets_at(step)["total"] == pytest.approx(target), step
    assert [schedule.stage_at(s).index for s in (0, 14, 15, 29, 30, 1000)] == [0, 0, 1, 1, 2, 2]
    assert [schedule.holding(s) for s in (9, 10, 14, 15, 24, 25)] == [False, True, True, False, False, True]
    assert "ramp ends at step 25" in schedule.advice(20, schedule.stages[1])
    assert "train at least 45 optimizer steps" in schedule.advice(27, schedule.stages[1])
    assert "hold_steps" in schedule.advice(30, schedule.stages[1])
    # Without a ramp the target jumps; without a hold the next ramp starts at once.
    jump = SizeSchedule([{"total": 0.8}, {"total": 0.6}], 0, 0, {"total": 1.0}, ends=lambda: [0])
    assert [jump.targets_at(s)["total"] for s in (0, 1)] == [0.6, 0.6]


def test_a_hold_off_target_is_extended_by_at_most_hold_steps_and_later_stages_move():
    ends = [None, None]
    schedule = SizeSchedule([{"total": 0.8}, {"total": 0.6}, {"total": 0.4}], 10, 5, {"total": 1.0},
                            ends=lambda: ends)
    assert schedule.due(14, on_target=True) is None  # the hold lasts hold_steps first
    assert schedule.due(15, on_target=True).index == 0
    assert schedule.due(15, on_target=False) is None and schedule.due(19, on_target=False) is None
    assert schedule.due(20, on_target=False).index == 0  # extension used up
    # Before the snapshot the first size's stage stays open: its target holds.
    assert schedule.stage_at(18).index == 0 and schedule.targets_at(18)["total"] == pytest.approx(0.8)
    ends[0] = 18  # kept after step 18: the second ramp begins there
    assert [(s.ramp_begin, s.ramp_end, s.hold_end) for s in schedule.stages] == [(0, 10, 15), (18, 28, 33),
                                                                                  (33, 43, 48)]
    assert schedule.stage_at(17).index == 0 and schedule.stage_at(18).index == 1
    assert schedule.targets_at(23)["total"] == pytest.approx(0.7)
    assert schedule.recommended_steps == 48
    assert schedule.due(18, on_target=True) is None  # the second size's hold has not begun


class TinyModel(nn.Module):
    """An ESPnet-like model: a pruning frontend and a head after it."""

    def __init__(self, pruning):
        super().__init__()
        self.frontend = PrunedSSLFrontend(arch=TINY_ARCH, pruning=pruning)
        self.head = nn.Linear(3, 2)


PRUNING = {"targets": [0.8, 0.6], "warmup_steps": 3, "hold_steps": 2}


def steps(model, count, seed=0):
    """``count`` optimizer steps as ESPnet's step hook does them: move the weights and gates, then
    ``advance`` and ``take_due_snapshots``."""
    controller = model.frontend.controller
    generator = torch.Generator().manual_seed(seed + int(controller.step))
    for _ in range(count):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01 * torch.randn(p.shape, generator=generator))
        controller.regularization()
        controller.advance(0.1)
        controller.take_due_snapshots(model)


def test_the_state_at_the_end_of_each_hold_is_kept_and_survives_resume():
    torch.manual_seed(0)
    model = TinyModel(PRUNING)
    controller = model.frontend.controller
    controller.snapshots.allocate(model)
    keys_before = set(model.state_dict())
    assert any(".size_snapshots.size0.model.head.weight" in k for k in keys_before)
    assert controller.schedule_stats() == {"stage": 1.0, "holding": 0.0, "size_total": 0.8}
    steps(model, 4)  # in the first hold
    assert controller.schedule_stats() == {"stage": 1.0, "holding": 1.0, "size_total": 0.8}
    assert controller.snapshots.taken(0) == 0.0
    checkpoint = {k: v.clone() for k, v in model.state_dict().items()}  # what ESPnet saves
    # Step 5 ends the hold: the snapshot is taken there if the structure is on its target (a
    # tiny model moves in steps of several points: here it is held as if it were).
    controller.deterministic_ratios = lambda: dict(controller.current_targets())
    steps(model, 1)
    del controller.deterministic_ratios
    at_hold_end = {k: v.clone() for k, v in model.frontend.state_dict().items() if "size_snapshots" not in k}
    head_at_hold_end = model.head.weight.clone()
    assert controller.snapshots.info(0)["taken"] == 1.0 and controller.snapshots.info(0)["step"] == 5.0
    assert controller.schedule_stats()["stage"] == 2.0
    steps(model, 6)
    assert set(model.state_dict()) == keys_before  # the same keys before and after the snapshot
    snapshot = controller.snapshots.model_state(0)
    torch.testing.assert_close(snapshot["head.weight"], head_at_hold_end, rtol=0, atol=0)
    assert not torch.equal(snapshot["head.weight"], model.head.weight)  # training went on
    for key, value in at_hold_end.items():
        torch.testing.assert_close(snapshot[f"frontend.{key}"], value, rtol=0, atol=0)
    final = {k: v.clone() for k, v in model.state_dict().items()}

    # Resume from the checkpoint in the middle of the hold (strict, as ESPnet's resume loads it).
    resumed = TinyModel(PRUNING)
    resumed.frontend.controller.snapshots.allocate(resumed)
    resumed.load_state_dict(checkpoint)
    assert int(resumed.frontend.controller.step) == 4 and resumed.frontend.controller.snapshots.taken(0) == 0.0
    resumed.frontend.controller.deterministic_ratios = lambda: dict(resumed.frontend.controller.current_targets())
    steps(resumed, 1)
    del resumed.frontend.controller.deterministic_ratios
    steps(resumed, 6)
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=0, msg=key)

    # Loading a checkpoint without the snapshots into a training model is an error (strict resume).
    stripped = {k: v for k, v in checkpoint.items() if "size_snapshots" not in k}
    with pytest.raises(RuntimeError, match="Missing key.*size_snapshots"):
        resumed.load_state_dict(stripped)


def test_a_hold_off_target_is_extended_and_the_schedule_survives_resume():
    torch.manual_seed(0)
    model = TinyModel(PRUNING)
    controller = model.frontend.controller
    controller.snapshots.allocate(model)
    assert controller.deterministic_ratios()["total"] > 0.9  # far off 0.8: the hold is extended
    steps(model, 6)
    assert controller.snapshots.taken(0) == 0.0 and controller.schedule_stats()["stage"] == 1.0
    checkpoint = {k: v.clone() for k, v in model.state_dict().items()}
    steps(model, 1)  # step 7 = 5 + hold_steps: extension used up
    assert controller.snapshots.ends() == [7] and controller.schedule_stats()["stage"] == 2.0
    assert controller.current_targets()["total"] == pytest.approx(0.8)  # the next ramp begins at step 7
    steps(model, 1)
    assert controller.current_targets()["total"] == pytest.approx(0.8 - 0.2 / 3)
    resumed = TinyModel(PRUNING)
    resumed.frontend.controller.snapshots.allocate(resumed)
    resumed.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert resumed.frontend.controller.current_targets() == controller.current_targets()
    assert resumed.frontend.controller.schedule_stats() == controller.schedule_stats()
    # Resumed before the extension ended, it ends at the same step.
    again = TinyModel(PRUNING)
    again.frontend.controller.snapshots.allocate(again)
    again.load_state_dict(checkpoint)
    steps(again, 1)
    assert again.frontend.controller.snapshots.ends() == [7]


def test_export_takes_each_size_from_its_snapshot_and_refuses_files_without_it():
    torch.manual_seed(0)
    model = TinyModel(PRUNING)
    model.frontend.controller.snapshots.allocate(model)
    steps(model, 7)  # snapshot after step 7 (hold extended: the tiny model is off its target)
    early = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot_head = model.frontend.controller.snapshots.model_state(0)["head.weight"].clone()
    steps(model, 6)
    late = {k: v.clone() for k, v in model.state_dict().items()}

    # As build_model_from_file loads a model file: a fresh model (no optimizer), strict=False.
    def loaded(state):
        fresh = TinyModel(PRUNING)
        fresh.load_state_dict(state, strict=False)
        return fresh

    first = loaded(late)
    info = select_size(first, "late.pth", 0).to_json()
    assert info == {"index": 0, "name": "target0.80", "targets": {"total": 0.8}, "step": 7}
    torch.testing.assert_close(first.head.weight, snapshot_head, rtol=0, atol=0)
    assert first.frontend.controller.budgets == {"total": 0.8} and int(first.frontend.controller.step) == 7
    last = loaded(late)
    assert select_size(last, "late.pth", 1).to_json()["step"] == 13
    torch.testing.assert_close(last.head.weight, late["head.weight"], rtol=0, atol=0)

    before = {k: v for k, v in early.items()}
    before = {k: (torch.zeros_like(v) if k.endswith("size0.taken") else v) for k, v in before.items()}
    with pytest.raises(ValueError, match=r"does not hold the model state of size 1 \(target 0\.80\).*step 5, or "
                                         r"up to 7.*was saved before that step.*latest\.pth"):
        select_size(loaded(before), "early.pth", 0)
    with pytest.raises(ValueError, match=r"does not hold the last size"):
        select_size(loaded(before), "early.pth", 1)
    # ESPnet's average of a checkpoint from before the snapshot and one after it.
    averaged = {k: (v + before[k]) / 2 if v.is_floating_point() else v for k, v in late.items()}
    with pytest.raises(ValueError, match=r"averages checkpoints from before and after that step \(taken = 0\.5\)"):
        select_size(loaded(averaged), "valid.acc.ave.pth", 0)
    with pytest.raises(ValueError, match=r"this run has 2 sizes"):
        select_size(loaded(late), "late.pth", None)


def test_end_of_training_report_covers_every_size():
    controller = PruningController(tiny_config(), targets=[0.8, 0.6], warmup_steps=2, hold_steps=2)
    holder = nn.Module()
    holder.controller = controller
    controller.snapshots.allocate(holder)
    warnings = controller.size_warnings()
    assert len(warnings) == 2
    assert warnings[0].startswith("size 1 of 2 (target 0.80): pruning budget 'total' (macs) missed its target: "
                                  "training stopped at step 0, before this size's hold ended at step 4")
    assert "size 2 of 2 (target 0.60)" in warnings[1] and "ramp ends at step 6" in warnings[1]
    report = controller.sizes_report()
    assert [entry["taken"] for entry in report] == [0.0, 1.0]
    # A single-size controller has none of this.
    single = PruningController(tiny_config(), target=0.5)
    assert single.size_schedule is None and single.snapshots is None and single.schedule_stats() == {}
    assert single.size_warnings() == []
