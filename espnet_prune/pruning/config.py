"""The ``pruning`` settings of HJ-Pruning: one typed dataclass, the single source of their
keys, defaults, types and validation.

``frontend_conf.pruning`` in an ESPnet YAML becomes a :class:`PruningConfig` through
:meth:`PruningConfig.from_dict`, which refuses unknown keys and wrong types with a message
that names the key, before any model is built. :class:`~espnet_prune.pruning.controller.
PruningController` owns the resulting object.
"""

from dataclasses import MISSING, InitVar, asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence

from espnet_prune.presets import preset as read_preset
from espnet_prune.pruning.decode_latency import load_table as load_decode_table
from espnet_prune.pruning.metrics import METRICS
from espnet_prune.ssl.latency import load_table
from espnet_prune.ssl.units import UNIT_NAMES
from espnet_prune.utils.config_values import number, whole_number

#: Budget keys of one model size and of several (``targets``: one run, several sizes).
SINGLE_SIZE_KEYS = ("target", "cnn_target", "transformer_target")
MULTI_SIZE_KEYS = ("targets", "cnn_targets", "transformer_targets")
#: The values ``reg_lr`` may take. Adam moves a gate's ``log_alpha`` by up to about ``reg_lr`` per
#: step, and about 9 lie between a unit kept with probability 0.99 (``init_keep_prob``) and one
#: removed (0.01); lambda1 moves by up to ``reg_lr`` per step. Above 1 a handful of steps decides a
#: unit and the multipliers swing instead of settling (``reg_lr: 1e9`` was seen to freeze the gates
#: at +-5e9); below 1e-4 the rule ``warmup_steps * reg_lr >= 10`` (``MIN_WARMUP_TIMES_LR`` of
#: :mod:`espnet_prune.pruning.controller`) asks for a ramp of more than 100 000 steps.
REG_LR_RANGE = (1e-4, 1.0)


@dataclass
class PruningConfig:
    """HJ-Pruning settings (``frontend_conf.pruning``); every field is a YAML key.

    Args:
        preset: name of a budget in the top-level ``conf/pruning/`` (e.g. ``hj_macs0.5``):
            :meth:`from_dict` starts from its ``units``, ``metric`` and target(s), and the
            keys given beside it override them (``target: null`` drops its joint target).
        units: pruning units to gate, any of ``conv`` (CNN output channels), ``head``
            (attention heads), ``attn_layer`` (whole attention sublayers), ``interm`` (FFN
            intermediate units), ``ffn_layer`` (whole FFN sublayers); each at most once. A
            single string is taken as a one-element list.
        metric: ``macs`` (HJ-Pruning by MACs), ``params`` (HJ-Pruning by size) or ``latency``
            (the latency ``latency_table`` predicts).
        target: joint keep ratio in (0, 1] of the metric for the whole encoder ...
        cnn_target: ... or a keep ratio in (0, 1] for the CNN feature extractor and
        transformer_target: one for the rest (feature projection, positional conv, layers):
            separate budgets, exclusive with ``target``.
        targets: several model sizes from one run (exclusive with every single-size budget):
            at least two joint keep ratios in (0, 1], strictly decreasing (``[0.8, 0.6, 0.4]``);
            the run ramps to each in turn and holds it for ``hold_steps``, see
            :mod:`espnet_prune.pruning.multisize` ...
        cnn_targets: ... or, for separate budgets, lists of CNN and
        transformer_targets: Transformer keep ratios of equal length (one of them may be
            omitted), each non-increasing, every size smaller than the previous one in at
            least one of them.
        warmup_steps: optimizer steps (a whole number >= 0) over which each target ramps
            linearly from 1.0 to its final value (with ``targets``: from the previous size's
            target to the next one's).
        hold_steps: with ``targets`` / ``cnn_targets`` / ``transformer_targets`` only: optimizer
            steps (a whole number >= 0) each size is held after its ramp before the next ramp
            starts, extended by at most as many steps until the exported structure is within
            ``BUDGET_TOLERANCE`` of the size's target (the model state of every size but the last
            is kept at the end of its hold; the last is held until training ends); ``None``:
            ``warmup_steps``.
        reference_seconds: input duration (s, > 0) the MACs are counted for.
        reg_lr: learning rate of the gates (their own parameter group) and full-rate step of
            lambda1 (see ``PruningController.advance``), in [0.0001, 1] (:data:`REG_LR_RANGE`).
        lambda2_lr_scale: lambda2 moves this many times faster than lambda1 (> 0).
        temperature: hard-concrete temperature beta (> 0).
        init_keep_prob: initial keep probability of every unit, in (0, 1).
        latency_table: a latency table (JSON) of this encoder measured on the device the model
            will decode on (``python -m espnet_prune.bin.profile_latency``); needed by
            ``metric: latency``, and with any metric it adds the predicted latency ratio to
            export's report. Its architecture, ``reference_seconds`` and ``latency_batch`` must
            be the table's (checked when the controller is built); another device or thread
            count is a warning.
        latency_batch: the batch size the latency is priced for (a whole number >= 1), the
            table's ``--batch``.
        align: CNN channels and FFN units are kept in multiples of this (a whole number >= 1) by
            the deterministic mask, and so by export and in the exported cost (a layer keeps at
            least ``align`` CNN channels; an FFN may keep none); 1: any number.
    """

    preset: Optional[str] = None
    units: List[str] = field(default_factory=lambda: ["conv", "head", "interm"])
    metric: str = "macs"
    target: Optional[float] = None
    cnn_target: Optional[float] = None
    transformer_target: Optional[float] = None
    targets: Optional[List[float]] = None
    cnn_targets: Optional[List[float]] = None
    transformer_targets: Optional[List[float]] = None
    warmup_steps: int = 5000
    hold_steps: Optional[int] = None
    reference_seconds: float = 10.0
    reg_lr: float = 0.02
    lambda2_lr_scale: float = 10.0
    temperature: float = 2.0 / 3.0
    init_keep_prob: float = 0.99
    latency_table: Optional[str] = None
    latency_batch: int = 1
    align: int = 1
    #: Prefix of the keys in error messages (an init-only argument, not a YAML key).
    where: InitVar[str] = "pruning"
    #: The budgets besides the joint ``total`` (keys ``<name>_target`` and ``<name>_targets``).
    SEPARATE_BUDGETS = ("cnn", "transformer")

    @classmethod
    def keys(cls) -> List[str]:
        """The YAML keys, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """``{key: default}`` of every YAML key (``None`` for the budgets)."""
        return {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]], where: str = "pruning") -> "PruningConfig":
        """Build from a YAML mapping; unknown keys are an error that lists the known ones."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be a mapping of pruning keys, got {type(values).__name__} {values!r}")
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in {where}; known keys: {sorted(cls.keys())}")
        values = dict(values)
        name = values.get("preset")
        if name is not None:
            if not isinstance(name, str):
                raise ValueError(f"{where}.preset must be the name of a file in conf/pruning/, got "
                                 f"{type(name).__name__} {name!r}")
            preset_values = read_preset("pruning", name)
            if any(values.get(key) is not None for key in MULTI_SIZE_KEYS):
                # Several sizes given beside a preset replace its single-size target(s).
                preset_values = {k: v for k, v in preset_values.items() if k not in SINGLE_SIZE_KEYS}
            values = {**preset_values, **values}
        return cls(**values, where=where)

    def to_dict(self) -> Dict[str, Any]:
        """The YAML keys and their values (plain types)."""
        return asdict(self)

    # ------------------------------------------------------------------ validation
    def _name(self, key: str) -> str:
        return f"{self._where}.{key}"

    def _number(self, key: str, value: Any) -> float:
        return number(self._name(key), value)

    def _positive(self, key: str) -> float:
        value = self._number(key, getattr(self, key))
        if not value > 0:
            raise ValueError(f"{self._name(key)} must be > 0, got {getattr(self, key)!r}")
        return value

    def _ratio(self, key: str) -> Optional[float]:
        value = getattr(self, key)
        if value is None:
            return None
        value = self._number(key, value)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{self._name(key)}: pruning {key} must be a keep ratio in (0, 1], got {value}")
        return value

    def unit_list(self, key: str, units: Any, names: Optional[Sequence[str]]) -> List[str]:
        """``units`` (a list of unit names, or one name) checked against ``names`` (``None``: any
        names); ``key`` names it."""
        units = [units] if isinstance(units, str) else units
        if not isinstance(units, Sequence) or not all(isinstance(u, str) for u in units):
            raise ValueError(f"{self._name(key)} must be a list of unit names, got {units!r}")
        units = list(units)
        unknown = [] if names is None else [u for u in units if u not in names]
        if unknown:
            raise ValueError(f"{self._name(key)}: Unknown pruning unit(s) {unknown}; choose from {list(names)}")
        if not units:
            raise ValueError(f"{self._name(key)}: pruning units must name at least one of " + ", ".join(names or ()))
        repeated = sorted({u for u in units if units.count(u) > 1})
        if repeated:
            raise ValueError(f"{self._name(key)} names {repeated} more than once; list each unit once")
        return units

    def frontend_units(self) -> List[str]:
        """The SSL encoder's units this config gates."""
        return self.units

    def _separate(self, plural: bool = False) -> List[str]:
        """The keys of the separate budgets (``cnn_target``, ...; ``plural``: ``cnn_targets``, ...)."""
        return [f"{name}_target{'s' if plural else ''}" for name in self.SEPARATE_BUDGETS]

    def __post_init__(self, where: str):
        self._where = where
        self._check_units()
        units = self.frontend_units()
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise ValueError(f"{self._name('metric')}: Unknown pruning metric {self.metric!r}; "
                             f"choose from {list(METRICS)}")
        self.target = self._ratio("target")
        for key in self._separate():
            setattr(self, key, self._ratio(key))
        separate = "/".join(f"'{key}'" for key in self._separate())
        if self.target is not None and any(getattr(self, key) is not None for key in self._separate()):
            raise ValueError(f"{self._where}: 'target' (joint budget) is exclusive with {separate} (separate "
                             "budgets); give one or the other")
        self._check_sizes()
        if (self.target is None and all(getattr(self, key) is None for key in self._separate())
                and not self.is_multi_size):
            raise ValueError(f"{self._where}: pruning needs a budget: 'target', or "
                             + " and/or ".join(f"'{key}'" for key in self._separate())
                             + " (or, for several sizes from one run, 'targets', or "
                             + " and/or ".join(f"'{key}'" for key in self._separate(plural=True)) + ")")
        cnn_smallest = self.cnn_target if self.cnn_targets is None else self.cnn_targets[-1]
        transformer_smallest = (self.transformer_target if self.transformer_targets is None
                                else self.transformer_targets[-1])
        if cnn_smallest is not None and cnn_smallest < 1.0 and "conv" not in units:
            key = "cnn_target" if self.cnn_targets is None else "cnn_targets"
            raise ValueError(f"{self._name(key)} < 1 needs the 'conv' unit in {self._name('units')}")
        if (transformer_smallest is not None and transformer_smallest < 1.0
                and not set(units) - {"conv"}):
            key = "transformer_target" if self.transformer_targets is None else "transformer_targets"
            raise ValueError(f"{self._name(key)} < 1 needs a Transformer unit "
                             f"(head, attn_layer, interm, ffn_layer) in {self._name('units')}")
        warmup = whole_number(self._name("warmup_steps"), self.warmup_steps, "a whole number of steps")
        if warmup < 0:
            raise ValueError(f"{self._name('warmup_steps')} must be >= 0, got {warmup}")
        self.warmup_steps = warmup
        self._check_hold_steps()
        for key in ("reference_seconds", "reg_lr", "lambda2_lr_scale", "temperature"):
            setattr(self, key, self._positive(key))
        low, high = REG_LR_RANGE
        if not low <= self.reg_lr <= high:
            raise ValueError(f"{self._name('reg_lr')} must lie in [{low:g}, {high:g}], got {self.reg_lr:g}: it is the "
                             "gates' learning rate and the multipliers' step per optimizer step (doc/budget.md; 0.02 "
                             "to 0.2 are the values in use)")
        keep = self._number("init_keep_prob", self.init_keep_prob)
        if not 0.0 < keep < 1.0:
            raise ValueError(f"{self._name('init_keep_prob')} must lie in (0, 1), got {self.init_keep_prob!r}")
        self.init_keep_prob = keep
        self._check_latency()

    def _check_latency(self) -> None:
        """``latency_table`` (a table file, needed by ``metric: latency``), ``latency_batch``, ``align``."""
        for key in ("latency_batch", "align"):
            value = whole_number(self._name(key), getattr(self, key), "a whole number")
            if value < 1:
                raise ValueError(f"{self._name(key)} must be >= 1, got {value}")
            setattr(self, key, value)
        if self.latency_table is None:
            if self.metric == "latency":
                raise ValueError(f"{self._name('metric')}: latency needs {self._name('latency_table')}, a table "
                                 f"measured by python -m espnet_prune.bin.{self.LATENCY_PROFILER} on the decoding "
                                 "device")
            return
        if not isinstance(self.latency_table, str):
            raise ValueError(f"{self._name('latency_table')} must be the path of a latency table, got "
                             f"{type(self.latency_table).__name__} {self.latency_table!r}")
        self._load_latency_table()

    #: The command that measures this budget's latency table.
    LATENCY_PROFILER = "profile_latency"

    def _load_latency_table(self) -> None:
        """Read ``latency_table`` (refusing a missing file or another format by name)."""
        load_table(self.latency_table, self._name("latency_table"))

    # ------------------------------------------------------------------ several sizes
    @property
    def is_multi_size(self) -> bool:
        """Whether one run yields several sizes (``targets``, ``cnn_targets`` or ``transformer_targets``)."""
        return any(getattr(self, key) is not None for key in ["targets"] + self._separate(plural=True))

    def sizes(self) -> List[Dict[str, float]]:
        """The budgets of every model size the run yields, largest first: ``[{"total": 0.8},
        {"total": 0.6}]``, ``[{"cnn": 0.7, "transformer": 0.6}, ...]``; one entry without ``targets``."""
        if self.targets is not None:
            return [{"total": t} for t in self.targets]
        if self.is_multi_size:
            lists = {name: getattr(self, f"{name}_targets") for name in self.SEPARATE_BUDGETS}
            lists = {name: values for name, values in lists.items() if values is not None}
            count = len(next(iter(lists.values())))
            return [{name: values[i] for name, values in lists.items()} for i in range(count)]
        if self.target is not None:
            return [{"total": self.target}]
        return [{name: getattr(self, f"{name}_target") for name in self.SEPARATE_BUDGETS
                 if getattr(self, f"{name}_target") is not None}]

    @property
    def effective_hold_steps(self) -> int:
        """``hold_steps``, or ``warmup_steps`` where it is ``None``."""
        return self.warmup_steps if self.hold_steps is None else self.hold_steps

    def _check_units(self) -> None:
        self.units = self.unit_list("units", self.units, UNIT_NAMES)

    def _ratio_list(self, key: str) -> Optional[List[float]]:
        values = getattr(self, key)
        if values is None:
            return None
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise ValueError(f"{self._name(key)} must be a list of keep ratios, e.g. [0.8, 0.6, 0.4], got "
                             f"{type(values).__name__} {values!r}")
        if len(values) < 2:
            single = key[:-1]
            raise ValueError(f"{self._name(key)} needs at least two sizes, got {list(values)!r}; for one size "
                             f"give '{single}: {values[0] if values else 0.5}'")
        ratios = []
        for i, value in enumerate(values):
            value = number(f"{self._name(key)}[{i}]", value)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{self._name(key)}[{i}]: every size's target must be a keep ratio in (0, 1], "
                                 f"got {value}")
            ratios.append(value)
        return ratios

    def _check_sizes(self) -> None:
        """Types, ranges, order and exclusivity of ``targets`` / ``cnn_targets`` / ``transformer_targets``."""
        for key in ["targets"] + self._separate(plural=True):
            setattr(self, key, self._ratio_list(key))
        if not self.is_multi_size:
            return
        given = [key for key in ["targets"] + self._separate(plural=True) if getattr(self, key) is not None]
        singles = [key for key in ["target"] + self._separate() if getattr(self, key) is not None]
        if singles:
            raise ValueError(f"{self._where}: {given} (several sizes) is exclusive with {singles} (one size); "
                             "give the sizes' lists only")
        if self.targets is not None and len(given) > 1:
            raise ValueError(f"{self._where}: 'targets' (joint budget) is exclusive with "
                             + "/".join(f"'{key}'" for key in self._separate(plural=True))
                             + " (separate budgets); give one or the other")
        if self.targets is not None:
            for i, (before, after) in enumerate(zip(self.targets, self.targets[1:])):
                if not after < before:
                    raise ValueError(f"{self._name('targets')} must be strictly decreasing (largest size first), "
                                     f"got {self.targets}: entry {i + 1} ({after}) is not below entry {i} ({before})")
            return
        lengths = {key: len(getattr(self, key)) for key in given}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self._where}: " + " and ".join(f"'{key}'" for key in given)
                             + f" must list the same number of sizes, got {lengths}")
        for key in given:
            values = getattr(self, key)
            for i, (before, after) in enumerate(zip(values, values[1:])):
                if after > before:
                    raise ValueError(f"{self._name(key)} must not increase (largest size first), got {values}: "
                                     f"entry {i + 1} ({after}) is above entry {i} ({before})")
        sizes = self.sizes()
        for i, (before, after) in enumerate(zip(sizes, sizes[1:])):
            if after == before:
                raise ValueError(f"{self._where}: sizes {i} and {i + 1} of {given} are equal ({after}); every size "
                                 "must be smaller than the previous one in at least one budget")

    def _check_hold_steps(self) -> None:
        hold = self.hold_steps
        if hold is None:
            return
        if not self.is_multi_size:
            raise ValueError(f"{self._name('hold_steps')} applies to several sizes from one run ('targets', "
                             "'cnn_targets', 'transformer_targets'); one target is held until training ends")
        hold = whole_number(self._name("hold_steps"), hold, "a whole number of steps")
        if hold < 0:
            raise ValueError(f"{self._name('hold_steps')} must be >= 0, got {hold}")
        self.hold_steps = hold


#: The parts of an ESPnet model a whole-model budget can cover, in the order the model runs them:
#: the SSL frontend, the downstream encoder, the attention decoder, and the CTC layer with its
#: prefix scoring in beam search (no unit removes any of it: a fixed cost of the decode).
MODEL_PARTS = ("frontend", "encoder", "decoder", "ctc")


@dataclass
class DecodingConfig:
    """The decoding a whole-model budget is priced for (``model_conf.pruning.decoding``).

    Args:
        beam_size: hypotheses the beam search scores at every output step (asr.sh's
            ``beam_size``, >= 1): the decoder's cost per token is paid this many times.
        tokens_per_second: output tokens per second of audio (> 0), e.g. ~3 for words, ~6 for
            BPE units, ~15 for characters of read English: the decoder runs once per token.
        ctc_weight: the decoding's CTC weight in [0, 1] (asr.sh's ``ctc_weight``): above 0 the
            CTC layer and its prefix scoring are run (a fixed cost); at 1 the attention decoder is
            not run at all (its cost is left out).
    """

    beam_size: int = 10
    tokens_per_second: float = 6.0
    ctc_weight: float = 0.3

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]], where: str) -> "DecodingConfig":
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be a mapping of decoding keys, got {type(values).__name__} {values!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in {where}; known keys: {known}")
        beam = whole_number(f"{where}.beam_size", values.get("beam_size", cls.beam_size), "a whole number")
        if beam < 1:
            raise ValueError(f"{where}.beam_size must be >= 1, got {beam}")
        tokens = number(f"{where}.tokens_per_second", values.get("tokens_per_second", cls.tokens_per_second))
        if not tokens > 0:
            raise ValueError(f"{where}.tokens_per_second must be > 0, got {tokens}")
        weight = number(f"{where}.ctc_weight", values.get("ctc_weight", cls.ctc_weight))
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"{where}.ctc_weight must lie in [0, 1], got {weight}")
        return cls(beam_size=beam, tokens_per_second=tokens, ctc_weight=weight)


@dataclass
class ModelPruningConfig(PruningConfig):
    """One budget over the whole ESPnet model (``model_conf.pruning`` of ``model: pruned_espnet``):
    the keys of :class:`PruningConfig`, and

    Args:
        parts: the parts the budget covers, any of :data:`MODEL_PARTS` (``frontend``, ``encoder``,
            ``decoder``, ``ctc``); ``None``: every part the model has. ``[frontend]`` prices and
            prunes the frontend alone, as ``frontend_conf.pruning`` does.
        units: ``{part: [unit, ...]}``, the units gated in each covered part (the frontend's are
            those of :class:`PruningConfig`, the encoder's and decoder's their modules' units
            tables), or a list: the frontend's units; a covered part without an entry gates its
            module's default units.
        decoding: the decoding the cost is priced for (:class:`DecodingConfig`: ``beam_size``,
            ``tokens_per_second``, ``ctc_weight``).
        frontend_target, encoder_target, decoder_target: separate budgets per part (keep ratios in
            (0, 1] of that part's cost), beside ``cnn_target`` / ``transformer_target`` (the
            frontend's CNN and the rest of it), exclusive with ``target``;
        frontend_targets, encoder_targets, decoder_targets: the same for several sizes.
        latency_table: for ``metric: latency``, a decode latency table of this model measured on
            the decoding device (``python -m espnet_prune.bin.profile_decode_latency``,
            :mod:`espnet_prune.pruning.decode_latency`): the whole ``Speech2Text`` decode timed
            part by part. It must have been measured for this model, ``decoding`` and
            ``reference_seconds`` (checked when the model is built); ``latency_batch`` is 1 and
            ``cnn_target`` / ``transformer_target`` are refused with it (it prices the frontend as
            a whole).
    The cost of a decode of ``reference_seconds`` of audio is the frontend's and the encoder's at
    their frame rates, the decoder's per token x ``tokens_per_second`` x ``reference_seconds`` x
    ``beam_size``, and the CTC layer's with its prefix scoring (fixed).
    """

    units: Any = None
    parts: Optional[List[str]] = None
    decoding: Any = None
    frontend_target: Optional[float] = None
    encoder_target: Optional[float] = None
    decoder_target: Optional[float] = None
    frontend_targets: Optional[List[float]] = None
    encoder_targets: Optional[List[float]] = None
    decoder_targets: Optional[List[float]] = None

    SEPARATE_BUDGETS = ("cnn", "transformer", "frontend", "encoder", "decoder")

    LATENCY_PROFILER = "profile_decode_latency"

    def _load_latency_table(self) -> None:
        """A decode latency table (:mod:`espnet_prune.pruning.decode_latency`), checked against the
        model when the model builds its parts; decodes are timed at batch 1, and it prices the
        frontend as a whole (no ``cnn`` / ``transformer`` split)."""
        load_decode_table(self.latency_table, self._name("latency_table"))
        if self.latency_batch != 1:
            raise ValueError(f"{self._name('latency_batch')} must be 1 with a whole-model latency table (a decode is "
                             f"timed at batch 1), got {self.latency_batch}")
        if self.metric == "latency":
            for name in ("cnn", "transformer"):
                for key in (f"{name}_target", f"{name}_targets"):
                    if getattr(self, key) is not None:
                        raise ValueError(f"{self._name(key)}: a whole-model latency table prices the frontend as a "
                                         "whole; budget it with frontend_target, or use metric macs")

    def _check_units(self) -> None:
        parts = self.parts
        if parts is not None:
            if isinstance(parts, str):
                parts = [parts]
            if not isinstance(parts, Sequence) or not all(isinstance(p, str) for p in parts) or not parts:
                raise ValueError(f"{self._name('parts')} must be a non-empty list of parts among {list(MODEL_PARTS)}, "
                                 f"got {self.parts!r}")
            unknown = [p for p in parts if p not in MODEL_PARTS]
            if unknown:
                raise ValueError(f"{self._name('parts')}: Unknown part(s) {unknown}; choose from {list(MODEL_PARTS)}")
            self.parts = list(dict.fromkeys(parts))
        units = self.units
        if units is None:
            units = {}
        elif isinstance(units, (str, Sequence)):
            units = {"frontend": units}
        if not isinstance(units, Mapping):
            raise ValueError(f"{self._name('units')} must map parts to lists of unit names (or be a list of the "
                             f"frontend's units), got {type(self.units).__name__} {self.units!r}")
        unknown = sorted(set(units) - set(MODEL_PARTS[:3]))
        if unknown:
            raise ValueError(f"{self._name('units')}: Unknown part(s) {unknown}; prunable parts are "
                             f"{list(MODEL_PARTS[:3])}")
        checked = {}
        for part, names in units.items():
            if self.parts is not None and part not in self.parts:
                raise ValueError(f"{self._name('units')} names part '{part}', which parts {self.parts} does not cover")
            if part == "frontend":
                checked[part] = self.unit_list("units.frontend", names, UNIT_NAMES)
            else:  # checked against the module's units table when the model is built
                checked[part] = self.unit_list(f"units.{part}", names, None)
        self.units = checked
        self.decoding = DecodingConfig.from_dict(self.decoding, self._name("decoding"))
        for name in ("frontend", "encoder", "decoder"):
            for key in (f"{name}_target", f"{name}_targets"):
                if getattr(self, key) is not None and self.parts is not None and name not in self.parts:
                    raise ValueError(f"{self._name(key)} budgets part '{name}', which parts {self.parts} does not "
                                     "cover")

    def frontend_units(self) -> List[str]:
        if "frontend" in self.units or (self.parts is not None and "frontend" not in self.parts):
            return self.units.get("frontend", [])
        return PruningConfig.defaults()["units"]

    def check_model(self, tables: Mapping[str, Sequence[str]], defaults: Mapping[str, Sequence[str]]) -> None:
        """Check against the model: ``tables`` ``{part: its unit names}`` of the parts the model has
        (prunable or not: ``ctc`` with no units), ``defaults`` ``{part: units gated by default}``.
        Fills ``parts`` (``None``: all the model has) and the covered parts' default ``units``."""
        if self.parts is None:
            self.parts = [part for part in MODEL_PARTS if part in tables]
        missing = [part for part in self.parts if part not in tables]
        if missing:
            raise ValueError(f"{self._name('parts')} names {missing}, which this model does not have as prunable "
                             f"parts (it has {[p for p in MODEL_PARTS if p in tables]}; the encoder and decoder "
                             "must be pruned_conformer / pruned_transformer to be pruned)")
        for part, names in self.units.items():
            self.unit_list(f"units.{part}", names, tables[part])
        for part in self.parts:
            if part not in self.units and defaults.get(part):
                self.units[part] = list(defaults[part])
        if not any(self.units.get(part) for part in self.parts):
            raise ValueError(f"{self._name('units')}: the covered parts {self.parts} gate no unit")
        for name in ("cnn", "transformer"):
            if "frontend" not in self.parts and (getattr(self, f"{name}_target") is not None
                                                 or getattr(self, f"{name}_targets") is not None):
                raise ValueError(f"{self._name(name + '_target')} budgets the frontend, which parts {self.parts} "
                                 "does not cover")
