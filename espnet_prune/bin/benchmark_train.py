"""CPU time of one ASR training step with a pruning frontend, against the unpruned frontends.

    python -m espnet_prune.bin.benchmark_train [--batch 4] [--seconds 4] [--rounds 3]

Three ESPnet ASR models are built by ``ASRTask.build_model`` around the same randomly
initialised wav2vec2-base checkpoint (written in s3prl's converted format, so that every
frontend reads the same file):

* ``pruned``: ``frontend: pruned_ssl`` with HJ-Pruning (gates sampled, Lagrangian added),
* ``plain``: ``frontend: pruned_ssl`` without pruning,
* ``s3prl``: ESPnet's ``frontend: s3prl`` (``wav2vec2_local``).

Each step is forward, backward and ``optimizer.step()`` (optimizers from
``ASRTask.build_optimizers``) on the same batch; rounds interleave the three models and
the script prints median step times and their ratios.
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from espnet_prune import register
from espnet_prune.utils.timing import time_interleaved

TOKENS = ["<blank>", "<unk>"] + list("abcdefghijklmnopqrstuvwxyz' ") + ["<sos/eos>"]


def write_s3prl_checkpoint(path: Path) -> Path:
    """A random wav2vec2-base model in s3prl's converted checkpoint format."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config()
    model = Wav2Vec2Model(config)
    torch.save({"task_cfg": {"_name": "audio_pretraining", "normalize": False, "sample_rate": 16000},
                "model_cfg": {"_name": "wav2vec2", **dataclasses.asdict(config)},
                "model_weight": model.state_dict()}, path)
    return path


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


def run(batch: int, seconds: float, rounds: int, target: float) -> Dict[str, float]:
    register()
    torch.manual_seed(0)
    samples = int(seconds * 16000)
    speech = torch.randn(batch, samples)
    speech_lengths = torch.full((batch,), samples)
    text = torch.randint(2, len(TOKENS) - 1, (batch, int(seconds * 12)))
    text_lengths = torch.full((batch,), text.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(write_s3prl_checkpoint(Path(tmp) / "wav2vec2_base_random.pt"))
        pruning = {"units": ["conv", "head", "interm"], "metric": "macs", "target": target, "warmup_steps": 100}
        systems = {
            "pruned": build_model("pruned_ssl", {"checkpoint": checkpoint, "pruning": pruning}, "pruned_espnet"),
            "plain": build_model("pruned_ssl", {"checkpoint": checkpoint}, "pruned_espnet"),
            "s3prl": build_model("s3prl", {"frontend_conf": {"upstream": "wav2vec2_local",
                                                             "path_or_url": checkpoint}}, "espnet"),
        }

    def step(name: str) -> None:
        model, optimizer = systems[name]
        loss, _, _ = model(speech, speech_lengths, text, text_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def progress(index: int, seconds: Dict[str, float]) -> None:
        print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {1000 * t:.0f} ms" for n, t in seconds.items()),
              flush=True)

    medians = time_interleaved({name: (lambda name=name: step(name)) for name in systems}, rounds, warmup=1,
                               on_round=progress)
    results = {f"{name}_ms": 1000 * value for name, value in medians.items()}
    results["pruned_over_plain"] = medians["pruned"] / medians["plain"]
    results["pruned_over_s3prl"] = medians["pruned"] / medians["s3prl"]
    results["plain_over_s3prl"] = medians["plain"] / medians["s3prl"]
    print(f"training step, batch {batch} x {seconds:g} s: pruned_ssl+pruning {results['pruned_ms']:.0f} ms, "
          f"pruned_ssl {results['plain_ms']:.0f} ms, s3prl {results['s3prl_ms']:.0f} ms; "
          f"gated/plain x{results['pruned_over_plain']:.2f}, gated/s3prl x{results['pruned_over_s3prl']:.2f}, "
          f"plain/s3prl x{results['plain_over_s3prl']:.2f}")
    return results


def main(cmd: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of every utterance")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per model")
    parser.add_argument("--target", type=float, default=0.5, help="pruning target of the gated model")
    args = parser.parse_args(cmd)
    run(args.batch, args.seconds, args.rounds, args.target)


if __name__ == "__main__":
    main()
