"""The export report: what export writes beside every compact model, typed.

``espnet_prune.bin.export`` writes one :class:`ExportReport` per exported size (``M.json`` beside
the compact model ``M.pth``) and, for a run with several sizes, one :class:`SizesSummary`
(``summary.json``). The demo, ``espnet_prune.bin.size_results`` and the recipes read these files
(:meth:`ExportReport.read`, :meth:`SizesSummary.read`) instead of loading models to recount what
export already counted. ``doc/export.md`` lists every field (a test checks it against the
dataclasses here).

JSON form: a dataclass is an object with its fields in declaration order; a field with a default
(``None``) is left out while it is ``None``, a field without one is always written (``null`` when
``None``). Reading refuses a missing or an unknown key, naming it and the file.
"""

import dataclasses
import json
import logging
import typing
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from espnet_prune.utils.output_dir import replace_file

#: ``{metric: {"cnn", "pos_conv", "transformer", "total": value}}``: an encoder's cost in every metric.
MetricCosts = Dict[str, Dict[str, float]]


class ReportError(ValueError):
    """A report file that is not what export writes (not JSON, a missing or an unknown key)."""


def _decode(kind: Any, value: Any, where: str) -> Any:
    """``value`` (as JSON gives it) as ``kind`` (a dataclass, ``Optional``/``Dict``/``List`` of one, or plain)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _decode(next(arg for arg in args if arg is not type(None)), value, where)
    if dataclasses.is_dataclass(kind):
        return _from_dict(kind, value, where)
    if origin is dict and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise ReportError(f"{where} is not a mapping")
        return {key: _from_dict(args[1], item, f"{where}.{key}") for key, item in value.items()}
    if origin is list and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise ReportError(f"{where} is not a list")
        return [_from_dict(args[0], item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ReportError(f"{where} is not a mapping (a {cls.__name__})")
    hints = typing.get_type_hints(cls)
    known = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ReportError(f"{where} has unknown keys {unknown} (a {cls.__name__} has {list(known)})")
    values = {}
    for name, field in known.items():
        if name not in data:
            if field.default is dataclasses.MISSING:
                raise ReportError(f"{where} lacks the key '{name}' (a {cls.__name__})")
            continue
        values[name] = _decode(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return value.to_json()
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


class _JsonRecord:
    """``to_json()`` / ``from_json()`` for the dataclasses below (the module docstring gives the form)."""

    def to_json(self) -> Dict[str, Any]:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            out[field.name] = _encode(value)
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any], where: Optional[str] = None):
        return _from_dict(cls, data, where or cls.__name__)

    @classmethod
    def read(cls, path: Path):
        """The report in the JSON file ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export did not write it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ReportError(f"{path} is not JSON: {error}") from None
        return cls.from_json(data, str(path))

    def write(self, path: Path) -> None:
        """Write the report to ``path`` (replaced as a file of its own, never through a symlink)."""
        with replace_file(Path(path), "w") as f:
            json.dump(self.to_json(), f, indent=2)


@dataclass
class Budget(_JsonRecord):
    """One budget of the exported size.

    Args:
        target: the final target ratio.
        expected: the ratio expected under the gates.
        exported: the ratio of the exported (compact) structure.
        reached: ``exported`` within ``BUDGET_TOLERANCE`` (0.02) of ``target``.
        advice: what to change when it was not reached (``None`` when it was).
    """

    target: float
    expected: float
    exported: float
    reached: bool
    advice: Optional[str]


@dataclass
class BudgetSummary(_JsonRecord):
    """Where the pruning's budgets stand for the exported model
    (:func:`espnet_prune.pruning.reports.budget_summary`).

    Args:
        metric: the budgets' cost metric (``macs``, ``params``).
        steps: optimizer steps the controller had taken (the size's snapshot step for a size of several).
        warmup_steps: the target ramp's length.
        hold_steps: for a run with several sizes, the steps each size is held (absent otherwise).
        budgets: every budget by name (``total``, ``cnn``, ``transformer``).
        undecided_units: per gate, units whose keep probability is neither near 0 nor near 1.
        explanation: why exported and expected ratios differ by more than 0.01 (``None`` otherwise).
        warnings: the end-of-training warning of each missed budget.
    """

    metric: str
    steps: int
    warmup_steps: int
    hold_steps: Optional[int] = None
    _: KW_ONLY
    budgets: Dict[str, Budget]
    undecided_units: Dict[str, int]
    explanation: Optional[str]
    warnings: List[str]


@dataclass
class SizeInfo(_JsonRecord):
    """Which size of a run with several sizes was exported.

    Args:
        index: 0 for the largest size.
        name: its directory name (``target0.80``).
        targets: its target ratio per budget.
        step: the optimizer step its model state comes from (its snapshot's; the last size: the model's).
    """

    index: int
    name: str
    targets: Dict[str, float]
    step: int


@dataclass
class EncoderCost(_JsonRecord):
    """The SSL encoder's cost before (dense) and after export, in every metric
    (MACs for ``reference_seconds`` of audio).

    Args:
        before: ``{metric: {"cnn", "pos_conv", "transformer", "total"}}`` of the dense encoder.
        after: the same of the compact encoder.
        ratio: ``after / before`` per metric and part (parts whose dense cost is 0 left out).
    """

    before: MetricCosts
    after: MetricCosts
    ratio: MetricCosts

    @classmethod
    def of(cls, before: MetricCosts, after: MetricCosts) -> "EncoderCost":
        return cls(before, after, _ratios(before, after))


def _ratios(before: MetricCosts, after: MetricCosts) -> MetricCosts:
    """``after / before`` per metric and part, parts whose ``before`` is 0 left out."""
    return {metric: {part: after[metric][part] / before[metric][part] for part in before[metric]
                     if before[metric][part]} for metric in before}


@dataclass
class ModelCost(_JsonRecord):
    """A whole-model export's cost (``model_conf.pruning``): the parts its budget covers, priced for
    the decoding it names, before (the gated model's dense parts) and after export, in MACs for a
    decode of ``reference_seconds`` of audio and in parameters.

    Args:
        parts: the covered parts, in the order the model runs them (``frontend``, ``encoder``,
            ``decoder``, ``ctc``).
        decoding: the decoding the MACs are priced for (``beam_size``, ``tokens_per_second``,
            ``ctc_weight``).
        before: ``{metric: {part: cost, ..., "cnn", "transformer" (of the frontend), "total"}}``
            (``macs``, ``params``, and ``latency`` -- predicted milliseconds -- with a decode
            latency table) of the dense parts.
        after: the same of the compact parts.
        ratio: ``after / before`` per metric and part (parts whose dense cost is 0 left out);
            ``ratio[metric]["total"]`` is the whole decode's (what the budget ``total`` counts).
    """

    parts: List[str]
    decoding: Dict[str, float]
    before: MetricCosts
    after: MetricCosts
    ratio: MetricCosts

    @classmethod
    def of(cls, parts: List[str], decoding: Dict[str, float], before: MetricCosts,
           after: MetricCosts) -> "ModelCost":
        return cls(list(parts), dict(decoding), before, after, _ratios(before, after))


@dataclass
class ParamCount(_JsonRecord):
    """The whole ESPnet model's parameter count.

    Args:
        before: of the gated model (gates included).
        after: of the compact model.
    """

    before: int
    after: int


@dataclass
class Structure(_JsonRecord):
    """The encoder structure (an ``EncoderConfig`` dict, ``frontend_conf.arch``).

    Args:
        before: the dense structure.
        after: the compact structure (what the standalone ``config.yaml`` names as ``arch``).
    """

    before: Dict[str, Any]
    after: Dict[str, Any]


@dataclass
class OnnxFile(_JsonRecord):
    """The compact frontend written to ONNX (``--onnx``).

    Args:
        path: the ONNX file.
        max_abs_diff_torch_vs_onnxruntime: largest difference of onnxruntime's features from PyTorch's on the probe.
        int8: its int8 copy (``--onnx_int8``), as ``espnet_prune.asr.frontend.onnx_export.export_int8`` describes it.
    """

    path: str
    max_abs_diff_torch_vs_onnxruntime: float
    int8: Optional[Dict[str, Any]] = None


@dataclass
class ExportReport(_JsonRecord):
    """What export did with one size: ``M.json`` beside the compact model ``M.pth``.

    Args:
        train_config: the training config export read.
        model_file: the gated model file export read.
        task: ``asr`` or ``slu``.
        reference_seconds: the audio length the MACs are counted for.
        encoder: the SSL encoder's params and MACs before and after, and their ratios.
        model_params: the whole model's parameter count before and after.
        structure: the encoder structure before and after.
        max_abs_diff_gated_vs_compact: largest difference of the compact frontend's features from the gated one's
            on a probe input.
        pruning: where the budgets stand.
        size: which size, for a run with several sizes (absent otherwise).
        output_dir: the standalone experiment directory (``--output_dir``; absent for ``--output``).
        config: its ``config.yaml`` (absent for ``--output``).
        output: the compact model file.
        files: the files decoding reads that the config names (token list, BPE model, statistics ...), by key
            (absent for ``--output``).
        max_abs_diff_gated_vs_exported: the same difference for the model rebuilt from the directory alone
            (absent for ``--output``).
        onnx: the ONNX copy of the compact frontend (``--onnx``; absent otherwise).
        downstream: the downstream encoder's and decoder's ``pruned_structure`` before and after, by part
            (``model_conf.pruning`` only; absent otherwise).
        model: the whole-model cost of the parts the budget covers, per part and for the whole decode,
            before and after, and their ratios (``model_conf.pruning`` only; absent otherwise:
            ``encoder`` is then the whole pruned cost).
    """

    train_config: str
    model_file: str
    task: str
    reference_seconds: float
    encoder: EncoderCost
    model_params: ParamCount
    structure: Structure
    max_abs_diff_gated_vs_compact: float
    pruning: BudgetSummary
    size: Optional[SizeInfo] = None
    output_dir: Optional[str] = None
    config: Optional[str] = None
    output: Optional[str] = None
    files: Optional[Dict[str, str]] = None
    max_abs_diff_gated_vs_exported: Optional[float] = None
    onnx: Optional[OnnxFile] = None
    downstream: Optional[Dict[str, Structure]] = None
    model: Optional[ModelCost] = None

    def total(self, metric: str, when: str = "after") -> float:
        """The encoder's total ``metric`` cost ``before`` or ``after`` export."""
        return getattr(self.encoder, when)[metric]["total"]

    def ratio(self, metric: str) -> float:
        """The encoder's total ``metric`` cost after export over before."""
        return self.encoder.ratio[metric]["total"]

    def log(self) -> None:
        """Log the sizes, budgets, warnings and written files of this export."""
        from espnet_prune.ssl.cost import format_cost  # torch: the demo's light modules read reports

        logging.info("encoder params %s -> %s (%.1f%%), MACs for %.0f s %s -> %s (%.1f%%)",
                     format_cost(self.total("params", "before")), format_cost(self.total("params")),
                     100 * self.ratio("params"), self.reference_seconds, format_cost(self.total("macs", "before")),
                     format_cost(self.total("macs")), 100 * self.ratio("macs"))
        if "latency" in self.encoder.ratio:
            logging.info("encoder latency predicted by the table for %.0f s: %.1f ms -> %.1f ms (%.1f%%)",
                         self.reference_seconds, self.total("latency", "before"), self.total("latency"),
                         100 * self.ratio("latency"))
        if self.model is not None:
            model = self.model
            for metric, what in (("params", "params"), ("macs", f"MACs of a decode of {self.reference_seconds:g} s")):
                logging.info("whole model (%s) %s %s -> %s (%.1f%%)", ", ".join(model.parts), what,
                             format_cost(model.before[metric]["total"]), format_cost(model.after[metric]["total"]),
                             100 * model.ratio[metric]["total"])
            if "latency" in model.ratio:
                logging.info("whole model (%s) decode latency predicted by the table: %.1f ms -> %.1f ms (%.1f%%)",
                             ", ".join(model.parts), model.before["latency"]["total"],
                             model.after["latency"]["total"], 100 * model.ratio["latency"]["total"])
        pruning = self.pruning
        for name, budget in pruning.budgets.items():
            logging.info("pruning budget '%s' (%s): target %.3f, exported %.3f, expected under the gates %.3f",
                         name, pruning.metric, budget.target, budget.exported, budget.expected)
        if pruning.explanation:
            logging.info(pruning.explanation)
        for warning in pruning.warnings:
            logging.warning(warning)
        written = Path(self.output)
        if self.config is not None:
            logging.info("wrote %s, %s and %s", self.config, written, written.with_suffix(".json"))
        else:
            logging.info("wrote %s and %s", written, written.with_suffix(".json"))


@dataclass
class SizeRow(_JsonRecord):
    """One size of a run with several sizes in the summary.

    Args:
        size: its directory name (``target0.80``).
        output_dir: its standalone experiment directory.
        targets: its target ratio per budget.
        step: the optimizer step its model state comes from.
        params: the compact encoder's parameters.
        params_ratio: ``params`` over the dense encoder's.
        macs: the compact encoder's MACs for the reference length.
        macs_ratio: ``macs`` over the dense encoder's.
        dense_params: the dense encoder's parameters.
        dense_macs: the dense encoder's MACs.
        exported: the exported structure's ratio per budget.
        reached: whether every budget was reached.
        model_params_ratio: a whole-model export's (``model_conf.pruning``) parameters over the dense
            model's, over the parts its budget covers (:class:`ModelCost`; absent otherwise).
        model_macs_ratio: the same for the MACs of the decode the budget is priced for.
    """

    size: str
    output_dir: str
    targets: Dict[str, float]
    step: int
    params: float
    params_ratio: float
    macs: float
    macs_ratio: float
    dense_params: float
    dense_macs: float
    exported: Dict[str, float]
    reached: bool
    model_params_ratio: Optional[float] = None
    model_macs_ratio: Optional[float] = None

    @classmethod
    def of(cls, report: ExportReport) -> "SizeRow":
        model = report.model
        return cls(size=report.size.name, output_dir=report.output_dir, targets=report.size.targets,
                   step=report.size.step, params=report.total("params"), params_ratio=report.ratio("params"),
                   macs=report.total("macs"), macs_ratio=report.ratio("macs"),
                   dense_params=report.total("params", "before"), dense_macs=report.total("macs", "before"),
                   exported={name: budget.exported for name, budget in report.pruning.budgets.items()},
                   reached=all(budget.reached for budget in report.pruning.budgets.values()),
                   model_params_ratio=None if model is None else model.ratio["params"]["total"],
                   model_macs_ratio=None if model is None else model.ratio["macs"]["total"])

    def model_columns(self) -> str:
        """``model_params_ratio | model_macs_ratio | `` as table cells (``–`` where absent)."""
        return f"{format_ratio(self.model_params_ratio)} | {format_ratio(self.model_macs_ratio)} | "


@dataclass
class SizesSummary(_JsonRecord):
    """Every size of a run with several sizes: ``summary.json`` in export's ``--output_dir``.

    Args:
        train_config: the training config export read.
        model_file: the gated model file export read.
        sizes: one row per size, the largest first.
    """

    train_config: str
    model_file: str
    sizes: List[SizeRow]

    @classmethod
    def of(cls, train_config: Path, model_file: Path, reports: List[ExportReport]) -> "SizesSummary":
        return cls(str(train_config), str(model_file), [SizeRow.of(report) for report in reports])

    def whole_model(self) -> bool:
        """Whether the rows are of a whole-model export (``model_conf.pruning``), with whole-model ratios."""
        return any(row.model_macs_ratio is not None for row in self.sizes)

    def table(self, seconds: float) -> str:
        """The rows as a markdown table (the dense encoder first), MACs for ``seconds`` of audio; for a
        whole-model export the SSL frontend's columns are named so and the whole model's ratios follow."""
        from espnet_prune.ssl.cost import format_cost
        whole = self.whole_model()
        frontend = "frontend " if whole else ""
        model_head, model_rule, model_dense = ("model params ratio | model MACs ratio | ", "--- | --- | ",
                                               "1.000 | 1.000 | ") if whole else ("", "", "")
        lines = [f"| size | target | step | {frontend}params | {frontend}params ratio | "
                 f"{frontend}MACs ({seconds:g} s) | {frontend}MACs ratio | {model_head}exported | reached |",
                 f"| --- | --- | --- | --- | --- | --- | --- | {model_rule}--- | --- |"]
        if self.sizes:
            first = self.sizes[0]
            lines.append(f"| dense | – | – | {format_cost(first.dense_params)} | 1.000 | "
                         f"{format_cost(first.dense_macs)} | 1.000 | {model_dense}– | – |")
        for row in self.sizes:
            targets = ", ".join(f"{name} {value:.2f}" for name, value in row.targets.items())
            exported = ", ".join(f"{name} {value:.3f}" for name, value in row.exported.items())
            model = row.model_columns() if whole else ""
            lines.append(f"| {row.size} | {targets} | {row.step} | {format_cost(row.params)} | "
                         f"{row.params_ratio:.3f} | {format_cost(row.macs)} | {row.macs_ratio:.3f} | {model}"
                         f"{exported} | {'yes' if row.reached else 'no'} |")
        return "\n".join(lines)


def format_ratio(value: Optional[float]) -> str:
    """A ratio with three decimals, ``–`` for ``None``."""
    return "–" if value is None else f"{value:.3f}"
