"""Does a latency budget land on its target? The acceptance benchmark of ``metric: latency``.

    python -m espnet_prune.bin.benchmark_latency [--arch wav2vec2_base] [--threads 1,2] \\
        [--targets 0.7,0.5] [--seconds 4] [--align 8] [--trainer espnet] [--warmup_steps 40] \\
        [--reg_lr 0.4] [--rounds 7] [--json out.json]

For every thread count, in one run:

1. profile the encoder's latency table on this machine (:mod:`espnet_prune.ssl.latency`, the
   code of ``profile_latency``), or read it from ``--tables DIR`` (``<arch>_t<threads>.json``);
2. for ``metric: latency`` at every target, without and with ``align``, and ``metric: macs`` at
   the same targets (trained once for all thread counts: a MAC budget does not depend on the
   table), prune a randomly initialised encoder of ``--arch``:

   * ``--trainer espnet`` (default): a short ESPnet ASR training run (asr.sh stages 10-11 through
     the launcher, :mod:`espnet_prune.utils.recipe_steps`) of a CTC-only model on the
     ``pruned_ssl`` frontend with the budget in ``frontend_conf.pruning``, on a generated corpus
     of random audio (``--utterances`` of 0.5-1 s, arbitrary texts), ``max_epoch: 1`` of
     ``RUN_LENGTH_PER_WARMUP * warmup_steps`` optimizer steps, the SSL weights frozen
     (``freeze_param: [frontend.encoder]``; the gates keep their task gradient through the
     activations; ``--train_ssl`` trains them too), each latency run with the table's thread
     count (``OMP_NUM_THREADS``); then ``python -m espnet_prune.bin.export --output_dir`` (run
     in this process) and the compact encoder loaded from the exported experiment by ESPnet's
     ``ASRTask.build_model_from_file``;
   * ``--trainer none``: the gates of a bare
     :class:`~espnet_prune.pruning.controller.PruningController` trained on the budget alone (its
     Lagrangian, ramp, multipliers and budget-matching rounding, no task loss), the random encoder
     pruned physically with the deterministic masks as export does: seconds instead of minutes,
     for checking a table;
3. time the dense encoder and every compact one interleaved (one call each per round, the
   same clock as the table: this process's CPU time at one thread, wall time above), and print,
   per system, the budget ratio training reached (the exported structure's ratio in the
   budget's own metric), the MAC ratio, the table's predicted latency ratio, the measured
   latency ratio (median of per-round ratios, and fastest round), speed-up / MAC cut
   (MAC ratio / latency ratio) and whether a latency budget landed within ``--tolerance`` of
   its target.

Progress (which run, its steps, its log) goes to stderr; stdout is the result tables.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml

from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.reports import RUN_LENGTH_PER_WARMUP
from espnet_prune.ssl import cost, latency
from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder
from espnet_prune.utils.kaldi_data import Utterance, write_data_dir
from espnet_prune.utils.recipe_steps import collect_stats, train
from espnet_prune.utils.timing import time_interleaved

UNITS = ["conv", "head", "interm"]
TRAINERS = ("espnet", "none")
#: Characters of the generated corpus's texts (``<space>`` is ESPnet's char tokenizer's space).
LETTERS = "abcdefgh"
#: Defaults of the options (one source of truth for :func:`run` and the command line).
DEFAULTS = dict(threads="1,2", targets="0.7,0.5", seconds=4.0, align=8, rounds=7, profile_rounds=5,
                trainer="espnet", warmup_steps=40, reg_lr=0.4, utterances=4, train_threads=1, tolerance=0.05)


def steps_for(warmup_steps: int) -> int:
    """The run length doc/budget.md recommends: ``RUN_LENGTH_PER_WARMUP * warmup_steps`` steps."""
    return int(RUN_LENGTH_PER_WARMUP * warmup_steps)


def progress_line(line: str) -> None:
    print(f"benchmark_latency: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ the budget alone
def prune_to_budget(config: EncoderConfig, metric: str, target: float, align: int, table_path: Path,
                    seconds: float, warmup_steps: int, reg_lr: float) -> Tuple[SSLEncoder, float]:
    """``--trainer none``: the compact encoder and its exported budget ratio after the gates of a
    bare controller were trained :func:`steps_for` optimizer steps on the budget alone."""
    torch.manual_seed(0)
    controller = PruningController(config, units=UNITS, metric=metric, target=target, align=align,
                                   latency_table=str(table_path), reference_seconds=seconds,
                                   warmup_steps=warmup_steps, reg_lr=reg_lr)
    optimizer = torch.optim.Adam(controller.parameter_groups(reg_lr))
    for _ in range(steps_for(warmup_steps)):
        loss, _ = controller.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        controller.advance(reg_lr)
    controller.eval()
    with torch.no_grad():
        compact = prune_encoder(SSLEncoder(config).eval(), controller())
    return compact, float(controller.deterministic_ratios()["total"])


# ------------------------------------------------------------------------ ESPnet's trainer
def write_corpus(root: Path, num_train: int, seed: int = 0) -> Dict[str, Path]:
    """A corpus of random audio for :func:`espnet_prune.utils.recipe_steps.train`: ``num_train``
    training utterances and one validation utterance of 0.5-0.75 s of Gaussian noise (std 0.1),
    texts of one or two random words of 2-4 letters over :data:`LETTERS` (a short text: a small
    CTC loss, which a random model cannot learn, pulls less against the budget), and their char
    token list."""
    rng = np.random.default_rng(seed)
    data: Dict[str, Path] = {}
    for split, count in (("train", num_train), ("valid", 1)):
        utterances = []
        for index in range(count):
            samples = int(rng.integers(8000, 12001))
            words = ["".join(rng.choice(list(LETTERS), size=int(rng.integers(2, 5))))
                     for _ in range(int(rng.integers(1, 3)))]
            utterances.append(Utterance(f"spk-{split}{index:03d}", "spk",
                                        np.clip(0.1 * rng.standard_normal(samples), -1, 1), " ".join(words)))
        data[split] = write_data_dir(root / split, utterances)
    data["token_list"] = root / "tokens.txt"
    data["token_list"].write_text("\n".join(["<blank>", "<unk>", "<space>", *LETTERS, "<sos/eos>"]) + "\n",
                                  encoding="utf-8")
    return data


def training_config(arch: Union[str, Dict[str, Any]], pruning: Optional[Dict[str, Any]], steps: int,
                    train_ssl: bool) -> Dict[str, Any]:
    """The ESPnet ASR config of one pruning run: CTC only (no decoder) on the ``pruned_ssl``
    frontend of ``arch`` (random init) with ``pruning``, a one-block Transformer encoder, one
    epoch of ``steps`` steps of batch 2; the SSL weights frozen unless ``train_ssl``."""
    frontend_conf: Dict[str, Any] = {"arch": arch}
    if pruning is not None:
        frontend_conf["pruning"] = pruning
    return {
        "frontend": "pruned_ssl", "frontend_conf": frontend_conf, "normalize": "utterance_mvn",
        "encoder": "transformer",
        "encoder_conf": {"output_size": 64, "attention_heads": 2, "linear_units": 128, "num_blocks": 1,
                         "input_layer": "linear", "dropout_rate": 0.0, "attention_dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0},
        "model": "pruned_espnet", "model_conf": {"ctc_weight": 1.0},
        "freeze_param": [] if train_ssl else ["frontend.encoder"],
        "optim": "adam", "optim_conf": {"lr": 0.001},
        "batch_type": "unsorted", "batch_size": 2, "max_epoch": 1, "num_iters_per_epoch": steps,
        "num_workers": 0, "seed": 0, "num_att_plot": 0, "use_matplotlib": False, "use_tensorboard": False,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1,
    }


class ESPnetPruner:
    """``--trainer espnet``: each budget trained by ESPnet's trainer, exported by ``export`` (module docstring).

    Args:
        arch: ``--arch`` (preset name or architecture values).
        seconds: ``reference_seconds`` (the table's duration).
        warmup_steps, reg_lr: the budget's ramp and multiplier learning rate.
        utterances: training utterances of the generated corpus.
        train_ssl: train the SSL weights too (default: frozen).
        threads: CPU threads of every ESPnet process (``OMP_NUM_THREADS``), whatever thread count
            a latency table was measured at: the budget is the table's latency either way (the
            training log warns that the threads differ), and training with more threads than the
            machine has free cores spins.
        work_dir: where the corpus, statistics, runs and exports go.
    """

    def __init__(self, arch: Union[str, Dict[str, Any]], seconds: float, warmup_steps: int, reg_lr: float,
                 utterances: int, train_ssl: bool, threads: int, work_dir: Path):
        self.arch, self.seconds, self.warmup_steps, self.reg_lr = arch, seconds, warmup_steps, reg_lr
        self.train_ssl, self.threads = train_ssl, threads
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.work = work_dir.resolve()
        self.steps = steps_for(warmup_steps)
        self.work.mkdir(parents=True, exist_ok=True)
        self.data = write_corpus(self.work / "data", utterances)
        config = self.write_config(self.work / "stats.yaml", None)
        progress_line(f"ESPnet statistics (stage 10) in {self.work}")
        self.stats = collect_stats("asr", self.work, self.data, config, ["text"], env=self.env)
        self.last_run_seconds: Dict[str, float] = {}

    def write_config(self, path: Path, pruning: Optional[Dict[str, Any]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(training_config(self.arch, pruning, self.steps, self.train_ssl)),
                        encoding="utf-8")
        return path

    def __call__(self, name: str, metric: str, target: float, align: int,
                 table_path: Path) -> Tuple[SSLEncoder, Dict[str, Any]]:
        """Train, export and load the compact encoder of one budget; returns it and the export
        report's entry of the budget (``exported``, ``reached``, ...)."""
        with contextlib.redirect_stdout(sys.stderr):  # ESPnet's imports print notes: stdout is the results
            from espnet2.tasks.asr import ASRTask

            from espnet_prune import register
            from espnet_prune.bin import export as export_cli

        work = self.work / name
        if work.exists():
            raise FileExistsError(f"benchmark_latency: {work} exists; give an empty --work_dir")
        pruning = {"units": UNITS, "metric": metric, "target": target, "align": align,
                   "latency_table": str(Path(table_path).resolve()), "reference_seconds": self.seconds,
                   "warmup_steps": self.warmup_steps, "reg_lr": self.reg_lr}
        config = self.write_config(work / "train.yaml", pruning)
        exp = work / "exp"
        progress_line(f"{name}: ESPnet training, {self.steps} steps, log {work / 'exp.log'}")
        started = time.time()
        train("asr", work, self.data, config, self.stats, ["text"], exp, env=self.env)
        trained = time.time() - started
        exported = work / "exported"
        with contextlib.redirect_stdout(sys.stderr):
            export_cli.main(["--train_config", str(exp / "config.yaml"), "--model_file", str(exp / "1epoch.pth"),
                             "--output_dir", str(exported)])
        report = json.loads((exported / "1epoch.json").read_text(encoding="utf-8"))
        register()
        model, _ = ASRTask.build_model_from_file(str(exported / "config.yaml"), str(exported / "1epoch.pth"), "cpu")
        budget = report["pruning"]["budgets"]["total"]
        progress_line(f"{name}: trained in {trained:.0f} s, exported {metric} ratio {budget['exported']:.3f} "
                      f"(target {target:g}, reached: {budget['reached']})"
                      + "".join(f"\n  warning: {w}" for w in report["pruning"]["warnings"]))
        self.last_run_seconds[name] = trained
        return model.frontend.encoder.eval(), budget


# ------------------------------------------------------------------------ the benchmark
def read_load() -> List[str]:
    return open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else []


def run(arch: Union[str, Dict[str, Any]], threads_list: Sequence[int], targets: Sequence[float],
        seconds: float, align: int, rounds: int, profile_rounds: int, trainer: str, warmup_steps: int,
        reg_lr: float, tolerance: float, work_dir: Path, tables: Optional[Path] = None,
        utterances: int = DEFAULTS["utterances"], train_ssl: bool = False,
        train_threads: int = DEFAULTS["train_threads"], progress: Callable[[str], None] = print) -> Dict[str, Any]:
    """The benchmark (module docstring); ``{"threads": {n: {"systems": [...], ...}}}``; each thread
    count's table (:func:`format_threads`) goes to ``progress`` as soon as it is timed. ``arch``: a
    preset name (tables are ``<arch>_t<threads>.json``) or architecture values (``encoder_t<threads>.json``)."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    label = arch if isinstance(arch, str) else "encoder"
    config = get_config(arch, encoder_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        encoder_projection_dropout=0.0, layer_drop=0.0)
    torch.manual_seed(0)
    dense = SSLEncoder(config).eval()
    waveform = torch.randn(1, int(seconds * config.sample_rate))
    dense_macs = cost.count_macs(config, seconds)["total"]
    results: Dict[str, Any] = {"arch": label, "seconds": seconds, "align": align, "trainer": trainer,
                               "steps": steps_for(warmup_steps), "warmup_steps": warmup_steps, "reg_lr": reg_lr,
                               "train_ssl": train_ssl, "train_threads": train_threads,
                               "processor": latency.processor_name(),
                               "torch": torch.__version__, "threads": {}}
    work_dir.mkdir(parents=True, exist_ok=True)
    espnet = (ESPnetPruner(arch, seconds, warmup_steps, reg_lr, utterances, train_ssl, train_threads,
                           work_dir / "espnet") if trainer == "espnet" else None)
    # A MAC budget does not depend on the table: it is trained once for every thread count.
    mac_runs: Dict[str, Tuple[SSLEncoder, Dict[str, Any]]] = {}
    for threads in threads_list:
        torch.set_num_threads(threads)
        started = time.time()
        load = read_load()
        if tables is not None:
            table_path = tables / f"{label}_t{threads}.json"
            table = latency.load_table(table_path)
        else:
            progress_line(f"{threads} thread(s): profiling the latency table")
            table = latency.profile(config, "cpu", "float32", 1, seconds, profile_rounds, progress=progress_line)
            table_path = work_dir / f"{label}_t{threads}.json"
            latency.save_table(table, table_path)
        dense_predicted = float(latency.predict_latency(table, config)["total"])
        models = {"dense": dense}
        systems: List[Dict[str, Any]] = []
        for metric in ("latency", "macs"):
            for target in targets:
                for aligned in sorted({1, align}):  # align 1: the unaligned variant only
                    name = f"{metric}{target:g}" + (f"_align{aligned}" if aligned > 1 else "")
                    if metric == "macs" and name in mac_runs:
                        compact, budget = mac_runs[name]
                    else:
                        if espnet is not None:
                            run_name = f"{name}_t{threads}" if metric == "latency" else name
                            compact, budget = espnet(run_name, metric, target, aligned, table_path)
                        else:
                            compact, exported = prune_to_budget(config, metric, target, aligned, table_path,
                                                                seconds, warmup_steps, reg_lr)
                            budget = {"exported": exported, "reached": None}
                            progress_line(f"{threads} thread(s): {name}: budget alone, exported ratio {exported:.3f}")
                        if metric == "macs":
                            mac_runs[name] = compact, budget
                    models[name] = compact
                    compact_config = compact.config
                    systems.append({
                        "system": name, "metric": metric, "target": target, "align": aligned,
                        "exported_budget_ratio": budget["exported"], "budget_reached": budget["reached"],
                        "macs_ratio": cost.count_macs(compact_config, seconds)["total"] / dense_macs,
                        "predicted_latency_ratio":
                            float(latency.predict_latency(table, compact_config)["total"]) / dense_predicted,
                        "conv": compact_config.conv_channels, "heads": compact_config.num_heads,
                        "ffn": compact_config.ffn_dims})
        # The table's second calibration point, timed here as well: how far this timing is from the profile's.
        half = latency.half_structure(config)
        models["half"] = SSLEncoder(half).eval()
        systems.append({"system": "half (calibration)", "metric": "none", "target": None, "align": 1,
                        "exported_budget_ratio": float("nan"), "budget_reached": None,
                        "macs_ratio": cost.count_macs(half, seconds)["total"] / dense_macs,
                        "predicted_latency_ratio":
                            float(latency.predict_latency(table, half)["total"]) / dense_predicted,
                        "conv": half.conv_channels, "heads": half.num_heads, "ffn": half.ffn_dims})
        clock = latency.CLOCKS[latency.clock_for(torch.device("cpu"))]
        per_round: Dict[str, List[float]] = {name: [] for name in models}

        def record(_: int, times: Dict[str, float]) -> None:
            for name, value in times.items():
                per_round[name].append(value)

        progress_line(f"{threads} thread(s): timing {len(models)} encoders interleaved, {rounds} rounds")
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
            "clock": latency.clock_for(torch.device("cpu")), "load_before": load, "load_after": read_load(),
            "dense_ms_median": 1000 * statistics.median(per_round["dense"]),
            "dense_predicted_ms": dense_predicted, "table": str(table_path),
            "table_check": table.get("check"), "minutes": (time.time() - started) / 60, "systems": systems}
        progress(format_threads(str(threads), entry, tolerance))
    if espnet is not None:
        results["training_seconds"] = espnet.last_run_seconds
    return results


def format_threads(threads: str, entry: Dict[str, Any], tolerance: float) -> str:
    """The table of one thread count: per system the target, the budget ratio training reached
    (``*``: the run's report says it missed its target by more than 0.02), the MAC ratio, the
    predicted and measured (median of per-round ratios, and fastest round against fastest round)
    latency ratios, speed-up / MAC cut, and whether a latency budget is within ``tolerance`` of
    its target."""
    lines = [f"{threads} thread(s), clock {entry['clock']}, load {entry['load_before']} -> "
             f"{entry['load_after']}, dense {entry['dense_ms_median']:.0f} ms (table predicts "
             f"{entry['dense_predicted_ms']:.0f} ms)",
             f"{'system':<22}{'target':>7}{'trained':>9}{'MACs':>7}{'predicted':>11}{'measured':>10}{'fastest':>9}"
             f"{'speed-up/MAC cut':>18}  within {tolerance:g}"]
    for s in entry["systems"]:
        within = {True: "yes", False: "no"}.get(s.get("within_tolerance"), "-")
        target = "-" if s["target"] is None else f"{s['target']:g}"
        missed = "*" if s["budget_reached"] is False else " "
        trained = "-" if s["metric"] == "none" else f"{s['exported_budget_ratio']:.3f}"
        lines.append(f"{s['system']:<22}{target:>7}{trained:>8}{missed}{s['macs_ratio']:>7.3f}"
                     f"{s['predicted_latency_ratio']:>11.3f}{s['latency_ratio_median']:>10.3f}"
                     f"{s['latency_ratio_fastest']:>9.3f}{s['speedup_per_mac_cut']:>18.3f}  {within}")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wav2vec2_base")
    parser.add_argument("--threads", default=DEFAULTS["threads"], help="comma-separated CPU thread counts")
    parser.add_argument("--targets", default=DEFAULTS["targets"], help="comma-separated keep ratios")
    parser.add_argument("--seconds", type=float, default=DEFAULTS["seconds"],
                        help="timed utterance duration (the table's and reference_seconds)")
    parser.add_argument("--align", type=int, default=DEFAULTS["align"], help="the aligned variant's align (>= 2)")
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"], help="interleaved timing rounds")
    parser.add_argument("--profile_rounds", type=int, default=DEFAULTS["profile_rounds"],
                        help="rounds per piece of the latency table")
    parser.add_argument("--trainer", choices=TRAINERS, default=DEFAULTS["trainer"],
                        help="espnet: ESPnet's trainer and export; none: the gates on the budget alone")
    parser.add_argument("--warmup_steps", type=int, default=DEFAULTS["warmup_steps"],
                        help=f"the budget's ramp; each run trains {RUN_LENGTH_PER_WARMUP:g} times as many steps")
    parser.add_argument("--reg_lr", type=float, default=DEFAULTS["reg_lr"])
    parser.add_argument("--utterances", type=int, default=DEFAULTS["utterances"],
                        help="training utterances of the generated corpus (--trainer espnet)")
    parser.add_argument("--train_threads", type=int, default=DEFAULTS["train_threads"],
                        help="CPU threads of the ESPnet training runs (any table's budget is its own latency)")
    parser.add_argument("--train_ssl", action="store_true",
                        help="train the SSL weights too (default: frozen, the gates train)")
    parser.add_argument("--tolerance", type=float, default=DEFAULTS["tolerance"])
    parser.add_argument("--tables", type=Path, default=None,
                        help="read <arch>_t<threads>.json from here instead of profiling")
    parser.add_argument("--work_dir", type=Path, default=Path("exp/benchmark_latency"),
                        help="where profiled tables, the corpus and the ESPnet runs are written")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    if args.align < 2:
        get_parser().error("--align must be >= 2 (the variant without alignment is always run)")
    if args.trainer == "espnet" and args.work_dir.exists() and any(args.work_dir.iterdir()):
        get_parser().error(f"--work_dir {args.work_dir} is not empty (the ESPnet runs need a fresh one)")
    print(f"benchmark_latency: {args.arch}, {args.seconds:g} s, trainer {args.trainer}, "
          f"{steps_for(args.warmup_steps)} steps (warmup_steps {args.warmup_steps}, reg_lr {args.reg_lr:g}), "
          f"{latency.processor_name()}, torch {torch.__version__}", flush=True)
    started = time.time()
    results = run(args.arch, [int(t) for t in args.threads.split(",")],
                  [float(t) for t in args.targets.split(",")], args.seconds, args.align, args.rounds,
                  args.profile_rounds, args.trainer, args.warmup_steps, args.reg_lr, args.tolerance, args.work_dir,
                  args.tables, args.utterances, args.train_ssl, args.train_threads,
                  progress=lambda table: print(table, flush=True))
    results["minutes"] = (time.time() - started) / 60
    progress_line(f"done in {results['minutes']:.1f} min")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
