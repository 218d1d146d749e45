"""Does a latency budget land on its target? The acceptance benchmark of ``metric: latency``.

    python -m espnet_prune.bin.benchmark_latency [--arch wav2vec2_base] [--threads 1,2] \\
        [--targets 0.7,0.5] [--seconds 4] [--align 8] [--rounds 7] [--json out.json]

For every thread count, in one run:

1. profile the encoder's latency table on this machine (:mod:`espnet_prune.ssl.latency`, the
   code of ``profile_latency``), or read it from ``--tables DIR`` (``<arch>_t<threads>.json``);
2. for ``metric: latency`` and ``metric: macs`` at every target, without and with ``align``,
   train the gates of a :class:`~espnet_prune.pruning.controller.PruningController` on the
   budget alone (its Lagrangian, ramp, multipliers and budget-matching rounding, stepped like
   ESPnet's trainer steps them, without a task loss: weights play no part in the cost), then
   prune a random encoder physically with the deterministic masks, as export does;
3. time the dense encoder and every compact one interleaved (one call each per round, the
   same clock as the table: this process's CPU time at one thread, wall time above), and print,
   per system, the target, the MAC ratio, the table's predicted latency ratio, the measured
   latency ratio (median and fastest round), speed-up / MAC cut (MAC ratio / latency ratio) and
   whether a latency budget landed within ``--tolerance`` of its target.

No ESPnet training runs here: a wav2vec2-base training step takes seconds on a 2-core machine
and the task loss changes which units go, not what a structure costs.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from espnet_prune.pruning.controller import PruningController
from espnet_prune.ssl import cost, latency
from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder
from espnet_prune.utils.timing import time_interleaved

UNITS = ["conv", "head", "interm"]


def prune_to_budget(config, metric: str, target: float, align: int, table_path: Path, seconds: float,
                    steps: int, warmup_steps: int, reg_lr: float) -> PruningController:
    """A controller whose gates were trained ``steps`` optimizer steps on the budget alone."""
    torch.manual_seed(0)
    controller = PruningController(config, units=UNITS, metric=metric, target=target, align=align,
                                   latency_table=str(table_path), reference_seconds=seconds,
                                   warmup_steps=warmup_steps, reg_lr=reg_lr)
    optimizer = torch.optim.Adam(controller.parameter_groups(reg_lr))
    for _ in range(steps):
        loss, _ = controller.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        controller.advance(reg_lr)
    return controller.eval()


def run(arch: Union[str, Dict[str, Any]], threads_list: Sequence[int], targets: Sequence[float], seconds: float,
        align: int, rounds: int, profile_rounds: int, steps: int, warmup_steps: int, reg_lr: float, tolerance: float,
        work_dir: Path, tables: Optional[Path] = None,
        progress: Callable[[str], None] = print) -> Dict[str, Any]:
    """The benchmark (module docstring); ``{"threads": {n: {"systems": [...], ...}}}``; each thread
    count's table (:func:`format_threads`) goes to ``progress`` as soon as it is timed. ``arch``: a
    preset name (tables are ``<arch>_t<threads>.json``) or architecture values (``encoder_t<threads>.json``)."""
    label = arch if isinstance(arch, str) else "encoder"
    config = get_config(arch, encoder_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        encoder_projection_dropout=0.0, layer_drop=0.0)
    torch.manual_seed(0)
    dense = SSLEncoder(config).eval()
    waveform = torch.randn(1, int(seconds * config.sample_rate))
    dense_macs = cost.count_macs(config, seconds)["total"]
    results: Dict[str, Any] = {"arch": label, "seconds": seconds, "align": align, "steps": steps,
                               "processor": latency.processor_name(), "torch": torch.__version__, "threads": {}}
    # A MAC budget does not depend on the table: its structures are pruned once for every thread count.
    mac_structures: Dict[str, Any] = {}
    for threads in threads_list:
        torch.set_num_threads(threads)
        started = time.time()
        load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else []
        if tables is not None:
            table_path = tables / f"{label}_t{threads}.json"
            table = latency.load_table(table_path)
        else:
            table = latency.profile(config, "cpu", "float32", 1, seconds, profile_rounds,
                                    progress=lambda line: print(line, file=sys.stderr, flush=True))
            table_path = work_dir / f"{label}_t{threads}.json"
            latency.save_table(table, table_path)
        dense_predicted = float(latency.predict_latency(table, config)["total"])
        models = {"dense": dense}
        systems: List[Dict[str, Any]] = []
        for metric in ("latency", "macs"):
            for target in targets:
                for aligned in (1, align):
                    name = f"{metric}{target:g}" + (f"_align{aligned}" if aligned > 1 else "")
                    if metric == "macs" and name in mac_structures:
                        compact, exported = mac_structures[name]
                    else:
                        controller = prune_to_budget(config, metric, target, aligned, table_path, seconds, steps,
                                                     warmup_steps, reg_lr)
                        with torch.no_grad():
                            compact = prune_encoder(SSLEncoder(config).eval(), controller())
                        exported = controller.deterministic_ratios()["total"]
                        if metric == "macs":
                            mac_structures[name] = compact, exported
                    models[name] = compact
                    compact_config = compact.config
                    systems.append({
                        "system": name, "metric": metric, "target": target, "align": aligned,
                        "exported_budget_ratio": exported,
                        "macs_ratio": cost.count_macs(compact_config, seconds)["total"] / dense_macs,
                        "predicted_latency_ratio":
                            float(latency.predict_latency(table, compact_config)["total"]) / dense_predicted,
                        "conv": compact_config.conv_channels, "heads": compact_config.num_heads,
                        "ffn": compact_config.ffn_dims})
                    print(f"benchmark_latency: {threads} thread(s): {name}: exported budget ratio "
                          f"{systems[-1]['exported_budget_ratio']:.3f}", file=sys.stderr, flush=True)
        # The table's second calibration point, timed here as well: how far this timing is from the profile's.
        half = latency.half_structure(config)
        models["half"] = SSLEncoder(half).eval()
        systems.append({"system": "half (calibration)", "metric": "none", "target": None, "align": 1,
                        "exported_budget_ratio": float("nan"),
                        "macs_ratio": cost.count_macs(half, seconds)["total"] / dense_macs,
                        "predicted_latency_ratio":
                            float(latency.predict_latency(table, half)["total"]) / dense_predicted,
                        "conv": half.conv_channels, "heads": half.num_heads, "ffn": half.ffn_dims})
        clock = latency.CLOCKS[latency.clock_for(torch.device("cpu"))]
        per_round: Dict[str, List[float]] = {name: [] for name in models}

        def record(_: int, times: Dict[str, float]) -> None:
            for name, value in times.items():
                per_round[name].append(value)

        calls = {name: (lambda model=model: model(waveform)) for name, model in models.items()}
        with torch.inference_mode():
            time_interleaved(calls, rounds=rounds, warmup=1, rotate=True, on_round=record, clock=clock)
        # Ratios per round (each round times every model once), then their median: the load that
        # hits one round hits every model of it about alike.
        for system in systems:
            times = per_round["half" if system["metric"] == "none" else system["system"]]
            ratios = [c / d for c, d in zip(times, per_round["dense"])]
            system["latency_ratio_median"] = statistics.median(ratios)
            system["latency_ratio_fastest"] = min(times) / min(per_round["dense"])
            system["speedup_per_mac_cut"] = system["macs_ratio"] / system["latency_ratio_median"]
            if system["metric"] == "latency":
                system["within_tolerance"] = abs(system["latency_ratio_median"] - system["target"]) <= tolerance
        entry = results["threads"][str(threads)] = {
            "clock": latency.clock_for(torch.device("cpu")), "load_before": load,
            "load_after": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else [],
            "dense_ms_median": 1000 * statistics.median(per_round["dense"]),
            "dense_predicted_ms": dense_predicted, "table": str(table_path),
            "table_check": table.get("check"), "minutes": (time.time() - started) / 60, "systems": systems}
        progress(format_threads(str(threads), entry, tolerance))
    return results


def format_threads(threads: str, entry: Dict[str, Any], tolerance: float) -> str:
    """The table of one thread count: per system the MAC ratio, the predicted and measured (median
    of per-round ratios, and fastest round against fastest round) latency ratios, speed-up / MAC
    cut, and whether a latency budget is within ``tolerance`` of its target."""
    lines = [f"{threads} thread(s), clock {entry['clock']}, load {entry['load_before']} -> "
             f"{entry['load_after']}, dense {entry['dense_ms_median']:.0f} ms (table predicts "
             f"{entry['dense_predicted_ms']:.0f} ms)",
             f"{'system':<22}{'exported':>9}{'MACs':>7}{'predicted':>11}{'measured':>10}{'fastest':>9}"
             f"{'speed-up/MAC cut':>18}  within {tolerance:g}"]
    for s in entry["systems"]:
        within = {True: "yes", False: "no"}.get(s.get("within_tolerance"), "-")
        lines.append(f"{s['system']:<22}{s['exported_budget_ratio']:>9.3f}{s['macs_ratio']:>7.3f}"
                     f"{s['predicted_latency_ratio']:>11.3f}{s['latency_ratio_median']:>10.3f}"
                     f"{s['latency_ratio_fastest']:>9.3f}{s['speedup_per_mac_cut']:>18.3f}  {within}")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wav2vec2_base")
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    parser.add_argument("--targets", default="0.7,0.5", help="comma-separated keep ratios")
    parser.add_argument("--seconds", type=float, default=4.0, help="utterance duration (and the table's)")
    parser.add_argument("--align", type=int, default=8, help="the aligned variant's align (>= 2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--profile_rounds", type=int, default=5, help="rounds per piece of the latency table")
    parser.add_argument("--steps", type=int, default=250, help="gate optimizer steps per pruning run")
    parser.add_argument("--warmup_steps", type=int, default=80)
    parser.add_argument("--reg_lr", type=float, default=0.1)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--tables", type=Path, default=None,
                        help="read <arch>_t<threads>.json from here instead of profiling")
    parser.add_argument("--work_dir", type=Path, default=Path("exp/benchmark_latency"),
                        help="where profiled tables are written")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    if args.align < 2:
        get_parser().error("--align must be >= 2 (the variant without alignment is always run)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark_latency: {args.arch}, {args.seconds:g} s, {latency.processor_name()}, torch {torch.__version__}")
    results = run(args.arch, [int(t) for t in args.threads.split(",")],
                  [float(t) for t in args.targets.split(",")], args.seconds, args.align, args.rounds,
                  args.profile_rounds, args.steps, args.warmup_steps, args.reg_lr, args.tolerance, args.work_dir,
                  args.tables)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
