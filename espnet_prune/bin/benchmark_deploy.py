"""Deployment speed on CPU: dense vs compact, fp32 vs int8, PyTorch vs onnxruntime, one table.

    python -m espnet_prune.bin.benchmark_deploy [--arch wav2vec2_base] [--seconds 10] \\
        [--targets 0.7,0.5] [--threads 1,all] [--rounds 5] [--calibration synth:16] \\
        [--profile] [--json results.json]

On one randomly initialised encoder (seed 0) and ``--seconds`` of held-out synthesised
speech (:func:`espnet_prune.asr.frontend.calibration.held_out_speech`), batch 1, it builds the dense
model and compact models at about each of ``--targets`` of the dense MACs (uniform pruning by
weight norm, as ``benchmark_ssl``), and runs each as

* ``torch``: PyTorch fp32,
* ``torch-int8``: PyTorch after ``--quantize_asr_model``'s dynamic int8 quantization
  (:func:`espnet_prune.ssl.quantize.quantize_dynamic`; the convolutions stay fp32),
* ``onnx``: the frontend exported with :func:`espnet_prune.asr.frontend.onnx_export.export_onnx`
  in onnxruntime,
* ``onnx-int8``: that file after onnxruntime's dynamic int8 quantization (``ConvInteger``,
  ``MatMulInteger``: activations quantized per call),
* ``onnx-int8-static``: that file after static int8 quantization calibrated on
  ``--calibration`` speech (:func:`espnet_prune.asr.frontend.onnx_export.quantize_onnx_static`; QDQ,
  convolutions included).

Every variant computes the same thing: waveform and lengths in, last hidden state and
frame lengths out. For each thread count all variants are timed interleaved (one call
each per round, :func:`espnet_prune.utils.timing.time_interleaved`) and the medians are
reported with params, MACs, file size (``torch.save`` of the state dict, or the ONNX
file), ``diff`` (relative L2 distance of the features from the same model in PyTorch
fp32: what int8 costs in accuracy; ``ok`` when within
:data:`~espnet_prune.asr.frontend.onnx_export.INT8_TOLERANCE`, NaN is not), real-time factor
(latency / audio duration), speed-up over dense PyTorch fp32 at the same thread count, and
that speed-up divided by the MAC cut (dense MACs / the model's MACs). Below the table, for
every model and thread count, the fastest variant whose features are ``ok``, with the
measured times of the others. ``--profile`` adds where the time goes in onnxruntime for
the smallest compact model (per component and per operator, from onnxruntime's profiler).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from espnet_prune.asr.frontend.calibration import DEFAULT_CALIBRATION, calibration_speech, held_out_speech
from espnet_prune.asr.frontend.onnx_export import (
    INT8_TOLERANCE,
    EncoderFeatures,
    export_onnx,
    inference_session,
    quantize_onnx,
    quantize_onnx_static,
    run_session,
)
from espnet_prune.bin.benchmark_ssl import compact_at
from espnet_prune.ssl import cost
from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.quantize import quantize_dynamic
from espnet_prune.utils.timing import time_interleaved

BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8", "onnx-int8-static")
ONNX_BACKENDS = ("onnx", "onnx-int8", "onnx-int8-static")
DROPOUT_OFF = dict(encoder_projection_dropout=0.0, encoder_dropout=0.0, attention_dropout=0.0,
                   activation_dropout=0.0, layer_drop=0.0)


def all_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def progress(message: str) -> None:
    print(f"benchmark_deploy: {message}", file=sys.stderr, flush=True)


def parse_threads(value: str) -> List[int]:
    """``"1,all"`` -> ``[1, cores]`` (duplicates dropped, order kept)."""
    threads: List[int] = []
    for item in value.split(","):
        item = item.strip()
        count = all_cores() if item == "all" else int(item) if item.isdigit() else 0
        if count < 1:
            raise ValueError(f"--threads takes positive integers or 'all', got {item!r}")
        if count not in threads:
            threads.append(count)
    return threads


def parse_targets(value: str) -> List[float]:
    targets = [float(item) for item in value.split(",") if item.strip()]
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"--targets must lie in (0, 1), got {target}")
    return targets


def parse_arch(value: str) -> Any:
    """A preset name, or a JSON (else YAML) mapping of config values, e.g.
    ``{"preset": "wavlm_base", "num_layers": 4}``."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return yaml.safe_load(value)


def file_size(module: torch.nn.Module, path: Path) -> int:
    torch.save(module.state_dict(), path)
    return path.stat().st_size


def build_variants(arch: Any, seconds: float, targets: Sequence[float], backends: Sequence[str],
                   workdir: Path, calibration: str = DEFAULT_CALIBRATION) -> List[Dict[str, Any]]:
    """Models of every (structure, backend); each dict has the facts of one table row except timing."""
    torch.manual_seed(0)
    config = get_config(arch, **DROPOUT_OFF)
    dense = SSLEncoder(config).eval()
    structures = [("dense", dense)] + [(f"compact {100 * target:.0f}%", compact_at(dense, target, seconds).eval())
                                       for target in targets]
    dense_macs = cost.count_macs(config, seconds)["total"]
    waveforms = calibration_speech(calibration, config.sample_rate) if "onnx-int8-static" in backends else []
    variants = []
    for index, (name, encoder) in enumerate(structures):
        macs = cost.count_macs(encoder.config, seconds)["total"]
        facts = {"model": name, "params": cost.count_params(encoder.config)["total"], "macs": macs,
                 "macs_ratio": macs / dense_macs, "mac_cut": dense_macs / macs}
        module = EncoderFeatures(encoder).eval()
        onnx_path = workdir / f"model{index}.onnx"
        if set(ONNX_BACKENDS) & set(backends):
            export_onnx(module, onnx_path)
        for backend in backends:
            variant = dict(facts, backend=backend)
            if backend == "torch":
                variant.update(module=module, size=file_size(module, workdir / f"model{index}.pth"))
            elif backend == "torch-int8":
                quantized = quantize_dynamic(module)
                variant.update(module=quantized, size=file_size(quantized, workdir / f"model{index}.int8.pth"))
            elif backend == "onnx":
                variant.update(onnx=onnx_path, size=onnx_path.stat().st_size)
            elif backend == "onnx-int8":
                int8_path = quantize_onnx(onnx_path, workdir / f"model{index}.int8.onnx")
                variant.update(onnx=int8_path, size=int8_path.stat().st_size)
            else:
                int8_path = quantize_onnx_static(onnx_path, workdir / f"model{index}.int8-static.onnx", waveforms,
                                                 config.sample_rate)
                variant.update(onnx=int8_path, size=int8_path.stat().st_size)
            variants.append(variant)
    return variants


def caller(variant: Dict[str, Any], threads: Optional[int], speech: torch.Tensor,
           lengths: torch.Tensor) -> Callable[[], object]:
    """A zero-argument call that runs ``variant`` once on the input."""
    if "module" in variant:
        module = variant["module"]

        def call():
            with torch.inference_mode():
                return module(speech, lengths)
        return call
    session = inference_session(variant["onnx"], threads)
    return lambda: run_session(session, speech, lengths)


def run(arch: Any = "wav2vec2_base", seconds: float = 10.0, targets: Sequence[float] = (0.7, 0.5),
        threads: Sequence[int] = (1,), rounds: int = 5, warmup: int = 1,
        backends: Sequence[str] = BACKENDS, workdir: Optional[Path] = None,
        calibration: str = DEFAULT_CALIBRATION, profile: bool = False) -> Tuple[List[Dict[str, Any]], List[Dict]]:
    """Build every variant and time it at every thread count.

    Returns:
        ``(rows, profile)``: one row per (variant, threads); with ``profile``, one entry per ONNX
        variant of the smallest compact model (:func:`onnx_profile`), else ``[]``.
    """
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or "torch" not in backends:
        raise ValueError(f"backends must include 'torch' (the reference) and be among {list(BACKENDS)}, "
                         f"got {list(backends)}")
    backends = [backend for backend in BACKENDS if backend in backends]  # "torch" first: the reference
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        variants = build_variants(arch, seconds, targets, backends, workdir, calibration)
        progress(f"built {len(variants)} variants in {time.perf_counter() - start:.0f} s")
        speech = torch.from_numpy(held_out_speech(seconds, get_config(arch).sample_rate))[None]
        lengths = torch.tensor([speech.shape[1]])
        outputs = {}
        for variant in variants:  # agreement with the same model in PyTorch fp32, before timing
            features = caller(variant, None, speech, lengths)()[0]
            if variant["backend"] == "torch":
                reference_features = features
            outputs[id(variant)] = float((features - reference_features).norm() / reference_features.norm())
        rows = []
        for count in threads:
            torch.set_num_threads(count)
            progress(f"timing at {count} thread(s): {warmup} warm-up and {rounds} timed rounds")
            calls = {f"{i}": caller(variant, count, speech, lengths) for i, variant in enumerate(variants)}
            medians = time_interleaved(calls, rounds, warmup)
            reference = medians[str(next(i for i, v in enumerate(variants)
                                         if v["model"] == "dense" and v["backend"] == "torch"))]
            for i, variant in enumerate(variants):
                latency = medians[str(i)]
                speedup = reference / latency
                facts = {key: value for key, value in variant.items() if key not in ("module", "onnx")}
                rows.append(dict(facts, threads=count, rel_diff=outputs[id(variant)],
                                 ok=bool(outputs[id(variant)] <= INT8_TOLERANCE), latency_ms=1000 * latency,
                                 rtf=latency / seconds, speedup=speedup,
                                 speedup_over_mac_cut=speedup / variant["mac_cut"]))
            del calls
        profiles = []
        if profile:
            smallest = variants[-1]["model"]
            for variant in variants:
                if variant["model"] == smallest and "onnx" in variant:
                    progress(f"profiling {smallest} {variant['backend']} at {threads[0]} thread(s)")
                    profiles.append(dict(model=smallest, backend=variant["backend"], threads=threads[0],
                                         **onnx_profile(variant["onnx"], speech, lengths, threads[0], workdir)))
    return rows, profiles


#: Components of the frontend, found in onnxruntime's node names (the exported module paths).
COMPONENTS = (("CNN", "feature_extractor"), ("feature projection", "feature_projection"),
              ("positional conv", "pos_conv"), ("attention", "/attention/"), ("FFN", "feed_forward"))


def component_of(node_name: str) -> str:
    """The frontend component an onnxruntime node belongs to, from its name; ``"fused / other"``
    for nodes that onnxruntime's fusions renamed (``Gelu``, ``SkipLayerNormalization``, ...)."""
    for component, marker in COMPONENTS:
        if marker in node_name:
            return component
    return "fused / other"


def onnx_profile(path: Path, speech: torch.Tensor, lengths: torch.Tensor, threads: int, workdir: Path,
                 runs: int = 3) -> Dict[str, Any]:
    """Where an onnxruntime session spends its time: kernel time per component and per operator.

    One untimed run, then ``runs`` profiled runs (onnxruntime's profiler, ``enable_profiling``).

    Returns:
        ``{"total_ms": mean kernel time per run, "components": {name: ms}, "operators": {op: ms}}``,
        both sorted by time, descending.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"profile_{Path(path).stem}")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        run_session(session, speech, lengths)
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    components: Dict[str, float] = {}
    operators: Dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < starts[1]:
            continue
        milliseconds = event["dur"] / 1000 / runs
        component = component_of(event["name"])
        operator = event.get("args", {}).get("op_name", "?")
        components[component] = components.get(component, 0.0) + milliseconds
        operators[operator] = operators.get(operator, 0.0) + milliseconds
    return {"total_ms": sum(components.values()),
            "components": dict(sorted(components.items(), key=lambda item: -item[1])),
            "operators": dict(sorted(operators.items(), key=lambda item: -item[1]))}


def fastest(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """For every (model, threads): the fastest variant whose features are within the tolerance,
    and why (the measured times of all variants of that model)."""
    lines = []
    groups: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["threads"]), []).append(row)
    for (model, count), group in groups.items():
        times = ", ".join(f"{row['backend']} {row['latency_ms']:.0f} ms"
                          + ("" if row["ok"] else f" (features {100 * row['rel_diff']:.1f} % off: excluded)")
                          for row in sorted(group, key=lambda row: row["latency_ms"]))
        usable = [row for row in group if row["ok"]]
        if not usable:
            lines.append(f"no variant of {model} at {count} thread(s) is within the tolerance: {times}")
            continue
        best = min(usable, key=lambda row: row["latency_ms"])
        lines.append(f"fastest for {model} at {count} thread(s): {best['backend']} (×{best['speedup']:.2f} over "
                     f"dense torch fp32; measured: {times})")
    return lines


def format_profile(entry: Dict[str, Any], top: int = 8) -> str:
    """One profile of :func:`onnx_profile` as text lines."""
    total = entry["total_ms"]

    def shares(values: Dict[str, float]) -> str:
        return ", ".join(f"{name} {ms:.0f} ms ({100 * ms / total:.0f} %)" for name, ms in list(values.items())[:top])
    return (f"where the time goes, {entry['model']} {entry['backend']} at {entry['threads']} thread(s) "
            f"(onnxruntime profiler, kernel time {total:.0f} ms per run):\n"
            f"  by component: {shares(entry['components'])}\n  by operator: {shares(entry['operators'])}")


def machine() -> str:
    """CPU model, cores and library versions, for the line above the table."""
    import platform

    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {all_cores()} cores; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"quantized engine {torch.backends.quantized.engine}")


def format_table(rows: Sequence[Dict[str, Any]], seconds: float) -> str:
    """The rows as a Markdown table."""
    lines = [f"| model | backend | threads | params | MACs ({seconds:g} s) | file | diff | latency | RTF "
             "| speed-up | speed-up / MAC cut |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    tolerance = f"≤ {100 * INT8_TOLERANCE:g} %"
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['threads']} | {cost.format_cost(row['params'])} "
            f"| {cost.format_cost(row['macs'])} ({100 * row['macs_ratio']:.1f} %) | {row['size'] / 2 ** 20:.1f} MiB "
            f"| {100 * row['rel_diff']:.1f} % {'ok' if row['ok'] else 'not ' + tolerance} "
            f"| {row['latency_ms']:.1f} ms | {row['rtf']:.4f} | ×{row['speedup']:.2f} "
            f"| {row['speedup_over_mac_cut']:.2f} |")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wav2vec2_base",
                        help="architecture preset, or a YAML mapping of config values (random weights)")
    parser.add_argument("--seconds", type=float, default=10.0, help="input duration")
    parser.add_argument("--targets", default="0.7,0.5", help="MAC ratios of the compact models")
    parser.add_argument("--threads", default="1,all", help="thread counts to time at ('all' = every core)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"subset of {','.join(BACKENDS)}")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                        help="speech that calibrates onnx-int8-static: synth:N (N utterances synthesised with "
                             "eSpeak NG) or a Kaldi wav.scp")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the ONNX variants of the smallest compact model (where the time goes)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model files here (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    return parser


def main(cmd: Optional[List[str]] = None) -> Tuple[List[Dict[str, Any]], List[Dict]]:
    args = get_parser().parse_args(cmd)
    try:
        targets, threads = parse_targets(args.targets), parse_threads(args.threads)
        arch = parse_arch(args.arch)
        get_config(arch)
    except ValueError as error:
        raise SystemExit(f"benchmark_deploy: {error}")
    rows, profiles = run(arch, args.seconds, targets, threads, args.rounds, args.warmup,
                         [item.strip() for item in args.backends.split(",")], args.workdir, args.calibration,
                         args.profile)
    print(f"{machine()}\n{format_table(rows, args.seconds)}")
    print("\n".join(fastest(rows) + [format_profile(entry) for entry in profiles]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "profiles": profiles}, indent=2), encoding="utf-8")
    return rows, profiles


if __name__ == "__main__":
    main()
