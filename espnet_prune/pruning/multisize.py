"""Several model sizes from one HJ-Pruning run: the stage schedule and the size snapshots.

With ``frontend_conf.pruning.targets: [0.8, 0.6, 0.4]`` (or ``cnn_targets`` /
``transformer_targets``) one fine-tuning run moves through the sizes in order. Stage k
(0-based, ``w = warmup_steps``, ``h = hold_steps``) covers the optimizer steps
``[k (w + h), (k + 1)(w + h))``: its target ramps linearly from the previous size's target
(the first from where the deterministic structure starts, 1.0) to size k's over ``w`` steps,
then stays there for ``h`` steps while the task loss recovers. The last size is held from the
end of its ramp until training ends; recommended run length ``K (w + h)`` optimizer steps.
A hold that ends with the exported structure more than ``BUDGET_TOLERANCE`` off its targets is
extended until it is on them, by at most ``h`` steps, and the later stages move by as much
(the tiny models of the tests move in steps of a few points around the target).

**Mechanism: snapshots of the whole model**, not nested masks. At the end of each hold
(after optimizer step ``(k + 1)(w + h)`` without extensions) the state of the whole ESPnet model (frontend with
its gates, encoder, decoder, CTC) is copied into :class:`SizeSnapshots`; the last size is the
model itself at the end of training. Nested masks over shared weights would keep one set of
weights that the later, smaller stages go on adapting (and with them the ESPnet encoder and
decoder after the frontend), so a larger size cut from the final checkpoint would no longer be
the model that was held at that size. A snapshot is exactly that model, at the price of
memory: one copy of the model per size but the last, on the CPU (never on the GPU), and
checkpoint files that many times larger.

The snapshots are part of the model's ``state_dict`` (the controller's ``size_snapshots``
entries), so ESPnet's ``checkpoint.pth`` (``--resume``), its epoch files and its averaged
models carry them. Their keys are the same from the first step on (placeholders of zeros are
allocated when ESPnet builds the optimizer), because ESPnet's checkpoint averaging needs the
same keys in every file; each size records ``taken`` (1.0 once the snapshot is taken, a float so
that an average over checkpoints from before and after the snapshot shows as a fraction), the
step and the budget ratios it kept. The schedule's position is the controller's ``step``, so
``--resume`` in the middle of any ramp or hold continues exactly.
"""

import logging
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

#: Attribute of the controller that holds the snapshots (and the prefix of their state-dict keys).
SNAPSHOTS_ATTRIBUTE = "size_snapshots"
#: Per-size metadata entries besides the ratios.
_META = ("taken", "step")


def size_name(size: Dict[str, float]) -> str:
    """Directory name of a size: ``target0.80`` (joint), ``cnn0.70_transformer0.50`` (separate)."""
    if set(size) == {"total"}:
        return f"target{size['total']:.2f}"
    return "_".join(f"{name}{value:.2f}" for name, value in size.items())


def size_label(size: Dict[str, float]) -> str:
    """``0.80`` or ``cnn 0.70, transformer 0.50``."""
    if set(size) == {"total"}:
        return f"{size['total']:.2f}"
    return ", ".join(f"{name} {value:.2f}" for name, value in size.items())


@dataclass(frozen=True)
class Stage:
    """One size of the schedule: its targets and the optimizer steps of its ramp and hold."""

    index: int
    targets: Dict[str, float]
    ramp_begin: int
    ramp_end: int
    #: Nominal end of the hold (``ramp_end + hold_steps``); for the last size the recommended run length.
    hold_end: int
    #: Step at whose end the snapshot was taken (the next ramp begins there), ``None`` before.
    end: Optional[int] = None


class SizeSchedule:
    """Targets of every budget at every step for a list of sizes (see the module docstring).

    A size's hold lasts ``hold_steps`` and then, until the structure is on its targets, at most
    :attr:`max_extension` more steps: the snapshot is taken at the first step at or after the
    nominal end of the hold whose deterministic ratios are all within ``BUDGET_TOLERANCE`` of
    the size's targets (the controller decides, :meth:`due`), and the next ramp begins there.
    The steps the snapshots were taken at come from ``ends`` (the snapshots' records, so that
    they are checkpointed); an unknown end leaves that size's stage open.

    Args:
        sizes: budgets of every size, largest first (``PruningConfig.sizes()``).
        warmup_steps: steps of each ramp.
        hold_steps: steps each size is held after its ramp (before any extension).
        ramp_start: where the first ramp starts, per budget (1.0 for a dense start).
        ends: returns the step each size but the last was kept at, or ``None`` where it is not
            yet; default: none known.
    """

    def __init__(self, sizes: List[Dict[str, float]], warmup_steps: int, hold_steps: int,
                 ramp_start: Dict[str, float], ends: Optional[Callable[[], List[Optional[int]]]] = None):
        self.sizes = [dict(size) for size in sizes]
        self.warmup_steps, self.hold_steps = int(warmup_steps), int(hold_steps)
        self.ramp_start = dict(ramp_start)
        self._ends = ends if ends is not None else (lambda: [None] * (len(self.sizes) - 1))

    @property
    def max_extension(self) -> int:
        """Steps a hold may be extended by to bring the structure on its targets: ``hold_steps``."""
        return self.hold_steps

    @property
    def stages(self) -> List[Stage]:
        """Every size's stage, with the ends known so far (later stages shifted by them)."""
        ends = list(self._ends())
        stages, begin = [], 0
        for index, size in enumerate(self.sizes):
            end = ends[index] if index < len(ends) else None
            ramp_end = begin + self.warmup_steps
            stages.append(Stage(index, size, begin, ramp_end, ramp_end + self.hold_steps, end))
            begin = end if end is not None else ramp_end + self.hold_steps
        return stages

    @property
    def recommended_steps(self) -> int:
        """``K (warmup_steps + hold_steps)`` plus the extensions so far: every size ramped and held."""
        return self.stages[-1].hold_end

    def stage_at(self, step: int) -> Stage:
        """The stage whose ramp or hold the next optimizer step belongs to: the first size whose
        snapshot is not taken yet, or was taken after ``step``; the last one after all of them."""
        stages = self.stages
        for stage in stages[:-1]:
            if stage.end is None or step < stage.end:
                return stage
        return stages[-1]

    def holding(self, step: int) -> bool:
        """Whether the target is constant at ``step`` (the stage's ramp is over)."""
        return step >= self.stage_at(step).ramp_end

    def targets_at(self, step: int) -> Dict[str, float]:
        """Every budget's target after ``step`` optimizer steps."""
        stage = self.stage_at(step)
        start = self.ramp_start if stage.index == 0 else self.sizes[stage.index - 1]
        progress = 1.0 if self.warmup_steps == 0 else min(1.0, max(0.0, (step - stage.ramp_begin) / self.warmup_steps))
        return {name: start[name] - (start[name] - final) * progress for name, final in stage.targets.items()}

    def due(self, step: int, on_target: bool) -> Optional[Stage]:
        """The stage whose snapshot is to be taken after ``step`` (``None`` if none): its hold has
        lasted ``hold_steps`` and the structure is ``on_target``, or the extension is used up."""
        stage = self.stage_at(step)
        if stage.index == len(self.sizes) - 1 or stage.end is not None or step < stage.hold_end:
            return None
        return stage if on_target or step >= stage.hold_end + self.max_extension else None

    def awaiting_snapshot(self, step: int) -> Optional[Stage]:
        """The stage whose hold has lasted ``hold_steps`` at ``step`` and whose snapshot is still to
        be taken (``None`` if none): the controller then checks whether it is on target (:meth:`due`)."""
        stage = self.stage_at(step)
        if stage.index == len(self.sizes) - 1 or step < stage.hold_end:
            return None
        return stage

    def stats(self, step: int) -> Dict[str, float]:
        """Reporter statistics at ``step``: ``stage`` (1-based size being ramped to or held),
        ``holding`` (1 once its ramp is over) and ``size_<budget>`` (that size's target)."""
        stage = self.stage_at(step)
        stats = {"stage": float(stage.index + 1), "holding": float(self.holding(step))}
        stats.update({f"size_{name}": value for name, value in stage.targets.items()})
        return stats

    def advice(self, step: int, stage: Stage) -> str:
        """What to change when ``stage``'s size missed its target after ``step`` steps."""
        train = (f"train at least {self.recommended_steps} optimizer steps ({len(self.sizes)} sizes x "
                 f"(warmup_steps {self.warmup_steps} + hold_steps {self.hold_steps}))")
        if step < stage.ramp_end:
            return (f"training stopped during this size's ramp (step {step}, the ramp ends at step {stage.ramp_end}): "
                    f"{train}")
        if step < stage.hold_end:
            return (f"only {step - stage.ramp_end} steps followed this size's ramp (hold_steps {self.hold_steps}): "
                    f"{train}")
        return ("the gates did not settle within this size's hold and its extension (hold_steps more): raise "
                "hold_steps, or reg_lr (gates and multipliers move faster), or warmup_steps")


class SizeSnapshots(nn.Module):
    """The model state of every size but the last, at the end of its hold, in the state dict.

    Entries (under this module's prefix): ``size{k}.model.<model key>`` (the whole model's
    state, CPU tensors), ``size{k}.taken``, ``size{k}.step``, ``size{k}.deterministic_<budget>``
    and ``size{k}.expected_<budget>`` (float64 scalars).

    Args:
        num_snapshots: sizes that get a snapshot (all but the last).
        budget_names: the budgets (``total``, or ``cnn`` / ``transformer``).
    """

    def __init__(self, num_snapshots: int, budget_names: List[str]):
        super().__init__()
        self.num_snapshots = num_snapshots
        self.budget_names = list(budget_names)
        self._models: List[Optional[Dict[str, Tensor]]] = [None] * num_snapshots
        self._meta: List[Dict[str, Tensor]] = [self._empty_meta() for _ in range(num_snapshots)]
        #: Whether placeholders of the whole model were allocated (training): the keys are then fixed.
        self.allocated = False
        self._suspended = False

    def _meta_names(self) -> List[str]:
        return list(_META) + [f"{kind}_{name}" for name in self.budget_names for kind in ("deterministic", "expected")]

    def _empty_meta(self) -> Dict[str, Tensor]:
        return {name: torch.zeros((), dtype=torch.float64) for name in self._meta_names()}

    # ------------------------------------------------------------------ taking
    def _model_state(self, model: nn.Module) -> Dict[str, Tensor]:
        """``model.state_dict()`` without the snapshots themselves."""
        self._suspended = True
        try:
            return model.state_dict()
        finally:
            self._suspended = False

    def allocate(self, model: nn.Module) -> None:
        """Zero placeholders of ``model``'s state for every snapshot not yet held (CPU), so that the
        state dict has the same keys from the first checkpoint on."""
        if self.allocated:
            return
        state = self._model_state(model)
        for k in range(self.num_snapshots):
            if self._models[k] is None:
                self._models[k] = {key: torch.zeros(value.shape, dtype=value.dtype) for key, value in state.items()}
        self.allocated = True

    @torch.no_grad()
    def take(self, index: int, model: nn.Module, step: int, deterministic: Dict[str, float],
             expected: Dict[str, float]) -> None:
        """Copy ``model``'s whole state into snapshot ``index`` with its step and budget ratios."""
        state = self._model_state(model)
        held = self._models[index]
        if held is not None and set(held) == set(state):
            for key, value in state.items():
                held[key].copy_(value.detach())
        else:
            self._models[index] = {key: value.detach().to("cpu", copy=True) for key, value in state.items()}
        meta = self._meta[index]
        meta["taken"].fill_(1.0)
        meta["step"].fill_(float(step))
        for name in self.budget_names:
            meta[f"deterministic_{name}"].fill_(float(deterministic[name]))
            meta[f"expected_{name}"].fill_(float(expected[name]))
        logging.info("pruning: kept the model state of size %d at step %d (%s)", index + 1, step,
                     ", ".join(f"{name} {deterministic[name]:.3f}" for name in self.budget_names))

    # ------------------------------------------------------------------ reading
    def taken(self, index: int) -> float:
        """1.0 once snapshot ``index`` is taken; a fraction in a model file averaged over checkpoints
        from before and after it; 0.0 before."""
        return float(self._meta[index]["taken"])

    def ends(self) -> List[Optional[int]]:
        """The step each snapshot was taken at, ``None`` where it is not (fully) taken."""
        return [int(meta["step"]) if float(meta["taken"]) == 1.0 else None for meta in self._meta]

    def info(self, index: int) -> Dict[str, float]:
        """``{"taken", "step", "deterministic_<budget>", "expected_<budget>"}`` of snapshot ``index``."""
        return {name: float(value) for name, value in self._meta[index].items()}

    def model_state(self, index: int) -> Dict[str, Tensor]:
        """The whole model's state of snapshot ``index`` (for ``model.load_state_dict``)."""
        taken = self.taken(index)
        if taken != 1.0 or self._models[index] is None:
            raise ValueError(f"the model state of size {index + 1} is not in this model file (taken = {taken:g})")
        return dict(self._models[index])

    # ------------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self._suspended:
            return
        for k in range(self.num_snapshots):
            for name, value in self._meta[k].items():
                destination[f"{prefix}size{k}.{name}"] = value
            if self._models[k] is not None:
                for key, value in self._models[k].items():
                    destination[f"{prefix}size{k}.model.{key}"] = value

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        given = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        if not given:
            # A state dict without snapshots (e.g. one snapshot being restored into the model for
            # export) leaves the held ones alone; during training the keys must be there.
            if self.allocated:
                missing_keys.extend(f"{prefix}size{k}.{name}" for k in range(self.num_snapshots)
                                    for name in self._meta_names())
            return
        models: List[Dict[str, Tensor]] = [{} for _ in range(self.num_snapshots)]
        for rest, value in given.items():
            match = re.fullmatch(r"size(\d+)\.(?:model\.(.+)|(\w+))", rest)
            index = int(match.group(1)) if match else -1
            if not 0 <= index < self.num_snapshots:
                unexpected_keys.append(prefix + rest)
            elif match.group(2) is not None:
                models[index][match.group(2)] = value
            elif match.group(3) in self._meta[index]:
                self._meta[index][match.group(3)].copy_(value.detach().reshape(()).to(torch.float64))
            else:
                unexpected_keys.append(prefix + rest)
        for k, state in enumerate(models):
            held = self._models[k]
            if self.allocated and held is not None:
                for key in set(held) - set(state):
                    missing_keys.append(f"{prefix}size{k}.model.{key}")
                for key, value in state.items():
                    if key not in held:
                        unexpected_keys.append(f"{prefix}size{k}.model.{key}")
                    elif held[key].shape != value.shape:
                        error_msgs.append(f"size mismatch for {prefix}size{k}.model.{key}: {tuple(value.shape)} in "
                                          f"the checkpoint, {tuple(held[key].shape)} in the model")
                    else:
                        held[key].copy_(value.detach())
            elif state:
                self._models[k] = {key: value.detach().to("cpu") for key, value in state.items()}
