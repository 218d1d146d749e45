"""What the demo runs: its systems, LM prunings and settings, checked before anything runs.

- :class:`System`: one fine-tuned system (a method of :data:`METHODS` and its target, or the
  targets of a multi-size method), :class:`SystemSize` one model stage 12 decodes (a system, or
  one size of a multi-size one), :func:`parse_system` the ``--systems`` spelling;
- :class:`LMPruning`: one ``lm_prune`` configuration (its choices come from
  :mod:`espnet_prune.lm.choices`, the one place that lists them);
- :class:`DemoSettings`: everything that decides the results, and the ``--size`` presets
  :data:`SIZES`.

Light on purpose (no torch, no ESPnet): the demo's own process checks its options with it.
"""

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from espnet_prune.lm import choices as lm_choices
from espnet_prune.ssl.units import LAYER_UNITS

TASKS = ("asr", "slu")
#: Fine-tuning methods: the dense baseline; ``scratch``, the dense model trained from random
#: initialisation (the probe of what the stand-in's pretraining brings); HJ-Pruning by MACs, by
#: size, with separate CNN/Transformer MAC budgets, and by MACs of the Transformer alone;
#: ``hj_macs_multi``, HJ-Pruning by MACs to several sizes in one run (``frontend_conf.pruning.targets``);
#: ``whole_model``, one MAC budget over the whole decode (``model_conf.pruning``: frontend, encoder,
#: CTC layer and prefix scoring); ``hj_latency``, HJ-Pruning by the frontend's latency predicted by a
#: table profiled in the run (``metric: latency``).
METHODS = ("dense", "scratch", "hj_macs", "hj_params", "separate", "transformer_only", "hj_macs_multi",
           "whole_model", "hj_latency")
UNPRUNED_METHODS = ("dense", "scratch")
#: Methods whose budget is ``model_conf.pruning`` of ``model: pruned_espnet`` (the frontend takes none).
WHOLE_MODEL_METHODS = ("whole_model",)
#: Methods whose budget is a latency: they need the demo encoder's latency table (a step of the run).
LATENCY_METHODS = ("hj_latency",)
#: Output tokens per second of audio that a whole-model budget prices the decoding for: characters
#: (word boundaries included) of the demo's eSpeak speech, measured 18.4 on a ``--size tiny`` corpus
#: (1506 characters in 82.1 s of training audio, silences included).
WHOLE_MODEL_TOKENS_PER_SECOND = 18.0
#: The downstream encoder a whole-model system swaps in (ESPnet's ``transformer`` with the same keys and
#: weights, so that the budget prices it: the demo's is a linear projection, no blocks to prune).
WHOLE_MODEL_ENCODER = "pruned_transformer"
#: A system trained with another seed is named ``<name>_seed<k>`` (:attr:`System.name`).
SEED_SUFFIX = "_seed"
#: Methods with several targets (one run, one model per size; :mod:`espnet_prune.pruning.multisize`).
MULTI_SIZE_METHODS = ("hj_macs_multi",)
#: The single-target method each multi-size method is compared with, size by size.
SEPARATE_RUNS = {"hj_macs_multi": "hj_macs"}
#: Where the SSL stand-in comes from: ``ctc``, trained in the run with CTC on the fine-tuning set
#: itself (``conf/train_<task>_ssl_standin.yaml``, ``pretrain_steps``); ``ctc_committed``, that
#: stand-in trained once on the default ASR corpus by ``make standin`` and committed;
#: ``pretrained``, the self-supervised encoder of ``make pretrain`` (no labels, other audio).
#: The committed ones are in :data:`espnet_prune.demo.layout.COMMITTED_STANDINS`.
STANDINS = ("ctc", "ctc_committed", "pretrained")
#: ``reg_lr`` of a params budget (the fine-tuning configs' 0.05 serves the MAC budgets): it needs
#: about twice the multiplier (``MIN_WARMUP_TIMES_LR`` of espnet_prune.pruning.metrics:
#: ``prune_warmup_steps`` 200 x 0.1 = 20).
PARAMS_REG_LR = 0.1
#: HJ-Size (a params budget) aimed at a MAC keep ratio r gets the params target
#: ``1 - PARAMS_PER_MACS (1 - r)``: on the demo encoder a params budget removes MACs faster than
#: params (measured: params 0.598 kept 0.498 of the MACs, so 0.6 <-> 0.5). Where each run lands
#: is measured and reported; this only puts them near the MAC-budget runs.
PARAMS_PER_MACS = 0.8


def params_target_for_macs(macs_ratio: float) -> float:
    """The HJ-Size target meant to land near ``macs_ratio`` of the MACs (:data:`PARAMS_PER_MACS`)."""
    return round(1.0 - PARAMS_PER_MACS * (1.0 - macs_ratio), 4)


class DemoError(RuntimeError):
    """A stage failed or the demo was set up wrongly; the message says where to look."""


def size_dir_name(target: float) -> str:
    """Directory of one size of a multi-size run, as ``espnet_prune.bin.export`` names it for a
    joint budget (:func:`espnet_prune.pruning.multisize.size_name`): ``0.8`` -> ``target0.80``."""
    return f"target{target:.2f}"


@dataclass(frozen=True)
class System:
    """One fine-tuned system: ``method`` in :data:`METHODS` and its keep-ratio ``target``, or for a
    method of :data:`MULTI_SIZE_METHODS` its keep ratios ``targets`` (strictly decreasing, in (0, 1));
    ``seed`` (>= 0) is added to the demo's seed for its fine-tuning (another run of the same system)."""

    method: str
    target: Optional[float] = None
    targets: Tuple[float, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"the seed of a system must be an int >= 0, got {self.seed!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method '{self.method}'; choose from {METHODS}")
        if self.method in MULTI_SIZE_METHODS:
            object.__setattr__(self, "targets", tuple(float(t) for t in self.targets))
            if self.target is not None or len(self.targets) < 2:
                raise ValueError(f"method '{self.method}' needs two or more targets, largest first "
                                 f"(e.g. {self.method}:0.8/0.6/0.4)")
            for target in self.targets:
                if not 0.0 < target < 1.0:
                    raise ValueError(f"targets of {self.method} must be keep ratios in (0, 1), got {target}")
            for before, after in zip(self.targets, self.targets[1:]):
                if not after < before:
                    raise ValueError(f"targets of {self.method} must be strictly decreasing (largest size first), "
                                     f"got {'/'.join(f'{t:g}' for t in self.targets)}")
            if len({size_dir_name(t) for t in self.targets}) != len(self.targets):
                raise ValueError(f"targets of {self.method} must differ in their first two decimals "
                                 f"(each size's directory is target<0.XX>), got {self.targets}")
            return
        if self.targets:
            raise ValueError(f"method '{self.method}' takes one target; several are for "
                             f"{', '.join(MULTI_SIZE_METHODS)}")
        unpruned = self.method in UNPRUNED_METHODS
        if unpruned != (self.target is None):
            raise ValueError(f"method '{self.method}' {'takes no' if unpruned else 'needs a'} target")
        if self.target is not None and not 0.0 < self.target < 1.0:
            raise ValueError(f"target of {self.method} must be a keep ratio in (0, 1), got {self.target}")

    @property
    def name(self) -> str:
        """``hj_macs_0.50``, ``hj_macs_multi_0.80_0.60``; another seed adds ``_seed<k>``."""
        if self.targets:
            name = "_".join([self.method] + [f"{target:.2f}" for target in self.targets])
        else:
            name = self.method if self.target is None else f"{self.method}_{self.target:.2f}"
        return name if self.seed == 0 else f"{name}{SEED_SUFFIX}{self.seed}"

    @property
    def spelling(self) -> str:
        """How ``--systems`` writes it (:func:`parse_system`): ``hj_macs:0.5``, ``dense@1``."""
        if self.targets:
            text = f"{self.method}:{'/'.join(f'{target:g}' for target in self.targets)}"
        else:
            text = self.method if self.target is None else f"{self.method}:{self.target:g}"
        return text if self.seed == 0 else f"{text}@{self.seed}"

    @property
    def multi_size(self) -> bool:
        return bool(self.targets)

    @property
    def sizes(self) -> List["SystemSize"]:
        """The models stage 12 decodes: the system itself, or each size of a multi-size run."""
        if not self.targets:
            return [SystemSize(self)]
        return [SystemSize(self, index) for index in range(len(self.targets))]

    def frontend_overrides(self, warmup_steps: int, hold_steps: Optional[int] = None,
                           latency_table: Optional[str] = None) -> List[str]:
        """``--frontend_conf`` values that turn the fine-tuning config into this system
        (``hold_steps``: each size's hold of a multi-size system, required there; ``latency_table``:
        the table of a latency budget, required there)."""
        if self.method in ("dense",) + WHOLE_MODEL_METHODS:
            return ["pruning=null"]  # a whole-model system's budget is model_conf.pruning's
        if self.method == "scratch":
            return ["pruning=null", "checkpoint=null"]  # random initialisation from ``arch``
        overrides = [f"pruning.warmup_steps={warmup_steps}"]
        if self.method == "hj_macs":
            return overrides + ["pruning.metric=macs", f"pruning.target={self.target}"]
        if self.method in LATENCY_METHODS:
            if latency_table is None:
                raise ValueError(f"{self.name} needs latency_table (its budget is a latency)")
            return overrides + ["pruning.metric=latency", f"pruning.target={self.target}",
                                f"pruning.latency_table={latency_table}"]
        if self.method == "hj_macs_multi":
            if hold_steps is None:
                raise ValueError(f"{self.name} needs hold_steps (several sizes from one run)")
            # ``targets`` beside the config's budget preset replaces the preset's joint target.
            return overrides + [f"pruning.hold_steps={hold_steps}", "pruning.metric=macs",
                                f"pruning.targets=[{','.join(str(t) for t in self.targets)}]"]
        if self.method == "transformer_only":
            return overrides + ["pruning.metric=macs", f"pruning.target={self.target}",
                                f"pruning.units=[{','.join(LAYER_UNITS)}]"]
        if self.method == "hj_params":
            return overrides + ["pruning.metric=params", f"pruning.target={self.target}",
                                f"pruning.reg_lr={PARAMS_REG_LR}"]
        # target=null: the config's budget preset has a joint target, exclusive with these.
        return overrides + ["pruning.metric=macs", "pruning.target=null", f"pruning.cnn_target={self.target}",
                            f"pruning.transformer_target={self.target}"]


    def model_overrides(self, frontend_pruning: Mapping[str, Any], warmup_steps: int, beam_size: int,
                        tokens_per_second: float) -> List[str]:
        """``--model_conf`` values of a whole-model system (none for the others): the fine-tuning
        config's ``frontend_conf.pruning`` (``frontend_pruning``: preset, schedule, ``reg_lr``) moved to
        ``model_conf.pruning``, a MAC budget at this system's target over every part of the model,
        priced for the demo's decoding (CTC prefix beam search of ``beam_size`` with ``ctc_weight`` 1,
        ``tokens_per_second`` output tokens per second of audio)."""
        if self.method not in WHOLE_MODEL_METHODS:
            return []
        values = {**frontend_pruning, "warmup_steps": warmup_steps, "metric": "macs", "target": self.target}
        # JSON is YAML, and without spaces it survives asr.sh's word splitting of --asr_args.
        overrides = [f"pruning.{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
                     for key, value in values.items()]
        return overrides + [f"pruning.decoding.beam_size={beam_size}",
                            f"pruning.decoding.tokens_per_second={tokens_per_second}",
                            "pruning.decoding.ctc_weight=1.0"]


@dataclass(frozen=True)
class SystemSize:
    """One model that stage 12 decodes: a system, or size ``size`` (0 = largest) of a multi-size one."""

    system: System
    size: Optional[int] = None

    @property
    def name(self) -> str:
        """``hj_macs_0.50``; for a size ``hj_macs_multi_0.80_0.60/target0.80`` (its directory under the export)."""
        return self.system.name if self.size is None else f"{self.system.name}/{self.size_dir}"

    @property
    def method(self) -> str:
        return self.system.method

    @property
    def target(self) -> Optional[float]:
        return self.system.target if self.size is None else self.system.targets[self.size]

    @property
    def size_dir(self) -> Optional[str]:
        return None if self.size is None else size_dir_name(self.system.targets[self.size])

    @property
    def seed(self) -> int:
        return self.system.seed

    @property
    def pruned(self) -> bool:
        return self.method not in UNPRUNED_METHODS


def method_of(name: str) -> str:
    """The method of a :attr:`System.name` that is unpruned, or ``name`` itself otherwise:
    ``dense_seed2`` -> ``dense`` (what decides whether a system has an exported compact model)."""
    base, _, seed = name.rpartition(SEED_SUFFIX)
    return base if base in UNPRUNED_METHODS and seed.isdigit() else name


def parse_system(text: str) -> System:
    """``dense``, ``scratch``, ``hj_macs:0.5``, ``hj_params:0.6``, ``separate:0.5``,
    ``transformer_only:0.7``, ``whole_model:0.8``, ``hj_latency:0.8`` or ``hj_macs_multi:0.8/0.6/0.4``,
    each optionally with ``@<seed>``
    (``hj_macs:0.5@1``, ``dense@2``) -> :class:`System`."""
    spec, at, seed = text.partition("@")
    method, _, target = spec.partition(":")
    try:
        if at and not seed.isdigit():
            raise ValueError(f"the seed after '@' must be an int >= 0, got '{seed}'")
        seed = int(seed) if at else 0
        if method in MULTI_SIZE_METHODS:
            return System(method, targets=tuple(float(t) for t in target.split("/")) if target else (), seed=seed)
        if "/" in target:
            raise ValueError(f"method '{method}' takes one target; several are for "
                             f"{', '.join(MULTI_SIZE_METHODS)}")
        return System(method, float(target) if target else None, seed=seed)
    except ValueError as error:
        raise ValueError(f"bad system '{text}': {error} (write e.g. dense, hj_macs:0.5, hj_params:0.6@1, "
                         "hj_macs_multi:0.8/0.6/0.4)") from None


@dataclass(frozen=True)
class LMPruning:
    """One configuration of ``espnet_prune.bin.lm_prune``."""

    criterion: str
    method: str
    scheduler: str

    @property
    def name(self) -> str:
        return f"{self.criterion}_{self.method}_{self.scheduler}"


def parse_lm_pruning(text: str) -> LMPruning:
    """``data/lowrank/incremental`` -> :class:`LMPruning` (criterion/method/scheduler)."""
    parts = text.split("/")
    criteria, methods, schedulers = lm_choices.CRITERIA, lm_choices.METHODS, lm_choices.SCHEDULERS
    if len(parts) != 3 or parts[0] not in criteria or parts[1] not in methods or parts[2] not in schedulers:
        raise ValueError(f"bad LM pruning '{text}': write criterion/method/scheduler with criterion in "
                         f"{criteria}, method in {methods}, scheduler in {schedulers}, "
                         "e.g. data/lowrank/incremental")
    return LMPruning(*parts)


@dataclass
class DemoSettings:
    """Everything that decides the demo's results (stored in ``settings.json``).

    Sizes: ``num_*`` corpus sizes (see :func:`espnet_prune.demo.corpus.make_corpus`).
    Stand-in: ``standin`` in :data:`STANDINS`.
    Training: ``pretrain_steps`` of the CTC stand-in, ``finetune_steps`` of every system
    (``prune_warmup_steps`` of them ramp the pruning target), ``steps_per_epoch`` between
    validations, ``batch_size`` utterances; ``lm_steps`` of LM training and
    ``lm_finetune_steps`` after each LM pruning step. A multi-size system (``hj_macs_multi``)
    ramps to each of its K sizes over ``multisize_warmup_steps`` and holds it for
    :attr:`multisize_hold_steps` (= ``finetune_steps - prune_warmup_steps``, what a single-target
    run trains after its ramp), so it trains ``K (multisize_warmup_steps + multisize_hold_steps)``
    steps (:meth:`training_steps`).
    Systems: ``systems`` (fine-tuned from the stand-in), ``lm_prunings`` at ``lm_targets``,
    decoded by shallow fusion with ``fusion_system`` (``lm_weight``); ``beam_size``; ``int8``: every
    compact pruned model is decoded a second time with ESPnet's dynamic int8 quantization.
    Report: costs and latency for ``reference_seconds`` of audio, ``latency_rounds`` rounds.
    """

    task: str = "asr"
    standin: str = "ctc_committed"
    num_train: int = 3000
    num_dev: int = 100
    num_test: int = 100
    num_lm_sentences: int = 20000
    num_dev_voices: int = 6
    num_test_voices: int = 10
    pretrain_steps: int = 2000
    finetune_steps: int = 400
    prune_warmup_steps: int = 200
    steps_per_epoch: int = 100
    batch_size: int = 8
    lm_steps: int = 1000
    lm_finetune_steps: int = 200
    multisize_warmup_steps: int = 200
    systems: Tuple[System, ...] = (System("dense"), System("hj_macs", 0.8),
                                   System("hj_params", params_target_for_macs(0.8)), System("separate", 0.8),
                                   System("transformer_only", 0.8), System("whole_model", 0.8),
                                   System("hj_latency", 0.8))
    lm_prunings: Tuple[LMPruning, ...] = (LMPruning("data", "lowrank", "incremental"),)
    lm_targets: Tuple[float, ...] = (0.5, 0.25)
    fusion_system: str = "dense"
    lm_weight: float = 0.3
    beam_size: int = 4
    int8: bool = False
    reference_seconds: float = 5.0
    latency_rounds: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.standin not in STANDINS:
            raise ValueError(f"standin must be one of {STANDINS}, got {self.standin!r}")
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type is int and item.name != "seed" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{item.name} must be a positive int, got {value!r}")
        if self.prune_warmup_steps >= self.finetune_steps:
            raise ValueError(f"prune_warmup_steps ({self.prune_warmup_steps}) must be below finetune_steps "
                             f"({self.finetune_steps}), so that the pruning settles at its target")
        names = [system.name for system in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"systems repeat: {names}")
        if self.task == "asr" and self.fusion_system not in names:
            raise ValueError(f"fusion_system '{self.fusion_system}' is not one of the systems {names}")
        if self.task == "asr" and any(system.multi_size and system.name == self.fusion_system
                                      for system in self.systems):
            raise ValueError(f"fusion_system '{self.fusion_system}' has several sizes; choose a system with one")
        for target in self.lm_targets:
            if not 0.0 < target < 1.0:
                raise ValueError(f"LM targets are ratios of the dense LM's parameters in (0, 1), got {target}")

    @property
    def multisize_hold_steps(self) -> int:
        """Steps each size of a multi-size system is held: a single-target run's steps after its ramp."""
        return self.finetune_steps - self.prune_warmup_steps

    def training_steps(self, system: System) -> int:
        """Optimizer steps of ``system``'s fine-tuning: ``finetune_steps``, or for K sizes from one run
        ``K (multisize_warmup_steps + multisize_hold_steps)`` (``espnet_prune.pruning.multisize``'s rule)."""
        if not system.multi_size:
            return self.finetune_steps
        return len(system.targets) * (self.multisize_warmup_steps + self.multisize_hold_steps)

    def sizes(self) -> List[SystemSize]:
        """Every model stage 12 decodes, in the order of :attr:`systems` (a multi-size system's sizes
        largest first)."""
        return [size for system in self.systems for size in system.sizes]

    def int8_sizes(self) -> List[SystemSize]:
        """The models decoded a second time with dynamic int8 quantization (``int8``): every pruned
        one (each size of a multi-size system too); none without ``int8``."""
        return [size for size in self.sizes() if size.pruned] if self.int8 else []

    @property
    def uses_lm(self) -> bool:
        """The LM stages run for ASR (the SLU recipe, like ESPnet's SLURP, decodes without LM)."""
        return self.task == "asr" and bool(self.lm_prunings)

    def as_dict(self) -> Dict:
        values = asdict(self)
        values["systems"] = [system.name for system in self.systems]
        values["lm_prunings"] = [pruning.name for pruning in self.lm_prunings]
        values["lm_targets"] = list(self.lm_targets)
        return values


#: The MAC keep ratios of ``--size paper`` (the HJ-Pruning paper's 10-50 % less computation).
PAPER_RATIOS = (0.9, 0.7, 0.5)
#: Fine-tuning seeds of ``--size paper``: every pruned system, and the dense baseline.
PAPER_SEEDS = 2
PAPER_DENSE_SEEDS = 3
#: Transformer-only pruning cannot remove the CNN's MACs: on the demo encoder removing every
#: attention head and FFN unit leaves 0.6995 of the MACs, so the paper run has it at 0.9 only.
PAPER_TRANSFORMER_ONLY_RATIOS = (0.9,)


def paper_systems() -> Tuple[System, ...]:
    """``--size paper``: dense, and HJ-MAC, HJ-Size, separate budgets and Transformer-only at the
    :data:`PAPER_RATIOS` of MACs (HJ-Size through :func:`params_target_for_macs`), every seed."""
    systems = [System("dense", seed=seed) for seed in range(PAPER_DENSE_SEEDS)]
    for ratio in PAPER_RATIOS:
        methods = [System("hj_macs", ratio), System("hj_params", params_target_for_macs(ratio)),
                   System("separate", ratio)]
        if ratio in PAPER_TRANSFORMER_ONLY_RATIOS:
            methods.append(System("transformer_only", ratio))
        systems += [System(system.method, system.target, seed=seed)
                    for seed in range(PAPER_SEEDS) for system in methods]
    return tuple(systems)


#: ``--size`` presets: ``tiny`` runs every stage in minutes (CI); ``default`` is ``make demo``;
#: ``paper`` is ``make paper``, the paper's comparison (every method at three MAC ratios, seeds; no LM).
SIZES: Dict[str, Dict] = {
    "tiny": dict(standin="ctc", num_train=48, num_dev=6, num_test=6, num_lm_sentences=400, num_dev_voices=2,
                 num_test_voices=2, pretrain_steps=30, finetune_steps=24, prune_warmup_steps=8,
                 multisize_warmup_steps=6, steps_per_epoch=12, batch_size=4,
                 lm_steps=20, lm_finetune_steps=4, beam_size=2, int8=True, latency_rounds=3, reference_seconds=2.0,
                 systems=(System("dense"), System("dense", seed=1), System("hj_macs", 0.6), System("hj_params", 0.6)),
                 lm_targets=(0.5,)),
    "default": {},
    "paper": dict(systems=paper_systems(), lm_prunings=()),
}
