"""Measured latency of an SSL encoder as a function of its kept widths: the latency table.

The encoder's latency is modelled as a sum of *pieces*, each timed on the device it will run
on as a function of the unit counts that shape it (:data:`~espnet_prune.ssl.cost.UnitCounts`):

=============  =====================================  ===========================================
piece          timed module                           varies with
=============  =====================================  ===========================================
``cnn[i]``     CNN layer i (conv, norm, GELU)         kept input ``C_{i-1}`` and output ``C_i``
``projection`` feature projection (LayerNorm, Linear)  kept channels of the last CNN layer
``attention``  one attention sublayer, with the        kept heads ``H`` (the ``T^2`` products at the
               residual add (and its LayerNorm when    table's duration included); counted once per
               pre-LN, which goes with the sublayer)   layer, times ``attn_layer``
``ffn``        one FFN sublayer, as above              kept units ``F``, times ``ffn_layer``
``pos_conv``   the convolutional positional embedding  nothing
``fixed``      the Transformer without any sublayer,   nothing
               less ``pos_conv`` (post-LN LayerNorms,
               WavLM's position bias, final norm)
=============  =====================================  ===========================================

Each varying piece is timed at a handful of widths (the *grid*), made non-decreasing in every
width (:func:`monotone`), and predicted in between by piecewise-linear interpolation (bilinear
over the CNN's input and output channels), linear extrapolation beyond. Evaluated at tensors --
expected counts under the gates -- the prediction is a tensor whose gradient reaches the gates,
as the MAC cost is (:mod:`espnet_prune.ssl.cost`); at whole counts it is a number, the same one
export reports for the exported structure. Unlike the MAC cost it is not the exact expectation
under the gates (a piecewise-linear function of a count is not linear in it); the budget
constrains the exported structure's cost, which is exact.

The table file is JSON (:func:`save_table` / :func:`load_table`); it records what it was measured
on (:data:`MEASURED_ON_KEYS`), the architecture (``EncoderConfig.to_dict()``), the fit, the
times in milliseconds and a ``calibration``: the affine map from the sum of the pieces to the
measured latency of two whole encoders, the dense one and one with half of every width
(:func:`calibrate`), which the prediction applies (``scale`` to every part, ``offset_ms`` to the
Transformer's); ``check`` holds the four numbers.
"""

import json
import os
import platform
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from espnet_prune.ssl import cost
from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import (
    ConvLayerBlock,
    ConvolutionalPositionalEmbedding,
    EncoderLayer,
    FeatureProjection,
    SSLEncoder,
)
from espnet_prune.utils.timing import time_interleaved

#: The ``format`` entry of a table file, and its version.
TABLE_FORMAT = "espnet_prune latency table"
TABLE_VERSION = 1
#: What a table records about where it was measured (``measured_on``).
MEASURED_ON_KEYS = ("device", "device_name", "threads", "dtype", "batch", "seconds", "rounds", "clock", "torch",
                    "date")
#: The architecture fields that do not change the computation (dropouts), ignored when a table's
#: architecture is compared with the pruned encoder's.
_IGNORED_ARCH_KEYS = ("encoder_projection_dropout", "encoder_dropout", "attention_dropout", "activation_dropout",
                      "layer_drop")
#: Fractions of a full width at which the FFN and the CNN layers are timed (plus width 0 for the
#: FFN, 1 for the CNN), each rounded to a multiple of 8 (what the hardware tends to prefer).
GRID_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
#: Heads up to this many are timed at every count; more at a handful of counts.
ALL_HEADS_UP_TO = 16
#: How a piece's time is taken from its rounds: the fastest, because on a shared machine other
#: jobs only ever add time (measured on the 2-core machine at load 9-11: medians of 3 rounds were
#: off by up to 100x for single pieces; see doc/latency.md).
STATISTIC = "minimum over rounds"
#: The fit recorded in a table.
FIT = ("piecewise-linear in the kept width between the grid widths (bilinear over a CNN layer's kept input and "
       "output channels), linear extrapolation beyond, through the times made non-decreasing in every width "
       "(isotonic regression; the raw times are measured_ms); each time the " + STATISTIC)
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16, "float16": torch.float16}

Number = Union[int, float, Tensor]


def _grid(width: int, smallest: int) -> List[int]:
    """Widths at which a piece of full width ``width`` is timed: ``smallest`` and the fractions of
    :data:`GRID_FRACTIONS` rounded to multiples of 8 (when ``width`` is one), sorted, unique."""
    points = {smallest, width}
    for fraction in GRID_FRACTIONS:
        value = fraction * width
        value = int(round(value / 8) * 8) if width % 8 == 0 else int(round(value))
        points.add(min(width, max(smallest, value)))
    return sorted(points)


def _head_grid(heads: int) -> List[int]:
    if heads <= ALL_HEADS_UP_TO:
        return list(range(heads + 1))
    return sorted({0, 1, *(int(round(f * heads)) for f in GRID_FRACTIONS)})


def monotone(values: Sequence[float]) -> List[float]:
    """The non-decreasing sequence nearest to ``values`` in least squares (isotonic regression,
    pool-adjacent-violators): a piece does not get faster with more units, and a measured dip or
    bump is noise that would otherwise steer the gates (or make the smallest structure cost more
    than the dense one)."""
    blocks: List[List[float]] = []  # [mean, count]
    for value in values:
        blocks.append([float(value), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count),
                          blocks[-1][1] + count]
    return [mean for mean, count in blocks for _ in range(int(count))]


def monotone_2d(times: Sequence[Sequence[float]]) -> List[List[float]]:
    """:func:`monotone` along each row, then along each column (the column pass keeps the rows
    non-decreasing: isotonic regression is order-preserving)."""
    rows = [monotone(row) for row in times]
    columns = [monotone(column) for column in zip(*rows)]
    return [list(row) for row in zip(*columns)]


def interpolate(widths: Sequence[float], times: Sequence[float], x: Number) -> Number:
    """Piecewise-linear interpolation of ``times`` over ``widths`` (increasing) at ``x``.

    Args:
        widths: the grid, at least one point.
        times: the time at each grid point.
        x: a number, or a scalar tensor (the result is then a tensor differentiable in ``x``).
    Returns:
        The interpolated time; beyond the grid the nearest segment is extended; a one-point grid
        gives its time.
    """
    if len(widths) == 1:
        return times[0] + 0.0 * x if isinstance(x, Tensor) else times[0]
    value = float(x.detach()) if isinstance(x, Tensor) else float(x)
    segment = 0
    while segment < len(widths) - 2 and value > widths[segment + 1]:
        segment += 1
    w0, w1 = widths[segment], widths[segment + 1]
    t0, t1 = times[segment], times[segment + 1]
    return t0 + (x - w0) * ((t1 - t0) / (w1 - w0))


def interpolate_2d(rows: Sequence[float], columns: Sequence[float], times: Sequence[Sequence[float]],
                   row: Number, column: Number) -> Number:
    """Bilinear interpolation of ``times[i][j]`` (at ``rows[i]``, ``columns[j]``) at ``(row, column)``:
    :func:`interpolate` along the columns in each row, then along the rows."""
    along_columns = [interpolate(columns, values, column) for values in times]
    return along_columns[0] if len(rows) == 1 else interpolate(rows, along_columns, row)


# ---------------------------------------------------------------------------------------- prediction
def predict_latency(table: Dict[str, Any], config: EncoderConfig,
                    counts: Optional[cost.UnitCounts] = None) -> Dict[str, Number]:
    """Predicted latency (ms) of the encoder ``config`` (or of ``counts`` on it) from ``table``.

    Args:
        table: a latency table (:func:`load_table`) measured for ``config``'s architecture.
        config: the architecture (the table is checked against it by :func:`check_table`).
        counts: unit counts as for :func:`espnet_prune.ssl.cost.count_macs` (numbers, or expected
            counts as scalar tensors); ``None``: the config's own structure.
    Returns:
        ``{"cnn", "pos_conv", "transformer", "total"}`` in milliseconds, numbers or tensors as
        the counts are: ``cnn`` the CNN layers, ``pos_conv`` the positional convolution,
        ``transformer`` the feature projection, the sublayers and the fixed rest.
    """
    counts = cost._resolve_counts(config, counts)
    pieces = table["pieces"]
    cnn: Number = 0.0
    in_channels: Number = 1
    for layer, out_channels in zip(pieces["cnn"], counts["conv"]):
        cnn = cnn + interpolate_2d(layer["in"], layer["out"], layer["ms"], in_channels, out_channels)
        in_channels = out_channels
    projection = pieces["projection"]
    transformer: Number = interpolate(projection["widths"], projection["ms"], counts["conv"][-1])
    attention, ffn = pieces["attention"], pieces["ffn"]
    for heads, attn_used, interm, ffn_used in zip(counts["head"], counts["attn_layer"], counts["interm"],
                                                  counts["ffn_layer"]):
        transformer = (transformer + attn_used * interpolate(attention["widths"], attention["ms"], heads)
                       + ffn_used * interpolate(ffn["widths"], ffn["ms"], interm))
    transformer = transformer + pieces["fixed"]
    pos_conv = pieces["pos_conv"]
    calibration = table.get("calibration") or {"scale": 1.0, "offset_ms": 0.0}
    scale = calibration["scale"]
    cnn, pos_conv = scale * cnn, scale * pos_conv
    transformer = scale * transformer + calibration["offset_ms"]
    return {"cnn": cnn, "pos_conv": pos_conv, "transformer": transformer, "total": cnn + pos_conv + transformer}


def latency_cost(config: EncoderConfig, seconds: float, counts: Optional[cost.UnitCounts],
                 table: Optional[Dict[str, Any]]) -> Dict[str, Number]:
    """The ``latency`` metric's cost (:mod:`espnet_prune.pruning.metrics`): :func:`predict_latency`
    after checking that ``table`` is there and was measured for ``seconds``."""
    if table is None:
        raise ValueError("the latency metric needs a latency table (pruning.latency_table); "
                         "make one with python -m espnet_prune.bin.profile_latency")
    measured = table["measured_on"]["seconds"]
    if abs(float(measured) - float(seconds)) > 1e-9:
        raise ValueError(f"the latency table was measured for {measured} s utterances, not {seconds} s")
    return predict_latency(table, config, counts)


# ---------------------------------------------------------------------------------------- table files
def save_table(table: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    """Write ``table`` as JSON (indented, so that a diff of two tables reads)."""
    with open(path, "w") as file:
        json.dump(table, file, indent=1)
        file.write("\n")


def load_table(path: Union[str, os.PathLike], where: str = "latency_table") -> Dict[str, Any]:
    """Read and check the format of a table file; a missing, unreadable or malformed file is a
    ``ValueError`` that names ``where`` (the YAML key) and the path."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: latency table {path} does not exist; make one with "
                         "python -m espnet_prune.bin.profile_latency")
    try:
        with open(path) as file:
            table = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: {path} is not a readable JSON latency table ({error})") from error
    if not isinstance(table, dict) or table.get("format") != TABLE_FORMAT:
        raise ValueError(f"{where}: {path} is not a latency table (no 'format: {TABLE_FORMAT}' entry)")
    if table.get("version") != TABLE_VERSION:
        raise ValueError(f"{where}: {path} is a version {table.get('version')!r} latency table; this espnet_prune "
                         f"reads version {TABLE_VERSION}: profile again")
    missing = [key for key in ("arch", "measured_on", "pieces") if key not in table]
    missing += [f"measured_on.{key}" for key in MEASURED_ON_KEYS if key not in table.get("measured_on", {})]
    missing += [f"pieces.{key}" for key in ("cnn", "projection", "attention", "ffn", "pos_conv", "fixed")
                if key not in table.get("pieces", {})]
    if missing:
        raise ValueError(f"{where}: latency table {path} lacks {missing}")
    return table


def check_table(table: Dict[str, Any], config: EncoderConfig, seconds: float, batch: int,
                where: str = "pruning.latency_table") -> List[str]:
    """Check that ``table`` prices ``config`` at ``seconds`` and ``batch``.

    Raises:
        ValueError: naming ``where`` if the table was measured for another architecture (the
            differing fields are named), another utterance duration or another batch size.
    Returns:
        Warnings (also issued with :func:`warnings.warn`): the table was measured on another
        device (processor or GPU name) or with another thread count than this process has.
    """
    arch = {key: value for key, value in table["arch"].items() if key not in _IGNORED_ARCH_KEYS}
    ours = {key: value for key, value in config.to_dict().items() if key not in _IGNORED_ARCH_KEYS}
    differ = sorted(key for key in set(arch) | set(ours) if arch.get(key) != ours.get(key))
    if differ:
        shown = ", ".join(f"{key}: table {arch.get(key)!r}, encoder {ours.get(key)!r}" for key in differ[:4])
        raise ValueError(f"{where} was measured for another architecture ({shown}"
                         f"{', ...' if len(differ) > 4 else ''}); profile this encoder with "
                         "python -m espnet_prune.bin.profile_latency")
    measured = table["measured_on"]
    if abs(float(measured["seconds"]) - float(seconds)) > 1e-9:
        raise ValueError(f"{where} was measured for {measured['seconds']} s utterances but pruning.reference_seconds "
                         f"is {seconds}: the attention's T^2 share differs; profile with --seconds {seconds:g} or set "
                         f"reference_seconds: {measured['seconds']}")
    if int(measured["batch"]) != int(batch):
        raise ValueError(f"{where} was measured at batch {measured['batch']} but pruning.latency_batch is {batch}; "
                         f"profile with --batch {batch} or set latency_batch: {measured['batch']}")
    return device_notes(measured, where)


def device_notes(measured: Dict[str, Any], where: str) -> List[str]:
    """Warnings (also issued with :func:`warnings.warn`) that a table's ``measured_on`` names another
    device (processor or GPU name) or another CPU thread count than this process has."""
    notes = []
    if measured["device"] == "cpu":
        here = processor_name()
        if measured["device_name"] != here:
            notes.append(f"{where} was measured on {measured['device_name']!r}, this machine is {here!r}: the "
                         "budget is a latency on that device")
        if int(measured["threads"]) != torch.get_num_threads():
            notes.append(f"{where} was measured with {measured['threads']} CPU threads, this process has "
                         f"{torch.get_num_threads()}: the budget is a latency at {measured['threads']} threads")
    elif torch.cuda.is_available() and measured["device_name"] != torch.cuda.get_device_name():
        notes.append(f"{where} was measured on {measured['device_name']!r}, this machine's GPU is "
                     f"{torch.cuda.get_device_name()!r}: the budget is a latency on that device")
    for note in notes:
        warnings.warn(note)
    return notes


# ---------------------------------------------------------------------------------------- measuring
def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` says where that is absent."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def clock_for(device: torch.device) -> str:
    """The clock that times pieces on ``device``: ``cpu`` (this process's CPU time, which other
    jobs on a shared machine disturb far less than wall time) for one CPU thread, where it equals
    the latency of an idle machine; ``wall`` for several threads (their CPU times add up, spin
    waits included) and for CUDA (synchronised)."""
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class _Timer:
    """Times zero-argument calls on one device, interleaved over rounds (:data:`STATISTIC`)."""

    def __init__(self, device: torch.device, rounds: int):
        self.device = device
        self.rounds = rounds
        self.clock = clock_for(device)

    def __call__(self, calls: Dict[str, Callable[[], object]]) -> Dict[str, float]:
        """``{name: milliseconds}``, the fastest round of each (:data:`STATISTIC`)."""
        if self.device.type == "cuda":
            def synced(call):
                def run():
                    call()
                    torch.cuda.synchronize(self.device)
                return run
            calls = {name: synced(call) for name, call in calls.items()}
        rounds: Dict[str, List[float]] = {name: [] for name in calls}

        def record(_: int, times: Dict[str, float]) -> None:
            for name, value in times.items():
                rounds[name].append(value)

        with torch.inference_mode():
            time_interleaved(calls, rounds=self.rounds, warmup=1, rotate=True, on_round=record,
                             clock=CLOCKS[self.clock])
        return {name: 1000.0 * min(values) for name, values in rounds.items()}


def _module_call(module: torch.nn.Module, *inputs: Tensor) -> Callable[[], object]:
    return lambda: module(*inputs)


def profile(config: EncoderConfig, device: Union[str, torch.device] = "cpu", dtype: str = "float32",
            batch: int = 1, seconds: float = 10.0, rounds: int = 5,
            progress: Callable[[str], None] = print) -> Dict[str, Any]:
    """Measure the latency table of ``config`` (module docstring) on this machine.

    Args:
        config: the architecture (dense or already pruned: each piece's grid spans its widest layer).
        device: ``cpu`` (at the current ``torch.get_num_threads()``) or ``cuda``.
        dtype: ``float32``, ``bf16`` or ``float16`` (the module weights and inputs).
        batch: utterances per call.
        seconds: utterance duration; sets the frames every piece sees.
        rounds: timed rounds per piece; each time is the median.
        progress: receives one line per piece.
    Returns:
        The table (a JSON-able dict, see :func:`save_table`).
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    timer = _Timer(device, rounds)
    started = time.perf_counter()
    frames = cost._conv_frames(config, cost._samples_for(config, seconds))
    generator = torch.Generator().manual_seed(0)

    def build(module: torch.nn.Module) -> torch.nn.Module:
        return module.to(device=device, dtype=torch_dtype).eval()

    def noise(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=torch_dtype)

    def report(name: str, count: int) -> None:
        progress(f"profile_latency: {name}: {count} widths x {rounds} rounds "
                 f"({time.perf_counter() - started:.0f} s so far)")

    pieces: Dict[str, Any] = {"cnn": []}
    in_channels, samples = 1, cost._samples_for(config, seconds)
    for index, ((out_channels, kernel, stride), out_frames) in enumerate(zip(config.conv_layers, frames)):
        norm = "layer" if config.extractor_mode == "layer_norm" else ("group" if index == 0 else None)
        in_grid = [1] if index == 0 else _grid(in_channels, 1)
        out_grid = _grid(out_channels, 1)
        calls = {}
        for c_in in in_grid:
            x = noise(batch, c_in, samples)
            for c_out in out_grid:
                block = build(ConvLayerBlock(c_in, c_out, kernel, stride, config.conv_bias, norm,
                                             config.layer_norm_eps))
                calls[f"{c_in},{c_out}"] = _module_call(block, x)
        times = timer(calls)
        measured = [[times[f"{c_in},{c_out}"] for c_out in out_grid] for c_in in in_grid]
        pieces["cnn"].append({"in": in_grid, "out": out_grid, "ms": monotone_2d(measured), "measured_ms": measured})
        report(f"CNN layer {index} ({kernel}x{stride}, {out_frames} frames)", len(calls))
        in_channels, samples = out_channels, out_frames
    frames_t = frames[-1]
    dim = config.embed_dim

    widths = _grid(in_channels, 1)
    calls = {str(w): _module_call(build(FeatureProjection(w, dim, 0.0, config.layer_norm_eps)),
                                  noise(batch, frames_t, w)) for w in widths}
    times = timer(calls)
    measured = [times[str(w)] for w in widths]
    pieces["projection"] = {"widths": widths, "ms": monotone(measured), "measured_ms": measured}
    report("feature projection", len(calls))

    x = noise(batch, frames_t, dim)
    position_bias = noise(1, config.total_heads, frames_t, frames_t) if config.relative_position_bias else None
    layer_config = config.replace(num_layers=1, num_heads=max(config.num_heads), ffn_dims=max(config.ffn_dims),
                                  use_attention=True, use_ffn=True, kept_heads=None, head_dim=config.head_dim)

    def sublayer(heads: Optional[int], interm: Optional[int]) -> Callable[[], object]:
        """One layer with only the attention (``heads``) or only the FFN (``interm``) sublayer,
        less the same layer without either (timed alike): the sublayer's own latency."""
        changes = {"use_attention": heads is not None, "use_ffn": interm is not None,
                   "num_heads": heads or 0, "ffn_dims": interm or 0}
        layer = build(EncoderLayer(layer_config.replace(**changes), 0))
        return lambda: layer(x, None, position_bias, {})

    empty = sublayer(None, None)
    for name, grid, make in (("attention", _head_grid(max(config.num_heads)), lambda w: sublayer(w, None)),
                             ("ffn", _grid(max(config.ffn_dims), 0), lambda w: sublayer(None, w))):
        calls = {"empty": empty, **{str(w): make(w) for w in grid}}
        times = timer(calls)
        measured = [times[str(w)] - times["empty"] for w in grid]
        pieces[name] = {"widths": grid, "ms": monotone(measured), "measured_ms": measured}
        report(f"{name} sublayer ({frames_t} frames)", len(grid))

    pos_conv = build(ConvolutionalPositionalEmbedding(dim, config.pos_conv_kernel, config.pos_conv_groups))
    bare = build(SSLEncoder(config.replace(use_attention=False, use_ffn=False)))
    dense = build(SSLEncoder(config))
    half_config = half_structure(config)
    half = build(SSLEncoder(half_config))
    waveform = noise(batch, cost._samples_for(config, seconds))
    times = timer({"pos_conv": _module_call(pos_conv, x),
                   "bare": lambda: bare.contextualize(x),
                   "dense": lambda: dense(waveform),
                   "half": lambda: half(waveform)})
    pieces["pos_conv"] = times["pos_conv"]
    pieces["fixed"] = times["bare"] - times["pos_conv"]
    report("positional convolution, the fixed rest, the dense and the half encoder", 4)

    if device.type == "cuda":
        device_name, threads = torch.cuda.get_device_name(device), None
    else:
        device_name, threads = processor_name(), torch.get_num_threads()
    table = {
        "format": TABLE_FORMAT, "version": TABLE_VERSION,
        "arch": config.to_dict(),
        "measured_on": {"device": device.type, "device_name": device_name, "threads": threads, "dtype": dtype,
                        "batch": batch, "seconds": seconds, "rounds": rounds, "clock": timer.clock,
                        "torch": torch.__version__,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "fit": FIT, "frames": frames_t, "unit": "ms",
        "pieces": pieces,
    }
    summed = {name: float(predict_latency(table, config, counts)["total"])
              for name, counts in (("dense", None), ("half", cost.structure_counts(half_config)))}
    table["calibration"] = calibrate(summed["dense"], summed["half"], times["dense"], times["half"])
    table["check"] = {"dense_measured_ms": times["dense"], "dense_summed_ms": summed["dense"],
                      "half_measured_ms": times["half"], "half_summed_ms": summed["half"],
                      "profile_seconds": time.perf_counter() - started}
    progress(f"profile_latency: the pieces sum to {summed['dense'] / times['dense']:.3f} of the dense encoder's "
             f"measured {times['dense']:.1f} ms and {summed['half'] / times['half']:.3f} of the half encoder's "
             f"{times['half']:.1f} ms; calibration x{table['calibration']['scale']:.3f} "
             f"{table['calibration']['offset_ms']:+.1f} ms; {time.perf_counter() - started:.0f} s in all")
    return table


def half_structure(config: EncoderConfig) -> EncoderConfig:
    """``config`` with half of every width (multiples of 8 where the width is one): the second
    whole-encoder point of the calibration."""
    def half(width: int) -> int:
        value = width // 2
        return max(1, value // 8 * 8 if width % 8 == 0 and value >= 8 else value)

    return config.replace(conv_layers=[[half(c), k, s] for c, k, s in config.conv_layers],
                          num_heads=[half(h) for h in config.num_heads], ffn_dims=[half(f) for f in config.ffn_dims],
                          kept_heads=None, head_dim=config.head_dim)


def calibrate(dense_summed: float, half_summed: float, dense_measured: float, half_measured: float
              ) -> Dict[str, float]:
    """The affine map ``measured = scale * summed + offset_ms`` through the dense and the half
    encoder: what timing the pieces alone misses (measured: the pieces over-predicted the dense
    wav2vec2-base by 6 % and under-predicted pruned ones, ratios 0.04-0.05 too low). The identity
    where the two points do not give a positive scale."""
    if not dense_summed > half_summed:
        return {"scale": 1.0, "offset_ms": 0.0}
    scale = (dense_measured - half_measured) / (dense_summed - half_summed)
    if not scale > 0:
        return {"scale": 1.0, "offset_ms": 0.0}
    return {"scale": scale, "offset_ms": dense_measured - scale * dense_summed}
