"""What ESPnet's models and optimizer builder need to train with a pruning frontend.

* :class:`PruningLossMixin` adds the controller's Lagrangian to a model's loss and its
  statistics to ESPnet's reporter (``train.log``, tensorboard).
* :func:`build_optimizer` gives gates and Lagrange multipliers their own parameter
  group (``reg_lr``, no weight decay) in whatever optimizer the YAML names, and moves
  the target schedule on each real optimizer step (so ``accum_grad`` and AMP's skipped
  steps are counted right).
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from espnet_prune.pruning.controller import PruningController


def find_controller(model: nn.Module) -> Optional[PruningController]:
    """The model's frontend pruning controller, or ``None``."""
    frontend = getattr(model, "frontend", None)
    return getattr(frontend, "controller", None)


class PruningLossMixin:
    """Mixin for ESPnet models: ``loss += Lagrangian`` in training, with reporter stats."""

    def add_pruning_loss(self, loss: Tensor, stats: Dict[str, Optional[Tensor]]) -> Tensor:
        controller = find_controller(self)
        if controller is None or not self.training:
            return loss
        regularization, values = controller.regularization()
        stats["loss_task"] = loss.detach()
        stats["loss_prune"] = regularization.detach()
        for name, value in values.items():
            stats[f"prune_{name}"] = torch.tensor(value, device=loss.device)
        loss = loss + regularization
        stats["loss"] = loss.detach()
        return loss


def build_optimizer(optim_class, model: nn.Module, optim_conf: Dict, reg_lr: float) -> torch.optim.Optimizer:
    """An optimizer with two groups: the model's weights (``optim_conf``) and the pruning
    parameters (``lr=reg_lr``, ``weight_decay=0``); the controller advances on each step."""
    controller = find_controller(model)
    pruning = {id(p) for p in controller.parameters()}
    weights = [p for p in model.parameters() if id(p) not in pruning]
    groups: List[Dict] = [
        {"params": weights},
        {"params": list(controller.parameters()), "lr": reg_lr, "weight_decay": 0.0},
    ]
    optimizer = optim_class(groups, **optim_conf)
    optimizer.register_step_post_hook(lambda *_: controller.advance())
    return optimizer
