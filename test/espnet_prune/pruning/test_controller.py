import pytest
import torch

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.pruning import multipliers as multipliers_module
from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.multipliers import GAP_SCALE, LAMBDA2_RATE_GROWTH, LAMBDA2_RATE_MAX, STALLED_STEPS
from espnet_prune.pruning.reports import RUN_LENGTH_PER_WARMUP
from espnet_prune.ssl import cost
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder
from test.espnet_prune.ssl.tiny import tiny_config

ALL_UNITS = ["conv", "head", "attn_layer", "interm", "ffn_layer"]


@pytest.fixture
def config():
    return tiny_config("wav2vec2", num_layers=3)


def structure_kept_by(config, masks):
    """The config of the encoder with the non-zero units of conv/head/interm masks."""
    return config.replace(
        conv_layers=[[int((m > 0).sum()), k, s] for m, (_, k, s) in zip(masks["conv"], config.conv_layers)],
        num_heads=[int((m > 0).sum()) for m in masks["head"]],
        ffn_dims=[int((m > 0).sum()) for m in masks["interm"]],
        head_dim=config.head_dim)


def set_log_alpha(controller, value):
    with torch.no_grad():
        for p in controller.gate_parameters():
            p.fill_(value)


def test_mask_shapes_follow_the_structure(config):
    controller = PruningController(config, units=ALL_UNITS, target=0.5)
    masks = controller()
    assert [m.shape[0] for m in masks["conv"]] == config.conv_channels
    assert [m.shape[0] for m in masks["head"]] == config.num_heads
    assert [m.shape[0] for m in masks["interm"]] == config.ffn_dims
    assert len(masks["attn_layer"]) == len(masks["ffn_layer"]) == config.num_layers
    # The encoder accepts them.
    encoder = SSLEncoder(config)
    hidden, _ = encoder(torch.randn(2, 4000), torch.tensor([4000, 3000]), masks)
    assert len(hidden) == config.num_layers + 1


def test_training_masks_are_sampled_and_eval_masks_are_deterministic(config):
    controller = PruningController(config, units=["head", "interm"], target=0.8)
    torch.manual_seed(0)
    first, second = controller()["interm"][0], controller()["interm"][0]
    assert not torch.equal(first, second)
    assert first.requires_grad
    controller.eval()
    assert torch.equal(controller()["interm"][0], controller()["interm"][0])


def test_open_gates_cost_the_dense_model_and_closed_gates_cost_less(config):
    controller = PruningController(config, units=ALL_UNITS, target=0.5)
    set_log_alpha(controller, 20.0)
    assert float(controller.expected_ratios()["total"].detach()) == pytest.approx(1.0, abs=1e-4)
    dense = cost.count_macs(config, 10.0)["total"]
    assert controller.dense_cost["total"] == pytest.approx(dense)
    set_log_alpha(controller, -20.0)
    # Only what no unit controls remains: positional conv, norms, projection biases ...
    assert float(controller.expected_ratios()["total"].detach()) < 0.1


def test_expected_cost_matches_exact_cost_of_the_deterministic_structure(config):
    """With saturated gates the expectation is the exact cost of the pruned structure."""
    controller = PruningController(config, units=["conv", "head", "interm"], metric="params", target=0.5)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in controller.gate_parameters():
            p.copy_(torch.where(torch.rand_like(p) < 0.6, 30.0, -30.0))
        for gate in controller.gates["conv"]:
            gate.log_alpha[0] = 30.0  # every CNN layer keeps a channel
    controller.eval()
    masks = controller()
    pruned = structure_kept_by(config, masks)
    expected = controller.expected_cost()
    exact = cost.count_params(pruned)
    for key in ("cnn", "transformer", "total"):
        assert float(expected[key].detach()) == pytest.approx(exact[key], rel=1e-5)
    assert exact["total"] == sum(p.numel() for p in SSLEncoder(pruned).parameters())


def test_target_ramps_linearly_during_warmup(config):
    controller = PruningController(config, target=0.4, warmup_steps=10)
    start = controller.ramp_start["total"]
    # The ramp starts at the deterministic structure, which costs what the gates are expected to
    # (init_keep_prob 0.99: products of two kept units cost ~0.98 of the dense ones).
    assert start == pytest.approx(controller.deterministic_ratios()["total"]) and 0.97 < start <= 1.0
    assert start == pytest.approx(float(controller.expected_ratios()["total"].detach()), abs=2e-3)
    assert controller.current_targets()["total"] == pytest.approx(start)
    for _ in range(5):
        controller.advance()
    assert controller.current_targets()["total"] == pytest.approx((start + 0.4) / 2)
    for _ in range(20):
        controller.advance()
    assert controller.current_targets()["total"] == pytest.approx(0.4)


def test_multipliers_move_by_clipped_gradient_ascent_without_gradients(config):
    controller = PruningController(config, target=0.5, warmup_steps=0)
    loss, stats = controller.regularization()
    loss.backward()
    gap = stats["deterministic_total"] - stats["target_total"]
    assert gap > 0.1
    assert all(p.grad is None for p in controller.lagrangian_parameters())
    assert all(p.grad is not None for p in controller.gate_parameters())
    controller.advance(0.1, lambda2_lr_scale=10.0)
    # A gap above GAP_SCALE moves both at their full rate.
    assert float(controller.lambda_1["total"]) == pytest.approx(0.1)
    assert float(controller.lambda_2["total"]) == pytest.approx(1.0)
    # A small negative gap: lambda1 steps back in proportion, lambda2 grows with its square.
    controller._last_gaps = {"total": -0.5 * GAP_SCALE}
    controller._last_expected_gaps = {"total": -0.5 * GAP_SCALE}
    controller.advance(0.1, lambda2_lr_scale=10.0)
    assert float(controller.lambda_1["total"]) == pytest.approx(0.05)
    assert float(controller.lambda_2["total"]) == pytest.approx(1.25)
    # A gap that closes since the previous step holds lambda1 (anti-windup); lambda2 still moves.
    controller._last_gaps = {"total": -0.2 * GAP_SCALE}
    controller._last_expected_gaps = {"total": -0.2 * GAP_SCALE}
    controller.advance(0.1, lambda2_lr_scale=10.0)
    assert float(controller.lambda_1["total"]) == pytest.approx(0.05)
    assert float(controller.lambda_2["total"]) == pytest.approx(1.25 + 0.04)
    # ... but not while it closes too slowly to vanish within CLOSING_STEPS steps.
    controller._last_gaps = {"total": -0.199 * GAP_SCALE}
    controller._last_expected_gaps = {"total": -0.199 * GAP_SCALE}
    controller.advance(0.1, lambda2_lr_scale=10.0)
    assert float(controller.lambda_1["total"]) == pytest.approx(0.05 - 0.1 * 0.199)
    controller.lambda_1["total"].fill_(0.05)
    # No regularization() since the last step: only the schedule moves.
    controller.advance(0.1)
    assert float(controller.lambda_1["total"]) == pytest.approx(0.05) and int(controller.step) == 5


def test_a_resumed_controller_holds_lambda1_exactly_as_an_unbroken_one(config):
    def step(controller, gap):
        controller._last_gaps = {"total": gap}
        controller._last_expected_gaps = {"total": gap}
        controller.advance(0.1)

    unbroken = PruningController(config, target=0.5, warmup_steps=0)
    step(unbroken, -0.5 * GAP_SCALE)
    saved = {key: value.clone() for key, value in unbroken.state_dict().items()}
    resumed = PruningController(config, target=0.5, warmup_steps=0)
    resumed.load_state_dict(saved)
    # The gap closes since the step before the checkpoint: both hold lambda1.
    for controller in (unbroken, resumed):
        step(controller, -0.2 * GAP_SCALE)
        assert float(controller.lambda_1["total"]) == pytest.approx(-0.05)
    # A checkpoint of an older version, without the previous gaps and lambda2's rate, still loads
    # (strictly): its first step after resuming moves lambda1 as if there were no step before,
    # and lambda2 at its full rate.
    saved["lambda2_rates"].fill_(4.0)
    resumed.load_state_dict(saved)
    assert float(resumed.lambda2_rates[0]) == 4.0
    del saved["previous_expected_gaps"], saved["lambda2_rates"]
    old = PruningController(config, target=0.5, warmup_steps=0)
    old.load_state_dict(saved)
    step(old, -0.2 * GAP_SCALE)
    assert float(old.lambda_1["total"]) == pytest.approx(-0.05 - 0.02)
    assert float(old.lambda2_rates[0]) == 1.0


def test_lambda2_step_grows_while_the_gap_is_stalled_and_shrinks_when_it_changes_sides(config):
    controller = PruningController(config, target=0.5, warmup_steps=0)

    def step(gap):
        lambda_2 = float(controller.lambda_2["total"])
        controller._last_gaps = {"total": gap}
        controller._last_expected_gaps = {"total": gap}
        controller.advance(0.1, lambda2_lr_scale=10.0)
        rate = float(controller.lambda2_rates[0])
        assert float(controller.lambda_2["total"]) - lambda_2 == pytest.approx(
            0.1 * 10.0 * rate * min((gap / GAP_SCALE) ** 2, 1.0), rel=1e-3)  # lambda2 is float32
        return rate

    assert step(0.05) == 1.0  # no step before: nothing to compare with
    assert step(0.05) == pytest.approx(LAMBDA2_RATE_GROWTH)  # stalled
    assert step(0.06) == pytest.approx(LAMBDA2_RATE_GROWTH ** 2)  # widening
    # Shrinking just too slowly to vanish within STALLED_STEPS steps counts as stalled ...
    assert step(0.06 * STALLED_STEPS / (STALLED_STEPS + 0.9)) == pytest.approx(LAMBDA2_RATE_GROWTH ** 3)
    # ... shrinking faster does not, and neither does a stalled gap below GAP_SCALE.
    assert step(0.04) == pytest.approx(LAMBDA2_RATE_GROWTH ** 3)
    assert step(0.5 * GAP_SCALE) == pytest.approx(LAMBDA2_RATE_GROWTH ** 3)
    assert step(0.6 * GAP_SCALE) == pytest.approx(LAMBDA2_RATE_GROWTH ** 3)
    for _ in range(400):
        rate = step(0.05)
    assert rate == LAMBDA2_RATE_MAX
    # Each change of sides halves it, down to 1.
    assert step(-0.05) == LAMBDA2_RATE_MAX / 2
    assert step(0.05) == LAMBDA2_RATE_MAX / 4
    for sign in (-1, 1, -1, 1, -1):
        rate = step(sign * 0.05)
    assert rate == 1.0
    # lambda1 keeps its fixed full-rate step throughout.
    lambda_1 = float(controller.lambda_1["total"])
    step(-0.05)
    assert float(controller.lambda_1["total"]) == pytest.approx(lambda_1 - 0.1)


def resisting_run(config, strength, steps, warmup_steps, lr=0.05):
    """Final deterministic ratio of a MACs 0.5 budget over ``steps`` steps of a toy task that
    resists pruning: it pays ``strength`` per gate for the mean keep probability of its units."""
    torch.manual_seed(0)
    controller = PruningController(config, units=["conv", "head", "interm"], target=0.5, warmup_steps=warmup_steps)
    gates = [module for module in controller.modules() if isinstance(module, HardConcreteGate)]
    optimiser = torch.optim.Adam(controller.parameter_groups(lr))
    for _ in range(steps):
        controller()
        loss, _ = controller.regularization()
        loss = loss - strength * torch.stack([gate.keep_prob().mean() for gate in gates]).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        controller.advance(lr)
    return controller.deterministic_ratios()["total"]


def test_a_budget_the_task_resists_is_reached_because_lambda2_step_grows(config, monkeypatch):
    """With a fixed multiplier step the run ends ~6 points above its target; the stalled gap
    makes lambda2's step grow, and the run ends on its target without overshooting it."""
    with monkeypatch.context() as fixed:
        fixed.setattr(multipliers_module, "LAMBDA2_RATE_GROWTH", 1.0)
        assert resisting_run(config, strength=5.0, steps=600, warmup_steps=300) > 0.54
    assert resisting_run(config, strength=5.0, steps=600, warmup_steps=300) == pytest.approx(0.5, abs=0.015)


def test_the_constraint_value_is_the_deterministic_structure_with_the_expected_gradient(config):
    # Sublayer gates only: at init the structure keeps every sublayer, the expectation 0.99 of each.
    controller = PruningController(config, units=["attn_layer", "ffn_layer"], metric="params", target=0.5)
    with torch.no_grad():
        controller.lambda_1["total"].fill_(1.0)
    loss, stats = controller.regularization()
    assert stats["deterministic_total"] != pytest.approx(stats["expected_total"], abs=1e-4)
    assert float(loss.detach()) == pytest.approx(stats["deterministic_total"] - stats["target_total"], rel=1e-5)
    loss.backward()
    expected = controller.expected_ratios()["total"]
    gates = controller.gate_parameters()
    reference = torch.autograd.grad(expected, gates)
    for gate, grad in zip(gates, reference):
        assert torch.allclose(gate.grad, grad)


def optimise(controller, steps, lr=0.05):
    optimiser = torch.optim.Adam(controller.parameter_groups(lr))
    for _ in range(steps):
        controller()  # sampling, as in training
        loss, stats = controller.regularization()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        controller.advance(lr)
    return stats


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_lagrangian_drives_the_expected_ratio_to_the_target(config, metric):
    torch.manual_seed(0)
    controller = PruningController(config, units=["conv", "head", "interm"], metric=metric, target=0.5,
                                   warmup_steps=100)
    stats = optimise(controller, 400)
    assert abs(stats["expected_total"] - 0.5) < 0.03
    assert stats["lambda1_total"] != 0.0


def test_separate_budgets_reach_both_targets(config):
    torch.manual_seed(0)
    controller = PruningController(config, units=["conv", "head", "interm"], cnn_target=0.6,
                                   transformer_target=0.4, warmup_steps=100)
    stats = optimise(controller, 400)
    assert abs(stats["expected_cnn"] - 0.6) < 0.03
    assert abs(stats["expected_transformer"] - 0.4) < 0.03


def test_deterministic_mask_of_a_converged_controller_realises_the_target(config):
    torch.manual_seed(0)
    controller = PruningController(config, units=["conv", "head", "interm"], metric="params", target=0.5,
                                   warmup_steps=50)
    optimise(controller, 400)
    controller.eval()
    masks = controller()
    pruned = structure_kept_by(config, masks)
    ratio = cost.count_params(pruned)["total"] / cost.count_params(config)["total"]
    assert abs(ratio - 0.5) < 0.08


def undecided_sublayer(metric, fine_kept_prob=0.6, seed=0):
    """A controller whose fine units are decided (kept with probability ``fine_kept_prob``) and
    whose attention sublayer gate is undecided: layers 0, 1 kept, layer 2 at keep probability 0.5."""
    # The demo's encoder: an attention sublayer is ~11 % of the parameters, ~5 % of the MACs.
    config = tiny_config("wav2vec2", num_layers=3, embed_dim=96, ffn_dims=192,
                         conv_layers=[[64, 10, 5]] + [[64, 3, 2]] * 4 + [[64, 2, 2]] * 2)
    controller = PruningController(config, units=ALL_UNITS, metric=metric, target=0.5, reference_seconds=2.0)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in controller.gate_parameters():
            p.copy_(torch.where(torch.rand_like(p) < fine_kept_prob, 30.0, -30.0))
        for gate in controller.gates["conv"]:
            gate.log_alpha[0] = 30.0
        controller.gates["ffn_layer"].log_alpha.fill_(30.0)
        attn = controller.gates["attn_layer"]
        attn.log_alpha.copy_(torch.tensor([30.0, 30.0, attn._shift]))  # keep probabilities 1, 1, 0.5
        controller.gates["head"]["2"].log_alpha.fill_(30.0)
    return config, controller


def exported_ratio(config, controller, metric):
    """Ratio of the physically pruned encoder (what export writes) built from the eval masks."""
    controller.eval()
    with torch.no_grad():
        compact = prune_encoder(SSLEncoder(config).eval(), controller()).config
    measure = cost.count_macs if metric == "macs" else cost.count_params
    args = (2.0,) if metric == "macs" else ()
    return measure(compact, *args)["total"] / measure(config, *args)["total"]


@pytest.mark.parametrize("metric", ["macs", "params"])
@pytest.mark.parametrize("fine_kept_prob", [0.6, 1.0])
def test_an_undecided_sublayer_costs_in_the_structure_what_it_costs_in_expectation(metric, fine_kept_prob):
    """Rounding gate by gate keeps the undecided sublayer wholly or not at all, ~half a sublayer
    away from its expected cost; the budget-matching rounding moves fine units (or, with every fine
    unit kept, the sublayer and some heads) so that export keeps the expected ratio."""
    config, controller = undecided_sublayer(metric, fine_kept_prob)
    expected = float(controller.expected_ratios()["total"].detach())
    per_gate = controller.budget_ratios(controller._cost(controller.rounded_counts()))["total"]
    assert abs(per_gate - expected) > 0.02  # the defect this guards against
    deterministic = controller.deterministic_ratios()["total"]
    assert deterministic == pytest.approx(expected, abs=0.005)
    assert exported_ratio(config, controller, metric) == pytest.approx(deterministic, abs=1e-9)


def test_the_plan_never_trades_a_decided_sublayer_for_a_closer_budget_match():
    """Separate budgets; every head gate has one head at keep probability ~0.45, which no fine unit
    can absorb (the removed FFN units are decided), and the FFN sublayers are kept with p ~0.99.
    Removing one FFN and adding heads back would match the expected ratio better; the plan must
    keep the FFNs and miss by what is left of the heads' rounding."""
    config = tiny_config("wav2vec2", num_layers=3, embed_dim=96, ffn_dims=192,
                         conv_layers=[[64, 10, 5]] + [[64, 3, 2]] * 4 + [[64, 2, 2]] * 2)
    controller = PruningController(config, units=ALL_UNITS, metric="macs", cnn_target=0.9,
                                   transformer_target=0.9, reference_seconds=5.0)
    with torch.no_grad():
        for p in controller.gate_parameters():
            p.fill_(30.0)
        controller.gates["ffn_layer"].log_alpha.fill_(4.8)
        for layer in range(3):
            controller.gates["interm"][str(layer)].log_alpha[170:] = -30.0
            head = controller.gates["head"][str(layer)]
            head.log_alpha[3] = head._shift - 0.2
    ffn_keep = controller.gates["ffn_layer"].keep_prob()
    assert bool((ffn_keep > 0.98).all()) and bool((ffn_keep < 1.0).all())
    counts = controller.deterministic_counts()
    assert counts["ffn_layer"] == [1, 1, 1] and counts["interm"] == [170, 170, 170]
    expected = float(controller.expected_ratios()["transformer"].detach())
    found = controller.deterministic_ratios()["transformer"]
    assert 0.001 < abs(found - expected) < 0.03


def test_the_deterministic_plan_follows_the_gates(config):
    config, controller = undecided_sublayer("params")
    before = controller.deterministic_ratios()["total"]
    assert controller.deterministic_ratios()["total"] == before  # cached, same answer
    with torch.no_grad():
        controller.gates["interm"]["0"].log_alpha.fill_(-30.0)  # an optimizer step, say
    after = controller.deterministic_ratios()["total"]
    assert after == pytest.approx(float(controller.expected_ratios()["total"].detach()), abs=0.005)
    assert after < before - 0.02


def test_parameter_group_holds_the_gates_and_not_the_multipliers(config):
    controller = PruningController(config, units=ALL_UNITS, cnn_target=0.5, transformer_target=0.5)
    (gates,) = controller.parameter_groups(0.02)
    assert gates["lr"] == 0.02 and gates["weight_decay"] == 0.0
    grouped = sorted(id(p) for p in gates["params"])
    multipliers = [id(p) for p in controller.lagrangian_parameters()]
    assert len(multipliers) == 4
    assert sorted(grouped + multipliers) == sorted(id(p) for p in controller.parameters())
    assert all(p.requires_grad for p in gates["params"])
    assert not any(p.requires_grad for p in controller.lagrangian_parameters())


def test_budget_report_and_warning_name_the_budget_target_and_remedy(config):
    controller = PruningController(config, units=["conv", "head", "interm"], target=0.5, warmup_steps=100)
    for _ in range(40):
        controller.advance()
    report = controller.budget_report()["total"]
    assert not report["reached"] and report["target"] == 0.5 and report["deterministic"] > 0.9
    (warning,) = controller.budget_warnings()
    assert "'total'" in warning and "0.500" in warning and "step 40 of warmup_steps 100" in warning
    assert f"at least {int(RUN_LENGTH_PER_WARMUP * 100)} optimizer steps" in warning
    set_log_alpha(controller, -20.0)
    with torch.no_grad():
        for gate in controller.gates["conv"]:
            gate.log_alpha.fill_(20.0)
    assert controller.budget_warnings()  # far below the target now


def test_a_structure_on_its_targets_reaches_them_and_undecided_units_are_counted(config):
    torch.manual_seed(1)
    decided = PruningController(config, units=["conv", "head", "interm"], cnn_target=0.5, transformer_target=0.5)
    with torch.no_grad():
        for p in decided.gate_parameters():
            p.copy_(torch.where(torch.rand_like(p) < 0.6, 30.0, -30.0))
        for gate in decided.gates["conv"]:
            gate.log_alpha[0] = 30.0
    ratios = decided.deterministic_ratios()
    on_target = PruningController(config, units=["conv", "head", "interm"], cnn_target=ratios["cnn"] + 0.01,
                                  transformer_target=ratios["transformer"] - 0.01, warmup_steps=10)
    on_target.load_state_dict(decided.state_dict())
    for _ in range(20):
        on_target.advance()
    assert on_target.budget_warnings() == [] and on_target.undecided_units() == {}
    assert all(entry["reached"] and entry["advice"] is None for entry in on_target.budget_report().values())
    with torch.no_grad():
        on_target.gates["head"]["1"].log_alpha[:2] = 0.0  # keep probability ~0.83
    assert on_target.undecided_units() == {"head.1": 2}


@pytest.mark.parametrize("kwargs, message", [
    (dict(units=["conv", "neurons"], target=0.5), "Unknown pruning unit"),
    (dict(units=[], target=0.5), "at least one"),
    (dict(metric="flops", target=0.5), "Unknown pruning metric"),
    (dict(target=0.0), r"\(0, 1\]"),
    (dict(target=1.5), r"\(0, 1\]"),
    (dict(cnn_target=-0.1), "cnn_target"),
    (dict(target=0.5, cnn_target=0.5), "exclusive"),
    (dict(), "needs a budget"),
    (dict(units=["head"], cnn_target=0.5), "'conv' unit"),
    (dict(units=["conv"], transformer_target=0.5), "Transformer unit"),
    (dict(target=0.5, warmup_steps=-1), "warmup_steps"),
])
def test_bad_configuration_is_rejected(config, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruningController(config, **kwargs)


def test_a_target_the_gated_units_cannot_reach_is_rejected_before_training(config):
    transformer_only = ["head", "attn_layer", "interm", "ffn_layer"]
    floor = PruningController(config, units=transformer_only, target=0.99).minimum_ratios()["total"]
    dense = cost.count_macs(config, 10.0, cost.structure_counts(config))  # the default reference_seconds
    assert floor == pytest.approx(float(dense["cnn"] + dense["pos_conv"]) / float(dense["total"]), abs=0.02)
    with pytest.raises(ValueError, match=r"budget 'total' \(macs\) target 0.* is out of reach.*gate more units"):
        PruningController(config, units=transformer_only, target=round(floor + 0.01, 3))
    with pytest.raises(ValueError, match=r"budget 'transformer' \(macs\) target 0.1 is out of reach"):
        PruningController(config, units=["conv", "head"], cnn_target=0.5, transformer_target=0.1)
    with pytest.raises(ValueError, match=r"target 0.3 is out of reach"):  # the last of several sizes
        PruningController(config, units=transformer_only, targets=[round(floor + 0.1, 2), 0.3])
    PruningController(config, units=transformer_only, target=round(floor + 0.03, 3))


def test_the_out_of_reach_error_suggests_only_units_not_yet_gated(config):
    def message(**kwargs):
        with pytest.raises(ValueError, match="out of reach") as error:
            PruningController(config, **kwargs)
        return str(error.value)

    floor = PruningController(config, units=["conv", "head", "interm"], target=0.99).minimum_ratios()["total"]
    text = message(units=["conv", "head", "interm"], target=round(floor + 0.01, 3))
    assert text.endswith("or gate more units (add attn_layer, ffn_layer to units)"), text
    text = message(units=["head", "interm"], transformer_target=0.01)
    assert text.endswith("or gate more units (add attn_layer, ffn_layer to units)"), text  # conv lowers no Transformer
    text = message(units=["conv", "head"], cnn_target=0.01)
    assert text.endswith("(units already gates every unit of this encoder that counts in budget 'cnn')"), text
    every = ["conv", "head", "attn_layer", "interm", "ffn_layer"]
    floor = PruningController(config, units=every, target=0.99).minimum_ratios()["total"]
    text = message(units=every, target=round(floor + 0.01, 3))
    assert "gate more units" not in text and "already gates every unit" in text, text


def test_the_run_length_advice_follows_the_settings_also_without_a_training_step():
    """After the recommended run length, a budget missed with ``warmup_steps x reg_lr`` below the
    metric's minimum is blamed on that product; the advice reads ``reg_lr`` from the settings, so a
    controller loaded from a model file (export: no optimizer step in this process) gives it too."""
    from espnet_prune.pruning.metrics import MIN_WARMUP_TIMES_LR

    for metric in ("macs", "params"):
        reg_lr = MIN_WARMUP_TIMES_LR[metric] / 100 / 2  # half the minimum over 100 warm-up steps
        trained = PruningController(tiny_config(), target=0.5, metric=metric, warmup_steps=100, reg_lr=reg_lr)
        trained.step.fill_(int(RUN_LENGTH_PER_WARMUP * 100))
        loaded = PruningController(tiny_config(), target=0.5, metric=metric, warmup_steps=100, reg_lr=reg_lr)
        loaded.load_state_dict(trained.state_dict())
        for controller in (trained, loaded):
            (warning,) = controller.budget_warnings()
            assert f"warmup_steps x reg_lr = {100 * reg_lr:g} is below {MIN_WARMUP_TIMES_LR[metric]:g}" in warning
        fast = PruningController(tiny_config(), target=0.5, metric=metric, warmup_steps=100, reg_lr=reg_lr * 4)
        fast.load_state_dict(trained.state_dict())
        (warning,) = fast.budget_warnings()
        assert "the gates did not settle: train longer after the ramp" in warning


def test_the_defaults_and_the_demo_follow_the_run_length_rule():
    """The default settings, the demo's and the recipe configs' train at least
    ``RUN_LENGTH_PER_WARMUP x warmup_steps`` steps with ``warmup_steps x reg_lr`` above the minimum."""
    from pathlib import Path

    import yaml

    from espnet_prune.demo.settings import PARAMS_REG_LR, DemoSettings
    from espnet_prune.pruning.config import PruningConfig
    from espnet_prune.pruning.metrics import MIN_WARMUP_TIMES_LR

    warmup, reg_lr = PruningConfig.defaults()["warmup_steps"], PruningConfig.defaults()["reg_lr"]
    assert warmup * reg_lr >= max(MIN_WARMUP_TIMES_LR.values())
    demo = DemoSettings()
    assert demo.finetune_steps >= RUN_LENGTH_PER_WARMUP * demo.prune_warmup_steps
    for task in ("asr", "slu"):
        conf = Path(__file__).parents[3] / "egs2" / "espeak_demo" / f"{task}1" / "conf"
        conf = conf / f"train_{task}_pruned_ssl.yaml"
        conf_reg_lr = yaml.safe_load(conf.read_text())["frontend_conf"]["pruning"]["reg_lr"]
        assert demo.prune_warmup_steps * conf_reg_lr >= MIN_WARMUP_TIMES_LR["macs"]
    assert demo.prune_warmup_steps * PARAMS_REG_LR >= MIN_WARMUP_TIMES_LR["params"]


def test_one_multiplier_step_is_a_function_of_the_gaps_and_the_rate():
    """``multiplier_step`` alone: lambda2's rate grows while the gap is stalled or widens, halves
    (not below 1) when it changes sides, and stops at its maximum; lambda1 is held while the gap
    closes fast enough, and moves by the clipped, scaled gap otherwise."""
    from espnet_prune.pruning.multipliers import CLOSING_STEPS, LAMBDA2_RATE_SHRINK, multiplier_step

    def rate_after(gap, before, rate=1.0):
        return multiplier_step(gap, gap, before, rate, 0.1, 10.0).rate

    assert rate_after(0.05, float("nan")) == 1.0  # no step before
    assert rate_after(0.05, 0.05) == pytest.approx(LAMBDA2_RATE_GROWTH)  # stalled
    assert rate_after(0.06, 0.05) == pytest.approx(LAMBDA2_RATE_GROWTH)  # widening
    slow = 0.05 * STALLED_STEPS / (STALLED_STEPS - 0.5)  # shrinking too slowly to vanish in time
    assert rate_after(0.05, slow) == pytest.approx(LAMBDA2_RATE_GROWTH)
    assert rate_after(0.05, 0.06) == 1.0  # shrinking fast enough
    assert rate_after(0.5 * GAP_SCALE, 0.5 * GAP_SCALE) == 1.0  # stalled, but below GAP_SCALE
    assert rate_after(0.05, 0.05, LAMBDA2_RATE_MAX) == LAMBDA2_RATE_MAX
    assert rate_after(-0.05, 0.05, 8.0) == 8.0 * LAMBDA2_RATE_SHRINK
    assert rate_after(-0.05, 0.05, 1.5) == 1.0
    step = multiplier_step(-0.5 * GAP_SCALE, -0.5 * GAP_SCALE, float("nan"), 2.0, 0.1, 10.0)
    assert step.lambda_1 == pytest.approx(-0.05) and step.lambda_2 == pytest.approx(0.1 * 2.0 * 10.0 * 0.25)
    assert multiplier_step(3.0, 3.0, float("nan"), 1.0, 0.1, 10.0)[:2] == pytest.approx((0.1, 1.0))  # clipped
    closing = 0.02 * (1 + 1.5 / CLOSING_STEPS)  # the gap shrinks by more than 1/CLOSING_STEPS of itself
    assert multiplier_step(0.02, 0.02, closing, 1.0, 0.1, 10.0).lambda_1 is None
    assert multiplier_step(0.02, 0.02, 0.02 * (1 + 0.5 / CLOSING_STEPS), 1.0, 0.1, 10.0).lambda_1 == 0.1
