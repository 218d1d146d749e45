"""The GPU benchmark (``make bench-gpu``): frontend latency, the whole decode, the training step.

    python -m espnet_prune.bin.benchmark_gpu --device cuda --output_dir exp/bench_gpu
    python -m espnet_prune.bin.benchmark_gpu --device cpu --size tiny   # what the test runs

One run, random weights, one JSON (``results.json``) and one markdown table (``results.md``):

1. **Frontend latency**: the dense wav2vec2-base encoder against compact ones at 0.7 and 0.5 of
   its MACs (:func:`espnet_prune.bin.benchmark_ssl.compact_at`), in fp32 and bf16 (the models cast
   to ``torch.bfloat16``), at batch 1 and 16, on 10 s of audio; medians over interleaved rounds.
2. **Whole decode**: :mod:`espnet_prune.bin.benchmark_decode` on the device for the three recipe
   shapes (:mod:`espnet_prune.inference.shapes`), dense against the frontend at 0.5 of its MACs,
   30 decoded tokens, one 5 s utterance.
3. **Training-step overhead of pruning**: one ASR training step (forward, backward, optimizer)
   of ``pruned_ssl`` with HJ-Pruning, ``pruned_ssl`` without pruning and ESPnet's ``s3prl``
   frontend around the same random checkpoint (the models of
   :mod:`espnet_prune.bin.benchmark_train`, moved to the device), batch 8 of 4 s.

``--size tiny`` shrinks everything (a 2-layer 32-wide encoder, 1 s of audio, batch 1 and 2, one
round) so that the whole script runs in a test on CPU.
"""

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from espnet_prune.utils.timing import time_interleaved

#: Everything that differs between the full benchmark and the one the tests run.
SIZES: Dict[str, Dict[str, Any]] = {
    "full": dict(arch="wav2vec2_base", frontend_seconds=10.0, batches=(1, 16), targets=(0.7, 0.5), rounds=5,
                 decode_seconds=5.0, tokens=30, decode_rounds=3, small=False, train_batch=8, train_seconds=4.0,
                 train_rounds=5, s3prl=dict()),
    "tiny": dict(arch=dict(model_type="wav2vec2", extractor_mode="group_norm",
                           conv_layers=[[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2, embed_dim=32,
                           num_layers=2, num_heads=4, ffn_dims=64, pos_conv_kernel=16, pos_conv_groups=4),
                 frontend_seconds=1.0, batches=(1, 2), targets=(0.7, 0.5), rounds=1,
                 decode_seconds=1.0, tokens=4, decode_rounds=1, small=True, train_batch=2, train_seconds=1.0,
                 train_rounds=1,
                 s3prl=dict(extractor_mode="default", conv_feature_layers="[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2",
                            encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                            encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4)),
}


def arch_config(size: Dict[str, Any]):
    """The SSL encoder config of ``size`` (dropouts off)."""
    from espnet_prune.ssl.config import get_config

    return get_config(size["arch"], encoder_projection_dropout=0.0, encoder_dropout=0.0, attention_dropout=0.0,
                      activation_dropout=0.0, layer_drop=0.0)


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def frontend_latency(size: Dict[str, Any], device: str) -> List[Dict[str, Any]]:
    """Rows ``{model, macs_ratio, dtype, batch, ms, speedup}`` (speed-up over dense, same dtype and batch)."""
    from espnet_prune.bin.benchmark_ssl import compact_at
    from espnet_prune.ssl import cost
    from espnet_prune.ssl.model import SSLEncoder

    torch.manual_seed(0)
    config = arch_config(size)
    seconds = size["frontend_seconds"]
    dense = SSLEncoder(config).eval()
    models = {"dense": dense}
    for target in size["targets"]:
        models[f"compact_{target:g}"] = compact_at(dense, target, seconds).eval()
    dense_macs = cost.count_macs(config, seconds)["total"]
    ratios = {name: cost.count_macs(model.config, seconds)["total"] / dense_macs for name, model in models.items()}
    synchronize = synchronizer(device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        cast = {name: model.to(device=device, dtype=dtype) for name, model in models.items()}
        for batch in size["batches"]:
            waveform = torch.randn(batch, int(seconds * config.sample_rate), device=device, dtype=dtype)

            def call(model=None):
                model(waveform)
                synchronize()

            with torch.inference_mode():
                medians = time_interleaved({name: (lambda model=model: call(model)) for name, model in cast.items()},
                                           size["rounds"], warmup=2, rotate=True)
            for name in cast:
                rows.append(dict(model=name, macs_ratio=ratios[name], dtype=str(dtype).replace("torch.", ""),
                                 batch=batch, seconds=seconds, ms=1000 * medians[name],
                                 speedup=medians["dense"] / medians[name]))
        for model in models.values():
            model.to(device="cpu", dtype=torch.float32)
    return rows


def whole_decode(size: Dict[str, Any], device: str) -> Dict[str, Any]:
    """:mod:`espnet_prune.bin.benchmark_decode` of every shape on ``device`` (dense vs frontend at 0.5)."""
    from espnet_prune.bin import benchmark_decode

    arch = json.dumps(arch_config(size).to_dict())
    results = {}
    for shape in ("ctc", "transformer_decoder", "conformer"):
        args = benchmark_decode.get_parser().parse_args(
            ["--shape", shape, "--arch", arch, "--targets", "0.5", "--seconds", str(size["decode_seconds"]),
             "--tokens", str(size["tokens"]), "--rounds", str(size["decode_rounds"]), "--device", device]
            + (["--small", "--vocabulary", "20"] if size["small"] else [])
            + (["--best_path"] if shape == "ctc" else []))
        results[shape] = benchmark_decode.run(args)
    return results


def training_step(size: Dict[str, Any], device: str, target: float = 0.5) -> Dict[str, Any]:
    """Median step times of the three frontends of :mod:`espnet_prune.bin.benchmark_train` on ``device``."""
    from espnet_prune import register
    from espnet_prune.bin.benchmark_train import build_systems, random_batch, train_step, write_s3prl_checkpoint

    register()
    torch.manual_seed(0)
    batch, seconds = size["train_batch"], size["train_seconds"]
    inputs = random_batch(batch, seconds, device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(write_s3prl_checkpoint(Path(tmp) / "random.pt", size["s3prl"]))
        pruning = {"units": ["conv", "head", "interm"], "metric": "macs", "target": target, "warmup_steps": 100,
                   "reference_seconds": seconds}
        systems = build_systems(checkpoint, pruning)
    for model, _ in systems.values():
        model.to(device)
    synchronize = synchronizer(device)

    def step(name: str) -> None:
        train_step(systems[name], inputs)
        synchronize()

    medians = time_interleaved({name: (lambda name=name: step(name)) for name in systems}, size["train_rounds"],
                               warmup=1, rotate=True)
    return dict(batch=batch, seconds=seconds, **{f"{name}_ms": 1000 * value for name, value in medians.items()},
                pruned_over_plain=medians["pruned"] / medians["plain"],
                pruned_over_s3prl=medians["pruned"] / medians["s3prl"],
                plain_over_s3prl=medians["plain"] / medians["s3prl"])


def markdown(results: Dict[str, Any]) -> str:
    """One markdown document: the three tables."""
    from espnet_prune.inference.decode_timing import markdown_table

    lines = [f"Device: {results['device_name']} (`{results['device']}`), size `{results['size']}`, "
             "random weights, medians over interleaved rounds.", "",
             "| frontend | MACs | dtype | batch | latency | speed-up vs dense |", "|---|---|---|---|---|---|"]
    for row in results["frontend"]:
        lines.append(f"| {row['model']} | {100 * row['macs_ratio']:.1f} % | {row['dtype']} | {row['batch']} | "
                     f"{row['ms']:.1f} ms | ×{row['speedup']:.2f} |")
    for shape, decode in results["decode"].items():
        lines += ["", f"Whole decode, `{shape}` ({decode['audio_seconds']:g} s, decode config "
                      f"{decode['decode_config']}):", "", markdown_table(decode["systems"], decode["reference"])]
    train = results["training"]
    lines += ["", f"Training step, batch {train['batch']} × {train['seconds']:g} s:", "",
              "| frontend | step | ratio |", "|---|---|---|",
              f"| `pruned_ssl` with HJ-Pruning | {train['pruned_ms']:.1f} ms | ×{train['pruned_over_plain']:.2f} vs "
              f"unpruned, ×{train['pruned_over_s3prl']:.2f} vs `s3prl` |",
              f"| `pruned_ssl` without pruning | {train['plain_ms']:.1f} ms | ×{train['plain_over_s3prl']:.2f} vs "
              "`s3prl` |",
              f"| ESPnet `s3prl` | {train['s3prl_ms']:.1f} ms | 1 |"]
    return "\n".join(lines) + "\n"


def run(device: str, size_name: str) -> Dict[str, Any]:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU here")
    size = SIZES[size_name]
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else (platform.processor() or "CPU")
    results: Dict[str, Any] = dict(device=device, device_name=name, size=size_name, torch=torch.__version__,
                                   threads=torch.get_num_threads())
    print(f"frontend latency on {name} ...", flush=True)
    results["frontend"] = frontend_latency(size, device)
    print("whole decode ...", flush=True)
    results["decode"] = whole_decode(size, device)
    print("training step ...", flush=True)
    results["training"] = training_step(size, device)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full (wav2vec2-base) or tiny (tests)")
    parser.add_argument("--output_dir", type=Path, default=Path("bench_gpu"),
                        help="where results.json and results.md go")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    try:
        results = run(args.device, args.size)
    except ValueError as error:
        raise SystemExit(f"benchmark_gpu: {error}") from None
    table = markdown(results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (args.output_dir / "results.md").write_text(table, encoding="utf-8")
    print(table, end="")


if __name__ == "__main__":
    main()
