"""CPU timing of the prunable encoder, in one run, against its references.

    python -m espnet_prune.bin.benchmark_ssl [--arch wav2vec2_base] [--seconds 10] [--target 0.5]

1. Overhead: our encoder with gates disabled (``masks=None``) against torchaudio's
   ``wav2vec2_model`` holding the same weights, on the same input.
2. Speed-up: a compact model at about ``--target`` of the dense MACs (the same fraction of
   CNN channels, heads and FFN units kept in every layer, chosen by weight norm) against
   the dense model.

Timings interleave the two sides (one call each per round) and report medians; the
script prints the ratios and, with ``--json``, writes them to a file.
"""

import argparse
import json
from typing import Callable, Dict, List, Optional

import torch

from espnet_prune.ssl import cost
from espnet_prune.ssl.config import get_config
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder
from espnet_prune.utils.timing import time_interleaved


def time_pair(first: Callable[[], object], second: Callable[[], object], rounds: int,
              warmup: int = 2) -> Dict[str, float]:
    """Median seconds of ``first`` and ``second`` over interleaved rounds."""
    return time_interleaved({"first": first, "second": second}, rounds, warmup)


def torchaudio_twin(encoder: SSLEncoder) -> torch.nn.Module:
    """torchaudio's ``wav2vec2_model`` with the same architecture and weights as a dense encoder."""
    from torchaudio.models import wav2vec2_model

    config = encoder.config
    if config.relative_position_bias:
        raise ValueError("the overhead benchmark compares against torchaudio's wav2vec2_model; "
                         "pick a wav2vec2 or hubert architecture")
    reference = wav2vec2_model(
        extractor_mode=config.extractor_mode,
        extractor_conv_layer_config=[tuple(layer) for layer in config.conv_layers],
        extractor_conv_bias=config.conv_bias,
        encoder_embed_dim=config.embed_dim,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=config.pos_conv_kernel,
        encoder_pos_conv_groups=config.pos_conv_groups,
        encoder_num_layers=config.num_layers,
        encoder_num_heads=config.num_heads[0],
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=config.ffn_dims[0],
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=config.layer_norm_first,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    reference.load_state_dict(encoder.state_dict(), strict=True)
    return reference.eval()


def uniform_masks(encoder: SSLEncoder, keep: float) -> Dict[str, List[torch.Tensor]]:
    """Masks keeping the fraction ``keep`` of CNN channels, heads and FFN units in every layer,
    the ones with the largest outgoing weight norm (a stand-in for a trained pruning run)."""

    def top(scores: torch.Tensor) -> torch.Tensor:
        count = max(1, int(round(keep * scores.numel())))
        mask = torch.zeros_like(scores)
        mask[scores.topk(count).indices] = 1.0
        return mask

    conv_layers = encoder.feature_extractor.conv_layers
    masks: Dict[str, List[torch.Tensor]] = {"conv": [], "head": [], "interm": []}
    for layer in conv_layers:
        masks["conv"].append(top(layer.conv.weight.detach().flatten(1).norm(dim=1)))
    for layer in encoder.encoder.transformer.layers:
        attention = layer.attention
        per_head = attention.out_proj.weight.detach().view(-1, attention.num_heads, attention.head_dim)
        masks["head"].append(top(per_head.norm(dim=(0, 2))))
        masks["interm"].append(top(layer.feed_forward.output_dense.weight.detach().norm(dim=0)))
    return masks


def compact_at(encoder: SSLEncoder, target: float, seconds: float) -> SSLEncoder:
    """The uniformly pruned compact model whose MACs are closest to ``target`` of the dense ones."""
    dense = cost.count_macs(encoder.config, seconds)["total"]
    low, high = 0.05, 1.0
    for _ in range(20):
        keep = (low + high) / 2
        masks = uniform_masks(encoder, keep)  # the compact model's unit counts, without building it
        counts = {"conv": [int(m.count_nonzero()) for m in masks["conv"]],
                  "head": [int(m.count_nonzero()) for m in masks["head"]],
                  "interm": [int(m.count_nonzero()) for m in masks["interm"]]}
        ratio = cost.count_macs(encoder.config, seconds, counts)["total"] / dense
        if ratio > target:
            high = keep
        else:
            low = keep
    return prune_encoder(encoder, uniform_masks(encoder, low))


def run(arch: str, seconds: float, target: float, rounds: int, threads: Optional[int]) -> Dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = get_config(arch, encoder_projection_dropout=0.0, encoder_dropout=0.0, attention_dropout=0.0,
                        activation_dropout=0.0, layer_drop=0.0)
    encoder = SSLEncoder(config).eval()
    waveform = torch.randn(1, int(seconds * config.sample_rate))
    results: Dict[str, float] = {"seconds": seconds, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        reference = torchaudio_twin(encoder)
        times = time_pair(lambda: encoder(waveform), lambda: reference(waveform), rounds)
        results["ours_ms"] = 1000 * times["first"]
        results["torchaudio_ms"] = 1000 * times["second"]
        results["overhead"] = times["first"] / times["second"] - 1.0
        print(f"gates disabled: ours {results['ours_ms']:.1f} ms, torchaudio {results['torchaudio_ms']:.1f} ms, "
              f"overhead {100 * results['overhead']:+.1f}% (target <= +10%)")

        compact = compact_at(encoder, target, seconds).eval()
        macs_dense = cost.count_macs(config, seconds)["total"]
        macs_compact = cost.count_macs(compact.config, seconds)["total"]
        times = time_pair(lambda: compact(waveform), lambda: encoder(waveform), rounds)
        results["compact_ms"] = 1000 * times["first"]
        results["dense_ms"] = 1000 * times["second"]
        results["macs_ratio"] = macs_compact / macs_dense
        results["mac_reduction"] = macs_dense / macs_compact
        results["speedup"] = times["second"] / times["first"]
        results["speedup_over_mac_reduction"] = results["speedup"] / results["mac_reduction"]
        print(f"compact at {100 * results['macs_ratio']:.1f}% MACs: {results['compact_ms']:.1f} ms vs dense "
              f"{results['dense_ms']:.1f} ms, speed-up x{results['speedup']:.2f} for a MAC reduction "
              f"x{results['mac_reduction']:.2f} (ratio {results['speedup_over_mac_reduction']:.2f}, target >= 0.8)")
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wav2vec2_base", help="architecture preset (random weights)")
    parser.add_argument("--seconds", type=float, default=10.0, help="input duration")
    parser.add_argument("--target", type=float, default=0.5, help="MAC ratio of the compact model")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    if not 0.0 < args.target < 1.0:
        raise SystemExit(f"--target must lie in (0, 1), got {args.target}")
    results = run(args.arch, args.seconds, args.target, args.rounds, args.threads)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
