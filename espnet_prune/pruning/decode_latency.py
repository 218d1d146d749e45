"""Measured latency of a whole decode as a function of each part's MACs: the decode latency table.

A whole-model budget in ``metric: latency`` (``model_conf.pruning.latency_table``) prices a decode
by what it took on the device, not by its MACs. ESPnet's ``Speech2Text`` decode of one
``reference_seconds`` utterance, batch 1, with the budget's ``decoding`` (beam size, CTC weight,
``tokens_per_second x reference_seconds`` output steps) is timed part by part (``python -m
espnet_prune.bin.profile_decode_latency``, :mod:`espnet_prune.inference.decode_profile`) for the
dense model and for structures pruned to a handful of MAC ratios; each prunable part's time is then
modelled as

    ``latency_ms(part) = fixed_ms + ms_per_gmac * GMACs(part)``

(least squares over the measured structures, neither coefficient below 0): ``fixed_ms`` is what
the part costs whatever its width (per-step Python work of the beam search inside the decoder,
small kernels, the output layer's softmax), ``ms_per_gmac`` what its MACs cost on this device.
What no unit removes -- the CTC layer, its prefix scoring, the beam search's own bookkeeping, the
rest of ``Speech2Text`` -- is measured as the whole decode minus the timed parts
(``rest_ms``) and priced with the ``ctc`` part as a fixed cost. Evaluated at expected MACs under
the gates, the prediction is a tensor whose gradient reaches the gates, as the MAC cost is.

The table file is JSON: ``format``/``version``, ``measured_on`` (device, threads, torch, date),
``decoding`` and ``reference_seconds`` it was measured for, ``dense_gmacs`` per part (the model it
was measured on, checked against the pruned model), ``points`` (per measured structure, per part
its GMACs and milliseconds, and the whole decode's), and ``fit`` per part.
"""

import json
import os
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import torch

from espnet_prune.ssl.latency import device_notes

#: The ``format`` entry of a decode latency table, and its version.
TABLE_FORMAT = "espnet_prune decode latency table"
TABLE_VERSION = 1
#: The parts a decode is timed in (each prunable part's own module), in the order they run.
TIMED_PARTS = ("frontend", "encoder", "decoder")
#: The part that carries the rest of the decode (everything outside the timed parts) as a fixed cost.
REST_PART = "ctc"
#: Relative difference of a part's dense MACs from the table's beyond which the table is refused.
MACS_TOLERANCE = 1e-6

Fit = Tuple[float, float]  # (fixed_ms, ms_per_gmac)


def fit_line(gmacs: Sequence[float], ms: Sequence[float]) -> Fit:
    """``(fixed_ms, ms_per_gmac)``: the least-squares line through ``(gmacs[i], ms[i])`` with both
    coefficients >= 0 (a part does not get faster with more MACs, and costs no negative time)."""
    if len(gmacs) != len(ms) or not gmacs:
        raise ValueError(f"fit_line needs as many MAC counts as times (at least one), got {len(gmacs)} and {len(ms)}")
    n = len(gmacs)
    mean_x, mean_y = sum(gmacs) / n, sum(ms) / n
    spread = sum((x - mean_x) ** 2 for x in gmacs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(gmacs, ms)) / spread if spread > 0 else 0.0
    if not slope > 0:
        return mean_y, 0.0
    fixed = mean_y - slope * mean_x
    if fixed < 0:  # through the origin instead
        return 0.0, sum(x * y for x, y in zip(gmacs, ms)) / sum(x * x for x in gmacs)
    return fixed, slope


def predict_ms(fit: Fit, gmacs: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """Milliseconds of a part with ``gmacs`` GMACs under its ``fit`` (a tensor for a tensor)."""
    fixed, slope = fit
    return fixed + slope * gmacs


def make_table(points: Sequence[Mapping[str, Any]], measured_on: Mapping[str, Any], decoding: Mapping[str, Any],
               reference_seconds: float) -> Dict[str, Any]:
    """The table of measured ``points`` (``{"target", "gmacs": {part: ...}, "ms": {part: ...},
    "total_ms"}``, the first the dense model): per part its :func:`fit_line`, and ``rest_ms``, the
    median over points of the whole decode less the timed parts; ``max_rel_error`` is the largest
    relative error of the fitted whole decode at a measured point."""
    if not points:
        raise ValueError("a decode latency table needs at least one measured structure")
    parts = [part for part in TIMED_PARTS if part in points[0]["ms"]]
    fits = {part: fit_line([p["gmacs"][part] for p in points], [p["ms"][part] for p in points]) for part in parts}
    rests = sorted(p["total_ms"] - sum(p["ms"][part] for part in parts) for p in points)
    rest = rests[len(rests) // 2] if len(rests) % 2 else 0.5 * (rests[len(rests) // 2 - 1] + rests[len(rests) // 2])
    errors = [abs(rest + sum(predict_ms(fits[part], p["gmacs"][part]) for part in parts) - p["total_ms"])
              / p["total_ms"] for p in points]
    return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "measured_on": dict(measured_on),
            "decoding": dict(decoding), "reference_seconds": float(reference_seconds),
            "dense_gmacs": dict(points[0]["gmacs"]), "points": [dict(p) for p in points],
            "fit": {part: {"fixed_ms": fixed, "ms_per_gmac": slope} for part, (fixed, slope) in fits.items()},
            "rest_ms": max(0.0, rest), "max_rel_error": max(errors)}


def save_table(table: Mapping[str, Any], path: Union[str, os.PathLike]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2)
        f.write("\n")


def load_table(path: Union[str, os.PathLike], where: str = "latency_table") -> Dict[str, Any]:
    """Read a decode latency table, refusing a missing file, another file format (e.g. the SSL
    encoder's table of ``profile_latency``) or a table without a fit, by name."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: {path} does not exist (measure one with python -m "
                         "espnet_prune.bin.profile_decode_latency)")
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: {path} is not JSON ({error})") from None
    if not isinstance(table, dict) or table.get("format") != TABLE_FORMAT:
        found = table.get("format") if isinstance(table, dict) else type(table).__name__
        raise ValueError(f"{where}: {path} is not a decode latency table (format {found!r}); a whole-model "
                         "latency budget needs python -m espnet_prune.bin.profile_decode_latency's table, an SSL "
                         "encoder's table (profile_latency) goes in frontend_conf.pruning")
    if table.get("version") != TABLE_VERSION:
        raise ValueError(f"{where}: {path} has version {table.get('version')}, this code reads {TABLE_VERSION}")
    for key in ("fit", "rest_ms", "dense_gmacs", "decoding", "reference_seconds", "measured_on"):
        if key not in table:
            raise ValueError(f"{where}: {path} has no '{key}'")
    return table


def check_table(table: Mapping[str, Any], dense_gmacs: Mapping[str, float], decoding: Mapping[str, Any],
                reference_seconds: float, where: str = "latency_table") -> None:
    """Refuse a table measured for another model (a covered part's dense MACs differ), another
    decoding or another duration; warn when it was measured on another device or with another
    thread count than this process has (:func:`espnet_prune.ssl.latency.device_notes`).

    Args:
        dense_gmacs: ``{part: dense GMACs}`` of the covered timed parts of the pruned model.
        decoding: the budget's ``decoding`` (beam size, tokens per second, CTC weight).
    """
    if not abs(float(table["reference_seconds"]) - float(reference_seconds)) <= 1e-9:  # NaN too
        raise ValueError(f"{where} was measured for {table['reference_seconds']} s utterances, the budget is priced "
                         f"for reference_seconds {reference_seconds}")
    for key, value in decoding.items():
        if key not in table["decoding"] or not abs(float(table["decoding"][key]) - float(value)) <= 1e-9:
            raise ValueError(f"{where} was measured with decoding.{key} {table['decoding'].get(key)}, the budget "
                             f"is priced for {value}")
    for part, gmacs in dense_gmacs.items():
        if part not in table["fit"]:
            raise ValueError(f"{where} has no fit for the {part} part (it timed {sorted(table['fit'])})")
        found = float(table["dense_gmacs"][part])
        if not abs(found - gmacs) <= MACS_TOLERANCE * max(abs(gmacs), 1e-12):
            raise ValueError(f"{where} was measured on another model: its dense {part} has {found:.4f} GMACs in the "
                             f"decode, this model's {gmacs:.4f}")
    device_notes(table["measured_on"], where)

def describe(table: Mapping[str, Any]) -> str:
    """One line: every part's fit, the fixed rest and the fit's largest error at a measured structure."""
    fits = ", ".join(f"{part} {fit['fixed_ms']:.1f} ms + {fit['ms_per_gmac']:.2f} ms/GMAC"
                     for part, fit in table["fit"].items())
    return (f"{fits}, rest {table['rest_ms']:.1f} ms; largest error at a measured structure "
            f"{100 * table['max_rel_error']:.1f}%")


def part_fits(table: Mapping[str, Any]) -> Dict[str, Fit]:
    """``{part: (fixed_ms, ms_per_gmac)}`` of every timed part, and ``ctc``: ``(rest_ms, 0)``."""
    fits = {part: (float(fit["fixed_ms"]), float(fit["ms_per_gmac"])) for part, fit in table["fit"].items()}
    fits[REST_PART] = (float(table["rest_ms"]), 0.0)
    return fits
