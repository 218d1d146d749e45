"""What ESPnet's models and optimizer builder need to train with a pruning frontend.

* :class:`PruningLossMixin` adds the controller's Lagrangian to a model's loss and its
  statistics to ESPnet's reporter (``train.log``, tensorboard).
* :func:`build_optimizer` gives the gates their own parameter group (constant ``reg_lr``,
  no weight decay) in whatever optimizer the YAML names, and moves the Lagrange
  multipliers and the target schedule on each real optimizer step (so ``accum_grad`` and
  AMP's skipped steps are counted right).
* :func:`migrate_optimizer_state` lets ``--resume`` read optimizer states saved while the
  multipliers were still in optimizer groups, and explains any other layout mismatch.
* :func:`report_budgets` logs, at the end of ESPnet's ``Trainer.run``, where every budget
  ended, with a WARNING for each that missed its target (so ``train.log`` says so).
"""

import logging
from typing import Dict, List, Optional

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from torch import Tensor, nn

from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.reports import log_budgets


def find_controller(model: nn.Module) -> Optional[PruningController]:
    """The model's pruning controller: the whole model's (``model_conf.pruning``), else the
    frontend's (``frontend_conf.pruning``), else ``None``."""
    controller = getattr(model, "controller", None)
    if isinstance(controller, PruningController):
        return controller
    frontend = getattr(model, "frontend", None)
    return getattr(frontend, "controller", None)


class PruningLossMixin:
    """Mixin for ESPnet models: ``loss += Lagrangian`` in training, with reporter stats; with a
    whole-model controller (``self.controller``, whose part has sub-parts named like the model's
    modules), every module gets its masks before each forward and when the model turns to eval
    mode (so ``Speech2Text``, which calls ``encode`` and the decoder directly, decodes the
    deterministic structure)."""

    def apply_pruning_masks(self) -> None:
        """Hand each gated module its masks (samples in training, deterministic in eval)."""
        controller = getattr(self, "controller", None)
        if not isinstance(controller, PruningController):
            return
        for name, masks in controller().items():
            getattr(self, name).set_masks(masks)

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.apply_pruning_masks()
        return self

    def add_pruning_loss(self, loss: Tensor, stats: Dict[str, Optional[Tensor]]) -> Tensor:
        """Add the controller's Lagrangian to ``loss`` and its statistics to ``stats``.

        Args:
            loss: the task loss as ESPnet's model returns it, ``(1,)`` after
                ``force_gatherable`` (a 0-dim loss is accepted too).
            stats: the model's reporter statistics, modified in place.
        Returns:
            ``loss + Lagrangian``, of ``loss``'s shape. Every added statistic has the shape
            ESPnet's ``force_gatherable`` gives the model's own, ``(1,)``: with ``ngpu > 1``
            (DataParallel gathers them to ``(ngpu,)``) and under DDP, ESPnet's
            ``recursive_average`` weights each statistic with the ``(ngpu,)`` / ``(1,)`` batch
            weight and needs that shape.
        """
        controller = find_controller(self)
        if controller is None or not self.training:
            return loss
        regularization, values = controller.regularization()
        added = {"loss_task": loss.detach(), "loss_prune": regularization.detach()}
        values.update(controller.schedule_stats())  # several sizes: prune_stage, prune_holding, prune_size_*
        added.update({f"prune_{name}": float(value) for name, value in values.items()})
        loss = loss + regularization
        added["loss"] = loss.detach()
        stats.update(force_gatherable(added, loss.device))
        return loss


def build_optimizer(optim_class, model: nn.Module, optim_conf: Dict) -> torch.optim.Optimizer:
    """An optimizer whose first group holds the model's weights (``optim_conf``) and whose
    other group holds the gates (see ``PruningController.parameter_groups``).

    The gates keep their learning rate whatever the YAML's scheduler does to the weights'
    (a step pre-hook restores it). After each step the controller moves its Lagrange
    multipliers (at ``reg_lr``, lambda2 ``lambda2_lr_scale`` times faster, both from the
    controller's :class:`~espnet_prune.pruning.config.PruningConfig`; they are in no optimizer
    group) and its target schedule.
    """
    controller = find_controller(model)
    reg_lr, lambda2_lr_scale = controller.pruning.reg_lr, controller.pruning.lambda2_lr_scale
    pruning_groups = controller.parameter_groups(reg_lr)
    pruning = {id(p) for p in controller.parameters()}
    weights = [p for p in model.parameters() if id(p) not in pruning]
    optimizer = optim_class([{"params": weights}] + pruning_groups, **optim_conf)
    pruning_lrs = [group["lr"] for group in pruning_groups]

    def restore_pruning_lrs(optimizer, args, kwargs):
        for group, lr in zip(optimizer.param_groups[1:], pruning_lrs):
            group["lr"] = lr

    optimizer.register_step_pre_hook(restore_pruning_lrs)
    if controller.snapshots is not None:
        # Several sizes: the snapshots' keys exist from the first checkpoint on (ESPnet's averaging
        # needs the same keys in every file); each is filled when its size's hold ends.
        controller.snapshots.allocate(model)

    def after_step(*_):
        controller.advance(reg_lr, lambda2_lr_scale)
        controller.take_due_snapshots(model)

    optimizer.register_step_post_hook(after_step)
    num_gates, num_budgets = len(controller.gate_parameters()), len(controller.budgets)
    optimizer.register_load_state_dict_pre_hook(
        lambda optimizer, state: migrate_optimizer_state(optimizer, state, num_gates, num_budgets))
    return optimizer


def migrate_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict, num_gates: int,
                            num_budgets: int) -> Optional[Dict]:
    """Adapt an optimizer state saved before the multipliers left the optimizer (``--resume``).

    Checkpoints written before the controller moved the Lagrange multipliers itself hold three
    parameter groups: the weights, the gates followed by every budget's lambda1, and every
    budget's lambda2. This optimizer has two (weights, gates). Such a state is migrated: the
    weights' and gates' states are kept, the multipliers' optimizer states dropped (their values
    are in the model state and continue from there). Any other difference in the groups raises a
    ``ValueError`` that says what was found (instead of torch's bare size mismatch).

    Returns:
        the migrated state dict, or ``None`` when ``state`` already fits (loaded unchanged).
    """
    saved = [len(group["params"]) for group in state["param_groups"]]
    current = [len(group["params"]) for group in optimizer.param_groups]
    if saved == current:
        return None
    if (len(saved) == 3 and len(current) == 2 and saved[0] == current[0] and current[1] == num_gates
            and saved[1] == num_gates + num_budgets and saved[2] == num_budgets):
        weights, gates, _ = state["param_groups"]
        gates = {**gates, "params": gates["params"][:num_gates]}
        keep = set(weights["params"]) | set(gates["params"])
        logging.info("Resuming from an optimizer state with the Lagrange multipliers in parameter groups "
                     "(before espnet_prune moved them itself): their %d optimizer states are dropped, their "
                     "values continue from the model state", 2 * num_budgets)
        return {"state": {key: value for key, value in state["state"].items() if key in keep},
                "param_groups": [weights, gates]}
    raise ValueError(
        f"Cannot resume: the checkpoint's optimizer state has parameter groups of {saved} parameters, but this "
        f"model's optimizer has {current} (the model's weights, then the {num_gates} pruning gates; the "
        f"{num_budgets} budget(s)' Lagrange multipliers are in no group). The checkpoint was written for another "
        "model, frontend_conf.pruning (units, layer, budgets) or optimizer layout; resume with the config that "
        "wrote it, or train from the start in a new output directory")


def report_budgets(model: nn.Module) -> List[str]:
    """Log where the model's pruning budgets ended (called when ESPnet's training ends).

    One INFO line per budget (of every size) that is within ``BUDGET_TOLERANCE`` of its target,
    one WARNING per budget that is not (see :func:`espnet_prune.pruning.reports.log_budgets`).

    Returns:
        The warning sentences (empty without pruning or when every budget is reached).
    """
    controller = find_controller(model)
    if controller is None:
        return []
    return log_budgets(controller)
