"""CPU time of one ASR training step with a pruning frontend, against the unpruned frontends.

    python -m espnet_prune.bin.benchmark_train [--batch 4] [--seconds 4] [--rounds 3] \\
        [--systems pruned,plain,s3prl]

Three ESPnet ASR models are built by ``ASRTask.build_model`` around the same randomly
initialised wav2vec2-base checkpoint (written in s3prl's converted format, so that every
frontend reads the same file):

* ``pruned``: ``frontend: pruned_ssl`` with HJ-Pruning (gates sampled, Lagrangian added),
* ``plain``: ``frontend: pruned_ssl`` without pruning,
* ``s3prl``: ESPnet's ``frontend: s3prl`` (``wav2vec2_local``).

Each step is forward, backward and ``optimizer.step()`` (optimizers from
``ASRTask.build_optimizers``) on the same batch; rounds interleave the models and
the script prints median step times and their ratios, and where the gated step's extra
time goes: the pruning controller's calls, timed inside every gated step (``masks``: gate
sampling; ``regularization``: expected cost and the budget-matching rounding of the
deterministic structure; ``advance``: multipliers and schedule, after ``optimizer.step()``),
and the rest of the difference to the unpruned step (``masked model``: mask multiplications
and masked layer norms in forward and backward, and the gates' optimizer update).
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from espnet_prune import register
from espnet_prune.utils.timing import time_interleaved

TOKENS = ["<blank>", "<unk>"] + list("abcdefghijklmnopqrstuvwxyz' ") + ["<sos/eos>"]
SYSTEMS = ("pruned", "plain", "s3prl")
#: The controller calls of a gated training step that :func:`run` times.
CONTROLLER_CALLS = {"masks": "forward", "regularization": "regularization", "advance": "advance"}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def write_s3prl_checkpoint(path: Path, overrides: Optional[Dict] = None) -> Path:
    """A random wav2vec 2.0 model in s3prl's converted checkpoint format: ``Wav2Vec2Config``
    (wav2vec2-base) with ``overrides``."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(**(overrides or {}))
    model = Wav2Vec2Model(config)
    torch.save({"task_cfg": {"_name": "audio_pretraining", "normalize": False, "sample_rate": 16000},
                "model_cfg": {"_name": "wav2vec2", **dataclasses.asdict(config)},
                "model_weight": model.state_dict()}, path)
    return path


def random_batch(batch: int, seconds: float, device: str = "cpu") -> Tuple[torch.Tensor, ...]:
    """``(speech (B, S), speech_lengths (B,), text (B, L), text_lengths (B,))``: random 16 kHz audio of
    ``seconds`` and about 12 random tokens per second (at least 2)."""
    samples = int(seconds * 16000)
    speech = torch.randn(batch, samples, device=device)
    text = torch.randint(2, len(TOKENS) - 1, (batch, max(2, int(seconds * 12))), device=device)
    lengths = torch.full((batch,), samples, device=device)
    return speech, lengths, text, torch.full((batch,), text.shape[1], device=device)


def train_step(system: Tuple, inputs: Tuple[torch.Tensor, ...]) -> None:
    """One optimizer step of ``system`` (``(model, optimizer)`` of :func:`build_systems`) on
    :func:`random_batch`'s ``inputs``."""
    model, optimizer = system
    loss, _, _ = model(*inputs)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def build_systems(checkpoint: str, pruning: Dict, names: Optional[Sequence[str]] = None) -> Dict[str, Tuple]:
    """``{name: (model, optimizer)}`` of :data:`SYSTEMS` (those in ``names``; default all) on the s3prl
    ``checkpoint``: ``pruned`` gates with ``pruning``, ``plain`` is ``pruned_ssl`` without it, ``s3prl``
    is ESPnet's own frontend."""
    builders = {
        "pruned": lambda: build_model("pruned_ssl", {"checkpoint": checkpoint, "pruning": pruning}, "pruned_espnet"),
        "plain": lambda: build_model("pruned_ssl", {"checkpoint": checkpoint}, "pruned_espnet"),
        "s3prl": lambda: build_model("s3prl", {"frontend_conf": {"upstream": "wav2vec2_local",
                                                                 "path_or_url": checkpoint}}, "espnet"),
    }
    return {name: builders[name]() for name in SYSTEMS if names is None or name in names}


def build_model(frontend: str, frontend_conf: Dict, model: str):
    from espnet2.tasks.asr import ASRTask

    args = vars(ASRTask.get_parser().parse_args([]))
    args.update(
        frontend=frontend, frontend_conf=frontend_conf, model=model,
        model_conf={"ctc_weight": 1.0}, normalize="utterance_mvn",
        encoder="transformer", encoder_conf={"output_size": 256, "num_blocks": 1, "linear_units": 1024,
                                             "input_layer": "linear"},
        decoder=None, optim="adam", optim_conf={"lr": 1e-4},
        token_list=TOKENS, input_size=None,
    )
    namespace = argparse.Namespace(**args)
    asr_model = ASRTask.build_model(namespace)
    (optimizer,) = ASRTask.build_optimizers(namespace, asr_model)
    return asr_model.train(), optimizer


def timed_calls(controller, seconds: Dict[str, List[float]], clock: Callable[[], float] = time.perf_counter) -> None:
    """Wrap ``controller``'s :data:`CONTROLLER_CALLS` (on the instance) so that each call appends its
    time (by ``clock``) to ``seconds[name]``."""
    for name, method in CONTROLLER_CALLS.items():
        original: Callable = getattr(controller, method)

        def timed(*args, _original=original, _name=name, **kwargs):
            start = clock()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_name].append(clock() - start)
        setattr(controller, method, timed)


def run(batch: int, seconds: float, rounds: int, target: float,
        systems_to_run: Sequence[str] = SYSTEMS, clock: str = "wall") -> Dict[str, float]:
    """Time the training steps (``clock``: ``wall`` time, or ``cpu``: this process's CPU time, which
    other jobs on a shared machine disturb less; use it with one thread)."""
    if "pruned" not in systems_to_run or not set(systems_to_run) <= set(SYSTEMS):
        raise ValueError(f"systems must include 'pruned' and be among {list(SYSTEMS)}, got {list(systems_to_run)}")
    register()
    torch.manual_seed(0)
    inputs = random_batch(batch, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(write_s3prl_checkpoint(Path(tmp) / "wav2vec2_base_random.pt"))
        pruning = {"units": ["conv", "head", "interm"], "metric": "macs", "target": target, "warmup_steps": 100}
        systems = build_systems(checkpoint, pruning, systems_to_run)
    calls: Dict[str, List[float]] = {name: [] for name in CONTROLLER_CALLS}
    timer = CLOCKS[clock]
    timed_calls(systems["pruned"][0].frontend.controller, calls, timer)

    def step(name: str) -> None:
        train_step(systems[name], inputs)

    def progress(index: int, seconds: Dict[str, float]) -> None:
        print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {1000 * t:.0f} ms" for n, t in seconds.items()),
              flush=True)

    per_round: Dict[str, List[float]] = {name: [] for name in systems}

    def record(index: int, times: Dict[str, float]) -> None:
        for name, value in times.items():
            per_round[name].append(value)
        progress(index, times)

    medians = time_interleaved({name: (lambda name=name: step(name)) for name in systems}, rounds, warmup=1,
                               rotate=True, on_round=record, clock=timer)
    results = {f"{name}_ms": 1000 * value for name, value in medians.items()}
    labels = {"pruned": "pruned_ssl+pruning", "plain": "pruned_ssl", "s3prl": "s3prl"}
    line = (f"training step ({clock} time, {torch.get_num_threads()} thread(s)), batch {batch} x {seconds:g} s: "
            + ", ".join(f"{labels[name]} {results[name + '_ms']:.0f} ms" for name in systems))
    for first, second in (("pruned", "plain"), ("pruned", "s3prl"), ("plain", "s3prl")):
        if first in medians and second in medians:
            ratios = [a / b for a, b in zip(per_round[first], per_round[second])]
            results[f"{first}_over_{second}"] = medians[first] / medians[second]
            results[f"{first}_over_{second}_range"] = [min(ratios), max(ratios)]
            line += (f"; {first}/{second} x{results[f'{first}_over_{second}']:.3f} "
                     f"(per round x{min(ratios):.3f}..x{max(ratios):.3f})")
    print(line)
    # The controller's calls of the timed gated steps (the warm-up step's are dropped).
    controller = {name: 1000 * statistics.median(values[-rounds:]) for name, values in calls.items()}
    results.update({f"controller_{name}_ms": value for name, value in controller.items()})
    if "plain" in medians:
        extra = results["pruned_ms"] - results["plain_ms"]
        results["masked_model_ms"] = extra - sum(controller.values())
        print(f"gated step - unpruned step = {extra:.0f} ms: " + ", ".join(
            f"controller {name} {value:.1f} ms" for name, value in controller.items())
              + f", masked model (the rest) {results['masked_model_ms']:.0f} ms")
    return results


def main(cmd: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of every utterance")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per model")
    parser.add_argument("--target", type=float, default=0.5, help="pruning target of the gated model")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)} (with pruned)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (less disturbed by other jobs; use --threads 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(cmd)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        run(args.batch, args.seconds, args.rounds, args.target, [name.strip() for name in args.systems.split(",")],
            args.clock)
    except ValueError as error:
        raise SystemExit(f"benchmark_train: {error}")


if __name__ == "__main__":
    main()
