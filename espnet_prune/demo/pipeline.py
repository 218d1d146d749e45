"""The demo's recipe: ESPnet's asr.sh / slu.sh stages for every system, in parallel lanes.

Two ways to run the same recipe (``egs2/espeak_demo/<task>1``, the same YAML configs):

- **direct** (ESPnet's egs2 TEMPLATE is absent, as when ESPnet comes from PyPI): the stages
  of ``asr.sh`` run as the very ESPnet binaries ``asr.sh`` calls, in its order, through the
  plugin launcher (``python -m espnet_prune -m espnet2.bin.<tool>``), into asr.sh's layout
  (``data/``, ``dump/raw/``, ``exp/...``): stage 1 data (:mod:`~espnet_prune.demo.corpus`),
  3-4 format and filter, 5 token list (``tokenize_text``), 6-8 LM statistics, training and
  perplexity, 10 ASR statistics, 11 training, 12 decoding, 13 scoring (in Python:
  :mod:`~espnet_prune.demo.scoring`). Stages 2 (speed perturbation) and 9 (n-gram) are off,
  as in the recipe.
- **recipe** (``ESPNET_ROOT`` names an ESPnet checkout): the recipe directory is set up with
  ``egs2/TEMPLATE_prune/setup.sh`` and ESPnet's own ``asr.sh`` / ``slu.sh`` run the stages,
  through ``egs2/TEMPLATE_prune/prune_stages.sh`` (which exports the compact model between
  stages 11 and 12).

Around ESPnet's stages the demo adds its own: the *SSL stand-in* (a wav2vec2-architecture
model trained densely with CTC on the training set, whose encoder every system then
fine-tunes from, since no pretrained weights can be downloaded here), LM pruning
(``espnet_prune.bin.lm_prune``), export of compact models (``espnet_prune.bin.export``),
and the report (:mod:`~espnet_prune.demo.report`).

Independent work runs side by side (``jobs`` lanes, one CPU thread each by default): the LM
stages beside the ASR statistics and the stand-in's training, the systems' fine-tuning,
export and decoding two at a time. Each finished step leaves a marker (``.done`` file), so
running the demo again skips what is done.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import soundfile

from espnet_prune.demo import corpus as corpus_module
from espnet_prune.demo import scoring
from espnet_prune.ssl.units import LAYER_UNITS

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "egs2" / "espeak_demo"
TEMPLATE_PRUNE = REPO_ROOT / "egs2" / "TEMPLATE_prune"
TASKS = ("asr", "slu")
#: Fine-tuning methods: the dense baseline; ``scratch``, the dense model trained from random
#: initialisation (the probe of what the stand-in's pretraining brings); HJ-Pruning by MACs, by
#: size, with separate CNN/Transformer MAC budgets, and by MACs of the Transformer alone;
#: ``hj_macs_multi``, HJ-Pruning by MACs to several sizes in one run (``frontend_conf.pruning.targets``).
METHODS = ("dense", "scratch", "hj_macs", "hj_params", "separate", "transformer_only", "hj_macs_multi")
UNPRUNED_METHODS = ("dense", "scratch")
#: Methods with several targets (one run, one model per size; :mod:`espnet_prune.pruning.multisize`).
MULTI_SIZE_METHODS = ("hj_macs_multi",)
#: The single-target method each multi-size method is compared with, size by size.
SEPARATE_RUNS = {"hj_macs_multi": "hj_macs"}
#: Where the SSL stand-in comes from: ``ctc``, trained with CTC on the fine-tuning set itself
#: (``conf/train_<task>_ssl_standin.yaml``); ``pretrained``, the self-supervised encoder of
#: ``make pretrain`` committed in :data:`PRETRAINED_STANDIN` (no labels, other audio).
STANDINS = ("ctc", "pretrained")
PRETRAINED_STANDIN = REPO_ROOT / "egs2" / "espeak_demo" / "ssl_standin"
SSL_STANDIN = "ssl_standin"  # tag of the stand-in's experiment: exp/asr_ssl_standin
LM_TAG = "train_lm_char"  # asr.sh's lm_tag for conf/train_lm.yaml and char tokens
INFERENCE_TAG = "decode"  # decodings without LM: exp/<task>_<system>/decode/test
#: The compact pruned systems decoded again with ESPnet's dynamic int8 quantization
#: (``--quantize_asr_model true``): exp/<task>_<system>_pruned/decode_int8/test
INT8_TAG = "decode_int8"
DENSE = "dense"  # name of the unpruned system
#: A pruned system's compact model is exported (as prune_stages.sh does) to exp/<task>_<system>_pruned
PRUNED_SUFFIX = "_pruned"
#: ``reg_lr`` of a params budget (the fine-tuning configs' 0.05 serves the MAC budgets): it needs
#: about twice the multiplier (``MIN_WARMUP_TIMES_LR`` of espnet_prune.pruning.controller).
PARAMS_REG_LR = 0.08
MIN_WAV_SECONDS, MAX_WAV_SECONDS = 0.1, 20.0  # asr.sh's min_wav_duration / max_wav_duration
#: Choices of ``espnet_prune.bin.lm_prune`` (its --criterion, --method, --scheduler), repeated
#: here so that the demo's own process checks its options without importing ESPnet.
LM_CRITERIA = ("magnitude", "data")
LM_METHODS = ("unstructured", "structured", "lowrank")
LM_SCHEDULERS = ("oneshot", "incremental")


class DemoError(RuntimeError):
    """A stage failed or the demo was set up wrongly; the message says where to look."""


# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------


def size_dir_name(target: float) -> str:
    """Directory of one size of a multi-size run, as ``espnet_prune.bin.export`` names it for a
    joint budget (:func:`espnet_prune.pruning.multisize.size_name`): ``0.8`` -> ``target0.80``."""
    return f"target{target:.2f}"


@dataclass(frozen=True)
class System:
    """One fine-tuned system: ``method`` in :data:`METHODS` and its keep-ratio ``target``, or for a
    method of :data:`MULTI_SIZE_METHODS` its keep ratios ``targets`` (strictly decreasing, in (0, 1))."""

    method: str
    target: Optional[float] = None
    targets: Tuple[float, ...] = ()

    def __post_init__(self):
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
        if self.targets:
            return "_".join([self.method] + [f"{target:.2f}" for target in self.targets])
        return self.method if self.target is None else f"{self.method}_{self.target:.2f}"

    @property
    def multi_size(self) -> bool:
        return bool(self.targets)

    @property
    def sizes(self) -> List["SystemSize"]:
        """The models stage 12 decodes: the system itself, or each size of a multi-size run."""
        if not self.targets:
            return [SystemSize(self)]
        return [SystemSize(self, index) for index in range(len(self.targets))]

    def frontend_overrides(self, warmup_steps: int, hold_steps: Optional[int] = None) -> List[str]:
        """``--frontend_conf`` values that turn the fine-tuning config into this system
        (``hold_steps``: each size's hold of a multi-size system, required there)."""
        if self.method == "dense":
            return ["pruning=null"]
        if self.method == "scratch":
            return ["pruning=null", "checkpoint=null"]  # random initialisation from ``arch``
        overrides = [f"pruning.warmup_steps={warmup_steps}"]
        if self.method == "hj_macs":
            return overrides + ["pruning.metric=macs", f"pruning.target={self.target}"]
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
    def pruned(self) -> bool:
        return self.method not in UNPRUNED_METHODS


def parse_system(text: str) -> System:
    """``dense``, ``scratch``, ``hj_macs:0.5``, ``hj_params:0.6``, ``separate:0.5``,
    ``transformer_only:0.7`` or ``hj_macs_multi:0.8/0.6/0.4`` -> :class:`System`."""
    method, _, target = text.partition(":")
    try:
        if method in MULTI_SIZE_METHODS:
            return System(method, targets=tuple(float(t) for t in target.split("/")) if target else ())
        if "/" in target:
            raise ValueError(f"method '{method}' takes one target; several are for "
                             f"{', '.join(MULTI_SIZE_METHODS)}")
        return System(method, float(target) if target else None)
    except ValueError as error:
        raise ValueError(f"bad system '{text}': {error} (write e.g. dense, hj_macs:0.5, hj_params:0.6, "
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
    if len(parts) != 3 or parts[0] not in LM_CRITERIA or parts[1] not in LM_METHODS or parts[2] not in LM_SCHEDULERS:
        raise ValueError(f"bad LM pruning '{text}': write criterion/method/scheduler with criterion in "
                         f"{LM_CRITERIA}, method in {LM_METHODS}, scheduler in {LM_SCHEDULERS}, "
                         "e.g. data/lowrank/incremental")
    return LMPruning(*parts)


def lm_target_name(target: float) -> str:
    """The directory ``lm_prune`` writes a target's LM to: ``0.5`` -> ``target0.50``."""
    text = f"{target:.2f}"
    return f"target{text if float(text) == target else repr(target)}"


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
    decoded by shallow fusion with ``fusion_system`` (``lm_weight``); ``beam_size``.
    Report: costs and latency for ``reference_seconds`` of audio, ``latency_rounds`` rounds.
    """

    task: str = "asr"
    standin: str = "ctc"
    num_train: int = 3000
    num_dev: int = 100
    num_test: int = 100
    num_lm_sentences: int = 20000
    num_dev_voices: int = 6
    num_test_voices: int = 10
    pretrain_steps: int = 2000
    finetune_steps: int = 600
    prune_warmup_steps: int = 300
    steps_per_epoch: int = 100
    batch_size: int = 8
    lm_steps: int = 1000
    lm_finetune_steps: int = 200
    multisize_warmup_steps: int = 200
    systems: Tuple[System, ...] = (System("dense"), System("hj_macs", 0.8), System("hj_macs", 0.5),
                                   System("hj_params", 0.6), System("separate", 0.8),
                                   System("transformer_only", 0.8))
    lm_prunings: Tuple[LMPruning, ...] = (LMPruning("data", "lowrank", "incremental"),
                                          LMPruning("data", "lowrank", "oneshot"))
    lm_targets: Tuple[float, ...] = (0.5, 0.25)
    fusion_system: str = "dense"
    lm_weight: float = 0.3
    beam_size: int = 4
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


#: ``--size`` presets: ``tiny`` runs every stage in minutes (CI); ``default`` is ``make demo``.
SIZES: Dict[str, Dict] = {
    "tiny": dict(num_train=48, num_dev=6, num_test=6, num_lm_sentences=400, num_dev_voices=2, num_test_voices=2,
                 pretrain_steps=30, finetune_steps=24, prune_warmup_steps=8, multisize_warmup_steps=6,
                 steps_per_epoch=12, batch_size=4,
                 lm_steps=20, lm_finetune_steps=4, beam_size=2, latency_rounds=3, reference_seconds=2.0,
                 systems=(System("dense"), System("hj_macs", 0.6), System("hj_params", 0.6)),
                 lm_prunings=(LMPruning("data", "lowrank", "incremental"),), lm_targets=(0.5,)),
    "default": {},
}


# ---------------------------------------------------------------------------------------------
# Where things are (asr.sh's layout)
# ---------------------------------------------------------------------------------------------


class DemoPaths:
    """The recipe directory's layout, as asr.sh / slu.sh make it.

    Args:
        root: the recipe's working directory (all paths below are under it, absolute).
        task: ``asr`` or ``slu``.
    """

    def __init__(self, root: Path, task: str):
        self.root = Path(root).resolve()
        self.task = task

    @property
    def recipe(self) -> Path:
        """The recipe in the source tree: ``egs2/espeak_demo/<task>1``."""
        return RECIPES / f"{self.task}1"

    def conf(self, name: str) -> Path:
        path = self.recipe / "conf" / name
        if not path.is_file():
            raise DemoError(f"{path} is missing: the demo runs from a source checkout of espnet_prune")
        return path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dump(self, split: str) -> Path:
        return self.root / "dump" / "raw" / split

    @property
    def lm_train_text(self) -> Path:
        return self.root / "dump" / "raw" / "lm_train.txt"

    @property
    def nlsyms(self) -> Optional[Path]:
        return self.data / "nlsyms.txt" if self.task == "slu" else None

    @property
    def token_list(self) -> Path:
        return self.data / "token_list" / "char" / "tokens.txt"

    @property
    def lm_stats(self) -> Path:
        return self.root / "exp" / "lm_stats_char"

    @property
    def lm_exp(self) -> Path:
        return self.root / "exp" / f"lm_{LM_TAG}"

    @property
    def lm_model(self) -> Path:
        return self.lm_exp / "valid.loss.ave.pth"

    def lm_pruned(self, pruning: LMPruning) -> Path:
        return self.root / "exp" / "lm_pruned" / pruning.name

    @property
    def asr_stats(self) -> Path:
        return self.root / "exp" / f"{self.task}_stats_raw_char"

    def exp(self, tag: str) -> Path:
        return self.root / "exp" / f"{self.task}_{tag}"

    @property
    def ssl_checkpoint(self) -> Path:
        """The stand-in's encoder: a state dict with torchaudio's names (``arch`` in the config)."""
        return self.exp(SSL_STANDIN) / "ssl_encoder.pth"

    def decode_exp(self, system: str) -> Path:
        """The experiment that stage 12 decodes for ``system`` (a :attr:`SystemSize.name`): the
        trained one for an unpruned system, else the compact model's standalone directory that
        ``espnet_prune.bin.export --output_dir`` writes (as ``prune_stages.sh`` does); for a size
        of a multi-size system (``<system>/target0.80``) that size's directory in it."""
        name, _, size_dir = system.partition("/")
        experiment = self.exp(name) if name in UNPRUNED_METHODS else self.exp(f"{name}{PRUNED_SUFFIX}")
        return experiment / size_dir if size_dir else experiment

    def decode_dir(self, system: str, inference_tag: str = INFERENCE_TAG) -> Path:
        return self.decode_exp(system) / inference_tag / "test"

    @property
    def results(self) -> Path:
        return self.root / "results.json"


def lm_fusion_tag(pruning: Optional[LMPruning], target: Optional[float]) -> str:
    """Inference tag of a decoding with the dense LM (``pruning=None``) or a pruned one."""
    if pruning is None:
        return f"{INFERENCE_TAG}_lm_dense"
    return f"{INFERENCE_TAG}_lm_{pruning.name}_{lm_target_name(target)}"


def fusion_lms(settings: DemoSettings, paths: DemoPaths) -> List[Dict]:
    """The LMs decoded with by shallow fusion: the dense LM, then every pruned one.

    Returns:
        dicts with ``name``, ``pruning`` (an :class:`LMPruning` or None), ``target``,
        ``config``, ``model_file`` and ``inference_tag``.
    """
    lms = [dict(name="dense", pruning=None, target=None, config=paths.lm_exp / "config.yaml",
                model_file=paths.lm_model, inference_tag=lm_fusion_tag(None, None))]
    for pruning in settings.lm_prunings:
        for target in settings.lm_targets:
            directory = paths.lm_pruned(pruning) / lm_target_name(target)
            lms.append(dict(name=f"{pruning.name}_{lm_target_name(target)}", pruning=pruning, target=target,
                            config=directory / "config.yaml", model_file=directory / "model.pth",
                            inference_tag=lm_fusion_tag(pruning, target)))
    return lms


def final_model_file(experiment: Path) -> Path:
    """The model of the last training epoch (ESPnet's ``latest.pth``, a link to ``<N>epoch.pth``).

    Systems are decoded at the end of training, where the pruning has settled at its target
    (the best validation epoch may come from the ramp, before the target is reached).
    """
    latest = experiment / "latest.pth"
    if not latest.exists():
        raise DemoError(f"{latest} does not exist: training of {experiment.name} did not finish")
    return latest


def decode_files(paths: DemoPaths, size: SystemSize) -> Tuple[Path, Path]:
    """What stage 12 decodes for ``size``: ``(config.yaml, model file)`` of
    :meth:`DemoPaths.decode_exp`, the final model (the compact one for a pruned system)."""
    experiment = paths.decode_exp(size.name)
    return experiment / "config.yaml", experiment / final_model_file(paths.exp(size.system.name)).name


def training_time_file(experiment: Path) -> Path:
    """Where a fine-tuning step records its wall and CPU seconds (``{"wall_seconds", "cpu_seconds"}``)."""
    return experiment / "train_time.json"


# ---------------------------------------------------------------------------------------------
# Running steps in parallel lanes
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """A unit of work: ``action()`` returns a one-line summary for the progress log.

    ``stage`` is the asr.sh stage number it belongs to (or a name for the demo's own steps);
    ``after`` names the steps it needs; ``marker`` is written when it succeeds and, when it
    exists already, makes a rerun skip the step. Of the steps ready to run, those of lower
    ``priority`` start first (the ASR chain, which is the longest, before the LM's).
    """

    name: str
    stage: str
    action: Callable[[], str]
    after: Tuple[str, ...] = ()
    marker: Optional[Path] = None
    priority: int = 0


class Progress:
    """Progress lines ``[mm:ss] stage N  name: ...`` on ``stream``, safe from several threads."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        with self._lock:
            self.stream.write(f"[{minutes:3d}:{seconds:02d}] {text}\n")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def run_steps(steps: Sequence[Step], lanes: int, progress: Progress) -> None:
    """Run ``steps`` in dependency order, up to ``lanes`` at a time, in list order within a priority.

    Raises:
        DemoError: a step failed (after the running ones finish), or ``after`` names an unknown
            step or forms a cycle.
    """
    by_name = {step.name: step for step in steps}
    for step in steps:
        unknown = [name for name in step.after if name not in by_name]
        if unknown:
            raise DemoError(f"step '{step.name}' runs after unknown step(s) {unknown}")
    pending = list(steps)
    done: set = set()
    running: Dict[Future, Tuple[Step, float]] = {}
    failures: List[str] = []

    def label(step: Step) -> str:
        return f"stage {step.stage:<6} {step.name}"

    def start_ready(pool: ThreadPoolExecutor) -> None:
        """Skip finished steps and start ready ones while lanes are free (a skip can ready others)."""
        progressed = True
        while progressed and not failures:
            progressed = False
            for step in sorted(pending, key=lambda step: step.priority):
                if len(running) >= lanes:
                    return
                if not all(name in done for name in step.after):
                    continue
                pending.remove(step)
                progressed = True
                if step.marker is not None and step.marker.exists():
                    progress.say(f"{label(step)}: done before, skipped ({step.marker.parent})")
                    done.add(step.name)
                    continue
                progress.say(f"{label(step)}: started")
                running[pool.submit(step.action)] = (step, time.monotonic())

    with ThreadPoolExecutor(max_workers=lanes) as pool:
        while pending or running:
            start_ready(pool)
            if not running:
                if pending and not failures:
                    raise DemoError(f"steps {[step.name for step in pending]} wait for each other (a cycle)")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                step, started = running.pop(future)
                took = format_seconds(time.monotonic() - started)
                error = future.exception()
                if error is not None:
                    progress.say(f"{label(step)}: FAILED after {took}")
                    failures.append(f"{step.name}: {error}")
                    continue
                summary = future.result()
                if step.marker is not None:
                    step.marker.parent.mkdir(parents=True, exist_ok=True)
                    step.marker.write_text(summary + "\n", encoding="utf-8")
                done.add(step.name)
                progress.say(f"{label(step)}: done in {took}" + (f" -- {summary}" if summary else ""))
    if failures:
        raise DemoError("\n\n".join(failures))


# ---------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------


class DemoRecipe:
    """Builds and runs the demo's steps in ``paths.root``.

    Args:
        settings: what to run.
        paths: the working directory's layout.
        lanes: steps run at the same time.
        threads: CPU threads of each ESPnet process (``OMP_NUM_THREADS``).
        espnet_root: an ESPnet checkout: run its asr.sh / slu.sh (recipe mode) instead of the
            binaries directly.
        progress: where progress lines go.
    """

    def __init__(self, settings: DemoSettings, paths: DemoPaths, lanes: int = 2, threads: int = 1,
                 espnet_root: Optional[Path] = None, progress: Optional[Progress] = None):
        self.settings = settings
        self.paths = paths
        self.lanes = lanes
        self.threads = threads
        self.espnet_root = None if espnet_root is None else Path(espnet_root).resolve()
        self.progress = progress or Progress()
        self.task = settings.task
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                        PYTHONIOENCODING="UTF-8")

    # ------------------------------------------------------------------ processes
    def run(self, command: Sequence, log: Path, cwd: Optional[Path] = None) -> Dict[str, float]:
        """Run ``command`` with its output in ``log``; a failure raises with the log's tail.

        Returns:
            ``{"wall_seconds", "cpu_seconds"}`` of the command: its wall time and the user + system
            CPU time of the process and every descendant it waited for (``os.wait4``), so that steps
            running side by side are each timed on their own.
        """
        command = [str(part) for part in command]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            out.write(f"# {shlex.join(command)}\n")
            out.flush()
            started = time.monotonic()
            process = subprocess.Popen(command, cwd=cwd or self.paths.root, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - started
        if process.returncode != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
            raise DemoError(f"exit status {process.returncode} of\n  {shlex.join(command)}\n"
                            f"last lines of {log}:\n{tail}")
        return {"wall_seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}

    def espnet(self, tool: str, args: Sequence, log: Path) -> Dict[str, float]:
        """``python -m espnet_prune -m espnet2.bin.<tool> ARGS`` (what asr.sh runs with the plugin)."""
        return self.run([sys.executable, "-m", "espnet_prune", "-m", f"espnet2.bin.{tool}", *args], log)

    def ours(self, module: str, args: Sequence, log: Path) -> Dict[str, float]:
        """``python -m espnet_prune.<module> ARGS``."""
        return self.run([sys.executable, "-m", f"espnet_prune.{module}", *args], log)

    def record_training_time(self, experiment: Path, timing: Dict[str, float], steps: int) -> str:
        """Write a fine-tuning run's wall and CPU seconds (:meth:`run`) to :func:`training_time_file`,
        with the optimizer steps it trained for ``steps`` (whole epochs, :meth:`train_args`)."""
        per_epoch = min(self.settings.steps_per_epoch, steps)
        steps = -(-steps // per_epoch) * per_epoch
        record = dict(timing, steps=steps, threads=self.threads)
        experiment.mkdir(parents=True, exist_ok=True)
        training_time_file(experiment).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return (f"{steps} steps in {format_seconds(timing['wall_seconds'])} wall, "
                f"{format_seconds(timing['cpu_seconds'])} CPU")

    # ------------------------------------------------------------------ shared pieces
    @property
    def nlsyms_arg(self) -> str:
        return str(self.paths.nlsyms) if self.paths.nlsyms else "none"

    def token_args(self) -> List[str]:
        return ["--use_preprocessor", "true", "--bpemodel", "none", "--token_type", "char",
                "--token_list", self.paths.token_list, "--non_linguistic_symbols", self.nlsyms_arg,
                "--cleaner", "none", "--g2p", "none"]

    def train_args(self, steps: int, batch_size: Optional[int] = None) -> List:
        """Length of an ESPnet training run: about ``steps`` optimizer steps, in epochs of
        ``steps_per_epoch`` (one validation each), and the one-cycle schedule over all of them."""
        per_epoch = min(self.settings.steps_per_epoch, steps)
        epochs = -(-steps // per_epoch)
        args = ["--max_epoch", epochs, "--num_iters_per_epoch", per_epoch,
                "--scheduler_conf", f"total_steps={epochs * per_epoch}", "--seed", self.settings.seed]
        return args if batch_size is None else args + ["--batch_size", batch_size]

    def system_args(self, system: System) -> List[str]:
        """Options of one system's fine-tuning run on top of ``conf/train_<task>_pruned_ssl.yaml``."""
        settings = self.settings
        args = self.train_args(settings.training_steps(system), settings.batch_size)
        args += ["--frontend_conf", f"checkpoint={self.paths.ssl_checkpoint}",
                 "--frontend_conf", f"pruning.reference_seconds={settings.reference_seconds}"]
        if system.multi_size:
            overrides = system.frontend_overrides(settings.multisize_warmup_steps, settings.multisize_hold_steps)
        else:
            overrides = system.frontend_overrides(settings.prune_warmup_steps)
        for override in overrides:
            args += ["--frontend_conf", override]
        return args

    @property
    def finetune_config(self) -> Path:
        return self.paths.conf(f"train_{self.task}_pruned_ssl.yaml")

    @property
    def standin_config(self) -> Path:
        return self.paths.conf(f"train_{self.task}_ssl_standin.yaml")

    def extract_standin_encoder(self) -> str:
        """Save the stand-in's SSL encoder (``frontend.encoder.*`` of its best model) for fine-tuning
        (what run.sh does with ``python -m espnet_prune.bin.extract_ssl``)."""
        from espnet_prune.bin.extract_ssl import extract_ssl

        try:
            count = extract_ssl(self.paths.exp(SSL_STANDIN), self.paths.ssl_checkpoint)
        except (OSError, ValueError) as error:
            raise DemoError(f"the stand-in's encoder cannot be extracted: {error}") from None
        return f"{count} tensors -> {self.paths.ssl_checkpoint}"

    def score(self, system: str, inference_tag: str) -> Dict:
        """Stage 13 for one decoding: writes ``score.json`` beside its ``text``."""
        decode_dir = self.paths.decode_dir(system, inference_tag)
        symbols = scoring.read_symbols(self.paths.nlsyms)
        result = scoring.score_decoding(self.paths.dump("test") / "text", decode_dir / "text", self.task, symbols)
        (decode_dir / "score.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result

    def score_all(self) -> str:
        """Stage 13 for every decoding of :meth:`decodings`; returns the main number of each."""
        lines = []
        for system, tag in self.decodings():
            result = self.score(system, tag)
            main = (f"intent acc {100 * result['intent_acc']:.1f}%" if self.task == "slu"
                    else f"WER {100 * result['wer']:.1f}%")
            lines.append(f"{system}/{tag} {main}")
        return "; ".join(lines)

    def int8_systems(self) -> List[SystemSize]:
        """The models decoded a second time with dynamic int8 quantization: every pruned one (each
        size of a multi-size system too)."""
        return [size for size in self.settings.sizes() if size.pruned]

    def decodings(self) -> List[Tuple[str, str]]:
        """Every ``(system size name, inference_tag)`` that stage 12 decodes."""
        decodings = [(size.name, INFERENCE_TAG) for size in self.settings.sizes()]
        decodings += [(size.name, INT8_TAG) for size in self.int8_systems()]
        if self.settings.uses_lm:
            decodings += [(self.settings.fusion_system, lm["inference_tag"])
                          for lm in fusion_lms(self.settings, self.paths)]
        return decodings

    def marker(self, directory: Path, name: str) -> Path:
        """The file whose existence marks step ``name`` in ``directory`` as done."""
        return directory / f".done_{name}"

    def report_step(self, after: Tuple[str, ...]) -> Step:
        """Latency, ``results.json``, plot and table (:mod:`espnet_prune.demo.report`)."""
        from espnet_prune.demo.report import write_report

        def action() -> str:
            return str(write_report(self.settings, self.paths, self.threads, self.progress, self.mode_description()))

        return Step("report", "report", action, after=after)

    def mode_description(self) -> str:
        """How the stages run, for ``results.json``."""
        script = f"{self.task}.sh"
        if self.espnet_root is not None:
            return f"ESPnet's {script} from {self.espnet_root} (recipe mode)"
        return f"ESPnet binaries driven in {script}'s stage order (no egs2 TEMPLATE)"

    # ------------------------------------------------------------------ the plan
    def steps(self) -> List[Step]:
        """All steps of the demo, for :func:`run_steps`."""
        if self.espnet_root is not None:
            from espnet_prune.demo.recipe_mode import recipe_steps

            return recipe_steps(self)
        return direct_steps(self)

    def run_all(self) -> Path:
        """Run every step; returns the path of ``results.json``."""
        run_steps(self.steps(), self.lanes, self.progress)
        return self.paths.results


# ---------------------------------------------------------------------------------------------
# Direct mode: ESPnet's binaries in asr.sh's order
# ---------------------------------------------------------------------------------------------


def copy_pretrained_standin(checkpoint: Path, source: Path = PRETRAINED_STANDIN) -> str:
    """Put the committed self-supervised stand-in (``make pretrain``) where the CTC one would be."""
    files = [source / "ssl_encoder.pth", source / "ssl_encoder.json", source / "pretrain.json"]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise DemoError(f"the pretrained stand-in is missing ({', '.join(missing)}): run 'make pretrain'")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, checkpoint.parent / path.name)
    record = json.loads(files[2].read_text(encoding="utf-8"))
    return (f"self-supervised stand-in ({record['settings']['steps']} steps on {record['hours']:.2f} h of unlabelled "
            f"audio, final masked-prediction loss {record['curve'][-1]['loss']:.3f}) -> {checkpoint}")


def _copy_table(source: Path, target: Path, keep: set) -> None:
    """Copy the lines of a Kaldi table (``key value`` lines) whose key is in ``keep``."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.split(maxsplit=1)[0] in keep]
    target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def format_data_dir(source: Path, target: Path, text_files: Sequence[str]) -> int:
    """Stage 3 for a raw 16 kHz corpus: copy the data dir, write ``utt2num_samples`` and ``feats_type``.

    (asr.sh's ``format_wav_scp.sh`` would re-encode the audio; these wav files already are
    what ESPnet reads.) Returns the number of utterances.
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("wav.scp", "utt2spk", "spk2utt", *text_files):
        shutil.copyfile(source / name, target / name)
    samples = {}
    for line in (source / "wav.scp").read_text(encoding="utf-8").splitlines():
        utt_id, path = line.split(maxsplit=1)
        samples[utt_id] = soundfile.info(path).frames
    (target / "utt2num_samples").write_text("".join(f"{k} {v}\n" for k, v in sorted(samples.items())),
                                            encoding="utf-8")
    (target / "feats_type").write_text("raw\n", encoding="utf-8")
    return len(samples)


def filter_data_dir(source: Path, target: Path, text_files: Sequence[str], sample_rate: int = 16000) -> int:
    """Stage 4: keep utterances of ``MIN_WAV_SECONDS`` < duration < ``MAX_WAV_SECONDS`` with non-empty text.

    Returns the number kept.
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    lengths = scoring.read_transcripts(source / "utt2num_samples")
    texts = scoring.read_transcripts(source / "text")
    keep = {utt for utt, samples in lengths.items()
            if MIN_WAV_SECONDS * sample_rate < int(samples) < MAX_WAV_SECONDS * sample_rate and texts.get(utt)}
    for name in ("wav.scp", "utt2num_samples", "utt2spk", *text_files):
        _copy_table(source / name, target / name, keep)
    speakers: Dict[str, List[str]] = {}
    for line in (target / "utt2spk").read_text(encoding="utf-8").splitlines():
        utt_id, speaker = line.split()
        speakers.setdefault(speaker, []).append(utt_id)
    (target / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(speakers.items())),
                                    encoding="utf-8")
    shutil.copyfile(source / "feats_type", target / "feats_type")
    return len(keep)


def direct_steps(recipe: DemoRecipe) -> List[Step]:
    """The steps of direct mode (module docstring)."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    text_files = ["text"] + (["transcript"] if task == "slu" else [])
    steps: List[Step] = []

    def data() -> str:
        if paths.data.exists():
            shutil.rmtree(paths.data)
        corpus = corpus_module.make_corpus(
            paths.data, task=task, num_train=settings.num_train, num_dev=settings.num_dev,
            num_test=settings.num_test, num_lm_sentences=settings.num_lm_sentences,
            num_dev_voices=settings.num_dev_voices, num_test_voices=settings.num_test_voices,
            seed=settings.seed, num_workers=recipe.lanes)
        summary = json.loads((corpus.root / "corpus.json").read_text(encoding="utf-8"))
        return ", ".join(f"{split} {summary[f'num_{split}']} utts ({60 * summary['hours'][split]:.1f} min, "
                         f"{len(summary['voices'][split])} voices)" for split in corpus_module.SPLITS)

    steps.append(Step("data", "1", data, marker=recipe.marker(paths.data, "data")))

    def format_and_filter() -> str:
        counts = {}
        for split in ("train", "dev"):
            org = paths.root / "dump" / "raw" / "org" / split
            format_data_dir(paths.data / split, org, text_files)
            counts[split] = filter_data_dir(org, paths.dump(split), text_files)
        counts["test"] = format_data_dir(paths.data / "test", paths.dump("test"), text_files)
        lines = [line for line in (paths.data / "lm_train.txt").read_text(encoding="utf-8").splitlines()
                 if len(line.split()) > 1]
        paths.lm_train_text.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return ", ".join(f"{split} {count}" for split, count in counts.items()) + f"; lm_train.txt {len(lines)} lines"

    steps.append(Step("format", "2-4", format_and_filter, after=("data",),
                      marker=recipe.marker(paths.root / "dump" / "raw", "format")))

    def token_list() -> str:
        paths.token_list.parent.mkdir(parents=True, exist_ok=True)
        recipe.espnet("tokenize_text", [
            "--token_type", "char", "--input", paths.lm_train_text, "--output", paths.token_list,
            "--non_linguistic_symbols", recipe.nlsyms_arg, "--field", "2-", "--cleaner", "none", "--g2p", "none",
            "--write_vocabulary", "true", "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1",
            "--add_symbol", "<sos/eos>:-1"], paths.token_list.parent / "tokenize_text.log")
        return f"{len(paths.token_list.read_text(encoding='utf-8').splitlines())} tokens"

    steps.append(Step("token_list", "5", token_list, after=("format",),
                      marker=recipe.marker(paths.token_list.parent, "token_list")))

    if settings.uses_lm:
        steps += lm_steps(recipe)
    steps += asr_steps(recipe, text_files)
    return steps


def append_vocabulary_size(shape_file: Path, vocabulary_size: int, suffix: str = "char") -> Path:
    """``<key> <length>`` -> ``<key> <length>,<vocabulary_size>`` in ``<shape_file>.<suffix>`` (asr.sh)."""
    target = shape_file.with_name(f"{shape_file.name}.{suffix}")
    lines = shape_file.read_text(encoding="utf-8").splitlines()
    target.write_text("".join(f"{line},{vocabulary_size}\n" for line in lines), encoding="utf-8")
    return target


def lm_steps(recipe: DemoRecipe) -> List[Step]:
    """Stages 6-8 and the LM pruning (ASR only)."""
    settings, paths = recipe.settings, recipe.paths
    lm_config = paths.conf("train_lm.yaml")
    dev_text = paths.dump("dev") / "text"
    steps: List[Step] = []

    def lm_stats() -> str:
        logdir = paths.lm_stats / "logdir"
        recipe.espnet("lm_train", [
            "--collect_stats", "true", *recipe.token_args(),
            "--train_data_path_and_name_and_type", f"{paths.lm_train_text},text,text",
            "--valid_data_path_and_name_and_type", f"{dev_text},text,text",
            "--train_shape_file", paths.lm_train_text, "--valid_shape_file", dev_text,
            "--output_dir", logdir / "stats.1", "--config", lm_config], logdir / "stats.1.log")
        recipe.espnet("aggregate_stats_dirs", ["--input_dir", logdir / "stats.1", "--output_dir", paths.lm_stats],
                      logdir / "aggregate.log")
        vocabulary = len(paths.token_list.read_text(encoding="utf-8").splitlines())
        for split in ("train", "valid"):
            append_vocabulary_size(paths.lm_stats / split / "text_shape", vocabulary)
        return f"shapes in {paths.lm_stats}"

    steps.append(Step("lm_stats", "6", lm_stats, after=("token_list",), marker=recipe.marker(paths.lm_stats, "stats"),
                      priority=1))

    def lm_train() -> str:
        recipe.espnet("lm_train", [
            "--ngpu", 0, *recipe.token_args(),
            "--valid_data_path_and_name_and_type", f"{dev_text},text,text",
            "--valid_shape_file", paths.lm_stats / "valid" / "text_shape.char",
            "--fold_length", 150, "--resume", "true", "--output_dir", paths.lm_exp,
            "--train_data_path_and_name_and_type", f"{paths.lm_train_text},text,text",
            "--train_shape_file", paths.lm_stats / "train" / "text_shape.char",
            "--config", lm_config, *recipe.train_args(settings.lm_steps)], paths.lm_exp / "train.log")
        return f"{paths.lm_model}"

    steps.append(Step("lm_train", "7", lm_train, after=("lm_stats",), marker=recipe.marker(paths.lm_exp, "train"),
                      priority=1))

    def lm_perplexity() -> str:
        output = paths.lm_exp / "perplexity_test"
        recipe.espnet("lm_calc_perplexity", [
            "--ngpu", 0, "--data_path_and_name_and_type", f"{paths.dump('test') / 'text'},text,text",
            "--train_config", paths.lm_exp / "config.yaml", "--model_file", paths.lm_model,
            "--output_dir", output], output / "lm_calc_perplexity.log")
        return f"test perplexity {float((output / 'ppl').read_text().strip()):.3f}"

    steps.append(Step("lm_perplexity", "8", lm_perplexity, after=("lm_train",),
                      marker=recipe.marker(paths.lm_exp / "perplexity_test", "ppl"), priority=1))
    steps += lm_pruning_steps(recipe)
    return steps


def lm_pruning_steps(recipe: DemoRecipe) -> List[Step]:
    """``espnet_prune.bin.lm_prune`` for every LM pruning configuration (after stage 8)."""
    settings, paths = recipe.settings, recipe.paths
    steps = []
    for pruning in settings.lm_prunings:
        output = paths.lm_pruned(pruning)

        def prune(pruning: LMPruning = pruning, output: Path = output) -> str:
            recipe.ours("bin.lm_prune", [
                "--lm_train_config", paths.lm_exp / "config.yaml", "--lm_file", paths.lm_model,
                "--train_text", paths.lm_train_text, "--valid_text", paths.dump("dev") / "text",
                "--criterion", pruning.criterion, "--method", pruning.method, "--scheduler", pruning.scheduler,
                "--targets", ",".join(str(t) for t in settings.lm_targets),
                "--finetune_steps", settings.lm_finetune_steps, "--seed", settings.seed,
                "--latency_threads", 1, "--output_dir", output], output / "lm_prune.log")
            report = json.loads((output / "report.json").read_text(encoding="utf-8"))
            return ", ".join(f"{row['name']} ppl {row['perplexity']:.2f}" for row in report["systems"])

        steps.append(Step(f"lm_prune_{pruning.name}", "8+", prune, after=("lm_train",),
                          marker=recipe.marker(output, "prune"), priority=1))
    return steps


def asr_steps(recipe: DemoRecipe, text_files: Sequence[str]) -> List[Step]:
    """Stages 10-13 for the stand-in and every system, and the report."""
    settings, paths, task = recipe.settings, recipe.paths, recipe.task
    steps: List[Step] = []
    train_dir, valid_dir = paths.dump("train"), paths.dump("dev")

    def data_args(option: str, data_dir: Path) -> List:
        return [option, f"{data_dir}/wav.scp,speech,sound", option, f"{data_dir}/text,text,text"]

    def stats() -> str:
        logdir = paths.asr_stats / "logdir"
        recipe.espnet(f"{task}_train", [
            "--collect_stats", "true", *recipe.token_args(),
            *data_args("--train_data_path_and_name_and_type", train_dir),
            *data_args("--valid_data_path_and_name_and_type", valid_dir),
            "--train_shape_file", train_dir / "wav.scp", "--valid_shape_file", valid_dir / "wav.scp",
            "--output_dir", logdir / "stats.1", "--config", recipe.standin_config, "--frontend_conf", "fs=16k"],
            logdir / "stats.1.log")
        recipe.espnet("aggregate_stats_dirs", ["--input_dir", logdir / "stats.1", "--output_dir", paths.asr_stats],
                      logdir / "aggregate.log")
        vocabulary = len(paths.token_list.read_text(encoding="utf-8").splitlines())
        for split in ("train", "valid"):
            append_vocabulary_size(paths.asr_stats / split / "text_shape", vocabulary)
        return f"shapes in {paths.asr_stats}"

    steps.append(Step(f"{task}_stats", "10", stats, after=("token_list",),
                      marker=recipe.marker(paths.asr_stats, "stats")))

    def train(config: Path, experiment: Path, extra: Sequence) -> Dict[str, float]:
        shapes = []
        for split in ("train", "valid"):
            shapes += [f"--{split}_shape_file", paths.asr_stats / split / "speech_shape",
                       f"--{split}_shape_file", paths.asr_stats / split / "text_shape.char"]
        return recipe.espnet(f"{task}_train", [
            *recipe.token_args(), *data_args("--valid_data_path_and_name_and_type", valid_dir),
            *data_args("--train_data_path_and_name_and_type", train_dir), *shapes,
            "--resume", "true", "--fold_length", 80000, "--fold_length", 150,
            "--output_dir", experiment, "--config", config, "--frontend_conf", "fs=16k", *extra],
            experiment / "train.log")

    standin = paths.exp(SSL_STANDIN)

    def pretrain() -> str:
        if settings.standin == "pretrained":
            return copy_pretrained_standin(paths.ssl_checkpoint)
        train(recipe.standin_config, standin, recipe.train_args(settings.pretrain_steps, settings.batch_size))
        return recipe.extract_standin_encoder()

    steps.append(Step(SSL_STANDIN, "11", pretrain, after=(f"{task}_stats",), marker=recipe.marker(standin, "train")))

    decode_steps: List[str] = []
    int8 = recipe.int8_systems()
    for system in settings.systems:
        experiment = paths.exp(system.name)

        def finetune(system: System = system, experiment: Path = experiment) -> str:
            timing = train(recipe.finetune_config, experiment, recipe.system_args(system))
            took = recipe.record_training_time(experiment, timing, settings.training_steps(system))
            return f"{describe_training(experiment)}; {took}"

        steps.append(Step(f"train_{system.name}", "11", finetune, after=(SSL_STANDIN,),
                          marker=recipe.marker(experiment, "train")))
        previous = f"train_{system.name}"
        if system.method not in UNPRUNED_METHODS:
            def export(experiment: Path = experiment, system: System = system) -> str:
                model_file = final_model_file(experiment)
                recipe.ours("bin.export", ["--train_config", experiment / "config.yaml", "--model_file", model_file,
                                           "--output_dir", paths.decode_exp(system.name)], experiment / "export.log")
                summaries = []
                for size in system.sizes:
                    _, compact = decode_files(paths, size)
                    ratio = json.loads(compact.with_suffix(".json").read_text(encoding="utf-8"))["encoder"]["ratio"]
                    summaries.append(("" if size.size is None else f"{size.size_dir}: ")
                                     + f"params x{ratio['params']['total']:.3f}, MACs x{ratio['macs']['total']:.3f}")
                return "compact encoder: " + "; ".join(summaries)

            steps.append(Step(f"export_{system.name}", "export", export, after=(previous,),
                              marker=recipe.marker(experiment, "export")))
            previous = f"export_{system.name}"
        for size in system.sizes:
            steps.append(decode_step(recipe, size, INFERENCE_TAG, None, (previous,)))
            decode_steps.append(steps[-1].name)
            if size in int8:
                steps.append(decode_step(recipe, size, INT8_TAG, None, (previous,), quantize=True))
                decode_steps.append(steps[-1].name)

    if settings.uses_lm:
        fusion = next(system for system in settings.systems if system.name == settings.fusion_system).sizes[0]
        trained = f"export_{fusion.name}" if fusion.method not in UNPRUNED_METHODS else f"train_{fusion.name}"
        for lm in fusion_lms(settings, paths):
            lm_step = "lm_train" if lm["pruning"] is None else f"lm_prune_{lm['pruning'].name}"
            steps.append(decode_step(recipe, fusion, lm["inference_tag"], lm, (trained, lm_step)))
            decode_steps.append(steps[-1].name)

    steps.append(Step("score", "13", recipe.score_all, after=tuple(decode_steps)))
    steps.append(recipe.report_step(("score",) + (("lm_perplexity",) if settings.uses_lm else ())))
    return steps


def decode_step(recipe: DemoRecipe, system: SystemSize, inference_tag: str, lm: Optional[Dict],
                after: Tuple[str, ...], quantize: bool = False) -> Step:
    """Stage 12 (one job, batch 1) for ``system`` (one size), optionally with shallow fusion of ``lm``, or
    (``quantize``) with ESPnet's dynamic int8 quantization of the model (``--quantize_asr_model
    true``: every ``torch.nn.Linear``, the compact frontend's included, to qint8)."""
    paths, task = recipe.paths, recipe.task
    decode_dir = paths.decode_dir(system.name, inference_tag)

    def decode() -> str:
        output = decode_dir / "logdir" / "output.1"
        test = paths.dump("test")
        train_config, model_file = decode_files(paths, system)
        args = ["--batch_size", 1, "--ngpu", 0, "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound",
                "--key_file", test / "wav.scp", f"--{task}_train_config", train_config,
                f"--{task}_model_file", model_file, "--output_dir", output,
                "--config", paths.conf(f"decode_{task}.yaml"), "--beam_size", recipe.settings.beam_size]
        if lm is not None:
            args += ["--lm_train_config", lm["config"], "--lm_file", lm["model_file"],
                     "--lm_weight", recipe.settings.lm_weight]
        if quantize:
            args += ["--quantize_asr_model", "true"]
        recipe.espnet(f"{task}_inference", args, decode_dir / "logdir" / f"{task}_inference.1.log")
        hypotheses = output / "1best_recog" / "text"
        lines = sorted(hypotheses.read_text(encoding="utf-8").splitlines()) if hypotheses.exists() else []
        (decode_dir / "text").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return f"{len(lines)} hypotheses in {decode_dir / 'text'}"

    name = f"decode_{system.name}" + ("" if lm is None else f"_lm_{lm['name']}") + ("_int8" if quantize else "")
    return Step(name, "12", decode, after=after, marker=recipe.marker(decode_dir, "decode"))


def describe_training(experiment: Path) -> str:
    """The last validation line of an ESPnet training log, shortened to its key numbers."""
    log = experiment / "train.log"
    last = ""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "epoch results:" in line:
            last = line
    if not last:
        return f"log in {log}"
    keys = ("cer_ctc", "prune_expected_total", "prune_expected_cnn", "prune_expected_transformer")
    found = []
    for key in keys:
        marker = f"{key}="
        index = last.rfind(marker)
        if index >= 0:
            value = last[index + len(marker):].split(",")[0]
            found.append(f"{key} {value}")
    return ", ".join(found)
