"""Evaluation and the pruning report (``report.json`` + ``report.md``).

Perplexity is computed as ``espnet2.bin.lm_calc_perplexity`` does: ``exp`` of the
total negative log-likelihood over the total number of predicted tokens (sentence
tokens + ``<eos>``) of the valid text.
"""

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel

from espnet_prune.utils.finite import NonFiniteError
from espnet_prune.utils.output_dir import replace_file


@torch.no_grad()
def perplexity(model: ESPnetLanguageModel, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Perplexity of ``model`` on (text (batch, L), lengths (batch,)) batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    try:
        for text, lengths in batches:
            nll, token_counts = model.nll(text.to(device), lengths.to(device))
            total_nll += float(nll.double().sum())
            total_tokens += int(token_counts.sum())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError("no tokens to compute perplexity on")
    if not math.isfinite(total_nll):
        raise NonFiniteError(f"the LM's negative log-likelihood of the text is {total_nll} (non-finite)")
    return math.exp(total_nll / total_tokens)


COLUMNS = (
    ("system", "name", "{}"),
    ("target", "target", "{:.2f}"),
    ("params", "params", "{:,}"),
    ("params / dense", "param_ratio", "{:.3f}"),
    ("perplexity", "perplexity", "{:.3f}"),
    ("ms / step", "latency_ms_per_step", "{:.3f}"),
    ("latency / dense", "latency_ratio", "{:.3f}"),
)


def markdown_table(systems: List[Dict[str, Any]]) -> str:
    """The per-system rows of the report as a markdown table."""
    lines = [
        "| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for system in systems:
        cells = [fmt.format(system[key]) for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(output_dir: str, report: Dict[str, Any]) -> Tuple[Path, Path]:
    """Write ``report.json`` (all of ``report``) and ``report.md`` (settings + table).

    Args:
        output_dir: directory.
        report: ``{"settings": {...}, "latency": {...}, "systems": [{name, target,
            params, param_ratio, perplexity, latency_ms_per_step, latency_ratio, ...}]}``.
    """
    output_dir = Path(output_dir)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    with replace_file(json_path, "w") as f:
        json.dump(report, f, indent=2)
    settings = report["settings"]
    latency = report["latency"]
    header = (
        f"# LM pruning: {settings['method']} / {settings['criterion']} / "
        f"{settings['scheduler']}\n\n"
        f"Dense LM: `{settings['lm_file']}` ({report['dense_params']:,} parameters). "
        f"Perplexity on `{settings['valid_text']}`. Latency: median time of one "
        f"`batch_score` step of beam search (beam {latency['beam_size']}, "
        f"{latency['num_steps']} steps, {latency['num_threads']} CPU thread(s), "
        f"{latency['repeats']} interleaved rounds), all systems timed in one run.\n\n"
    )
    with replace_file(md_path, "w") as f:
        f.write(header + markdown_table(report["systems"]))
    return json_path, md_path
