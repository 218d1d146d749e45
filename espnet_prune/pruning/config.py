"""The ``pruning`` settings of HJ-Pruning: one typed dataclass, the single source of their
keys, defaults, types and validation.

``frontend_conf.pruning`` in an ESPnet YAML becomes a :class:`PruningConfig` through
:meth:`PruningConfig.from_dict`, which refuses unknown keys and wrong types with a message
that names the key, before any model is built. :class:`~espnet_prune.pruning.controller.
PruningController` owns the resulting object.
"""

import math
import numbers
from dataclasses import MISSING, InitVar, asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence

from espnet_prune.presets import preset as read_preset
from espnet_prune.ssl.units import UNIT_TYPES

#: Pruning units, in the order the encoder consumes their masks.
UNITS = UNIT_TYPES
METRICS = ("macs", "params")


def _is_number(value: Any) -> bool:
    """A real number that YAML can give (int or float), but not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
        metric: ``macs`` (HJ-Pruning by MACs) or ``params`` (HJ-Pruning by size).
        target: joint keep ratio in (0, 1] of the metric for the whole encoder ...
        cnn_target: ... or a keep ratio in (0, 1] for the CNN feature extractor and
        transformer_target: one for the rest (feature projection, positional conv, layers):
            separate budgets, exclusive with ``target``.
        warmup_steps: optimizer steps (a whole number >= 0) over which each target ramps
            linearly from 1.0 to its final value.
        reference_seconds: input duration (s, > 0) the MACs are counted for.
        reg_lr: learning rate (> 0) of the gates (their own parameter group) and full-rate
            step of lambda1 (see ``PruningController.advance``).
        lambda2_lr_scale: lambda2 moves this many times faster than lambda1 (> 0).
        temperature: hard-concrete temperature beta (> 0).
        init_keep_prob: initial keep probability of every unit, in (0, 1).
    """

    preset: Optional[str] = None
    units: List[str] = field(default_factory=lambda: ["conv", "head", "interm"])
    metric: str = "macs"
    target: Optional[float] = None
    cnn_target: Optional[float] = None
    transformer_target: Optional[float] = None
    warmup_steps: int = 5000
    reference_seconds: float = 10.0
    reg_lr: float = 0.02
    lambda2_lr_scale: float = 10.0
    temperature: float = 2.0 / 3.0
    init_keep_prob: float = 0.99
    #: Prefix of the keys in error messages (an init-only argument, not a YAML key).
    where: InitVar[str] = "pruning"

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
            values = {**read_preset("pruning", name), **values}
        return cls(**values, where=where)

    def to_dict(self) -> Dict[str, Any]:
        """The YAML keys and their values (plain types)."""
        return asdict(self)

    # ------------------------------------------------------------------ validation
    def _name(self, key: str) -> str:
        return f"{self._where}.{key}"

    def _number(self, key: str, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"{self._name(key)} must be a number, got {type(value).__name__} {value!r}")
        return float(value)

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

    def __post_init__(self, where: str):
        self._where = where
        units = [self.units] if isinstance(self.units, str) else self.units
        if not isinstance(units, Sequence) or not all(isinstance(u, str) for u in units):
            raise ValueError(f"{self._name('units')} must be a list of unit names, got {self.units!r}")
        units = list(units)
        unknown = [u for u in units if u not in UNITS]
        if unknown:
            raise ValueError(f"{self._name('units')}: Unknown pruning unit(s) {unknown}; choose from {list(UNITS)}")
        if not units:
            raise ValueError(f"{self._name('units')}: pruning units must name at least one of " + ", ".join(UNITS))
        repeated = sorted({u for u in units if units.count(u) > 1})
        if repeated:
            raise ValueError(f"{self._name('units')} names {repeated} more than once; list each unit once")
        self.units = units
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise ValueError(f"{self._name('metric')}: Unknown pruning metric {self.metric!r}; "
                             f"choose from {list(METRICS)}")
        self.target = self._ratio("target")
        self.cnn_target = self._ratio("cnn_target")
        self.transformer_target = self._ratio("transformer_target")
        if self.target is not None and (self.cnn_target is not None or self.transformer_target is not None):
            raise ValueError(f"{self._where}: 'target' (joint budget) is exclusive with 'cnn_target'/"
                             "'transformer_target' (separate budgets); give one or the other")
        if self.target is None and self.cnn_target is None and self.transformer_target is None:
            raise ValueError(f"{self._where}: pruning needs a budget: 'target', or 'cnn_target' and/or "
                             "'transformer_target'")
        if self.cnn_target is not None and self.cnn_target < 1.0 and "conv" not in units:
            raise ValueError(f"{self._name('cnn_target')} < 1 needs the 'conv' unit in {self._name('units')}")
        if (self.transformer_target is not None and self.transformer_target < 1.0
                and not set(units) - {"conv"}):
            raise ValueError(f"{self._name('transformer_target')} < 1 needs a Transformer unit "
                             f"(head, attn_layer, interm, ffn_layer) in {self._name('units')}")
        warmup = self.warmup_steps
        if not _is_number(warmup) or not float(warmup).is_integer():
            raise ValueError(f"{self._name('warmup_steps')} must be a whole number of steps, got "
                             f"{type(warmup).__name__} {warmup!r}")
        if warmup < 0:
            raise ValueError(f"{self._name('warmup_steps')} must be >= 0, got {warmup}")
        self.warmup_steps = int(warmup)
        for key in ("reference_seconds", "reg_lr", "lambda2_lr_scale", "temperature"):
            setattr(self, key, self._positive(key))
        keep = self._number("init_keep_prob", self.init_keep_prob)
        if not 0.0 < keep < 1.0:
            raise ValueError(f"{self._name('init_keep_prob')} must lie in (0, 1), got {self.init_keep_prob!r}")
        self.init_keep_prob = keep
