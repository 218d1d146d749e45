"""CPU latency of LM scoring in beam search.

One beam-search step with shallow fusion calls the LM's ``batch_score`` once for all
running hypotheses: ``(beam, t)`` prefixes plus each hypothesis's per-layer cache ->
``(beam, vocab)`` log-probabilities and new caches. :func:`time_lms` times exactly
that loop — ``num_steps`` consecutive steps from ``<sos>`` with caches carried over,
the tokens fixed in advance so every LM sees the same prefixes — for several LMs in
the same process, interleaving the models over ``repeats`` rounds (the shared timer,
:func:`espnet_prune.utils.timing.time_interleaved`, with a rotating order), and reports
each model's median time per step.
"""

from typing import Dict

import torch

from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM
from espnet_prune.utils.timing import time_interleaved


@torch.inference_mode()
def run_beam_steps(lm: PrunedTransformerLM, tokens: torch.Tensor, sos: int) -> None:
    """``num_steps`` consecutive ``batch_score`` steps from ``<sos>``, caches carried over.

    Args:
        lm: LM in eval mode.
        tokens: (num_steps, beam) token appended to each hypothesis after each step.
        sos: start token.
    """
    num_steps, beam = tokens.shape
    ys = torch.full((beam, 1), sos, dtype=torch.long)
    states = [None] * beam
    for t in range(num_steps):
        _, states = lm.batch_score(ys, states, None)
        ys = torch.cat([ys, tokens[t][:, None]], dim=1)


def time_lms(
    lms: Dict[str, PrunedTransformerLM],
    beam_size: int = 10,
    num_steps: int = 30,
    repeats: int = 5,
    num_threads: int = 1,
    seed: int = 0,
) -> Dict[str, float]:
    """Median seconds per beam-search step of each LM, all timed in this process on CPU.

    Args:
        lms: ``{name: LM}``; all must share the vocabulary.
        beam_size: hypotheses scored per step.
        num_steps: steps per timing (prefix lengths 1..num_steps).
        repeats: timing rounds (models interleaved in each round).
        num_threads: torch CPU threads during timing.
        seed: seed of the token sequence.
    """
    vocab_size = next(iter(lms.values())).vocab_size
    sos = vocab_size - 1
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab_size - 1, (num_steps, beam_size), generator=generator)
    cpu_lms = {name: lm.to("cpu").eval() for name, lm in lms.items()}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        for lm in cpu_lms.values():  # warm-up
            run_beam_steps(lm, tokens[: min(3, num_steps)], sos)
        calls = {name: (lambda lm=lm: run_beam_steps(lm, tokens, sos)) for name, lm in cpu_lms.items()}
        medians = time_interleaved(calls, repeats, warmup=0, rotate=True)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: seconds / num_steps for name, seconds in medians.items()}
