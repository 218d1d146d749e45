"""Resuming through ESPnet's ``Trainer.resume`` from optimizer states of another layout: the
multipliers' former parameter groups are migrated, any other mismatch is a clear error."""

import pytest
import torch

from espnet_prune import register
from test.espnet_prune.asr.recipe_steps import training_config
from test.espnet_prune.asr.test_pruned_ssl_frontend import build_asr_model

BUDGETS = {"cnn_target": 0.6, "transformer_target": 0.5}  # two budgets: two lambda1, two lambda2


def build(pruning=None):
    register()
    from espnet2.tasks.asr import ASRTask

    torch.manual_seed(0)
    model = build_asr_model(training_config(pruning or {**BUDGETS, "warmup_steps": 10}))
    args = ASRTask.get_parser().parse_args(["--output_dir", "unused", "--optim", "adam"])
    (optimizer,) = ASRTask.build_optimizers(args, model)
    return model, optimizer


def old_layout_checkpoint(path, model):
    """A checkpoint as written before the multipliers left the optimizer: groups [weights,
    gates + lambda1, lambda2], an Adam step taken on all of them."""
    controller = model.frontend.controller
    pruning = {id(p) for p in controller.parameters()}
    weights = [p for p in model.parameters() if id(p) not in pruning]
    lambda_1, lambda_2 = list(controller.lambda_1.values()), list(controller.lambda_2.values())
    for p in lambda_1 + lambda_2:
        p.requires_grad_(True)
    old = torch.optim.Adam([{"params": weights}, {"params": controller.gate_parameters() + lambda_1, "lr": 0.02},
                            {"params": lambda_2, "lr": 0.2}])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    for p in lambda_1 + lambda_2:
        p.requires_grad_(False)
        p.grad = None
    with torch.no_grad():
        controller.lambda_1["cnn"].fill_(0.7)
    torch.save({"model": model.state_dict(), "reporter": {"epoch": 1}, "optimizers": [old.state_dict()],
                "schedulers": [None], "scaler": None}, path)
    return old


class Reporter:
    def load_state_dict(self, state):
        self.state = state


def test_an_optimizer_state_with_the_multipliers_in_groups_resumes(tmp_path):
    from espnet2.train.trainer import Trainer

    saved_model, _ = build()
    old = old_layout_checkpoint(tmp_path / "checkpoint.pth", saved_model)
    model, optimizer = build()
    Trainer.resume(tmp_path / "checkpoint.pth", model, Reporter(), [optimizer], [None], None)
    controller = model.frontend.controller
    assert float(controller.lambda_1["cnn"]) == pytest.approx(0.7)  # the value continues
    weights, gates = optimizer.param_groups
    assert [id(p) for p in gates["params"]] == [id(p) for p in controller.gate_parameters()]
    # The gates' Adam moments are those saved; the multipliers have none.
    old_gates = old.param_groups[1]["params"][:len(gates["params"])]
    for new, saved in zip(gates["params"], old_gates):
        assert torch.equal(optimizer.state[new]["exp_avg"], old.state[saved]["exp_avg"])
    assert not any(p in optimizer.state for p in controller.lagrangian_parameters())
    assert len(optimizer.state) == len(weights["params"]) + len(gates["params"])
    # ... and training goes on: a step moves the multipliers by the controller's own rule.
    loss, _ = controller.regularization()
    loss.backward()
    optimizer.step()
    assert int(controller.step) == 1


def test_an_optimizer_state_of_another_layout_is_a_clear_error(tmp_path):
    from espnet2.train.trainer import Trainer

    other, other_optimizer = build({"target": 0.5, "units": ["conv", "head"], "warmup_steps": 10})
    torch.save({"model": other.state_dict(), "reporter": {}, "optimizers": [other_optimizer.state_dict()],
                "schedulers": [None], "scaler": None}, tmp_path / "checkpoint.pth")
    model, optimizer = build({"target": 0.5, "units": ["conv", "head"], "warmup_steps": 10})
    with torch.no_grad():
        # Same model, but the saved state lacks the gates' group (as from a dense run).
        state = other_optimizer.state_dict()
        state["param_groups"] = state["param_groups"][:1]
    with pytest.raises(ValueError, match=r"Cannot resume.*groups of \[\d+\] parameters.*pruning gates"):
        optimizer.load_state_dict(state)
    # Through ESPnet's resume, the unchanged layout loads as before.
    Trainer.resume(tmp_path / "checkpoint.pth", model, Reporter(), [optimizer], [None], None)
