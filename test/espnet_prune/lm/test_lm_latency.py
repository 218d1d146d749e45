"""The LM latency timer: what one timed beam-search loop runs, and what time_lms reports."""

import time

import torch

from espnet_prune.lm import latency
from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM

VOCAB = 20
CONF = dict(embed_unit=16, att_unit=16, head=2, unit=32, layer=1)


class Recording(PrunedTransformerLM):
    """Records the prefixes it scores; sleeps ``delay`` seconds per step."""

    def __init__(self, delay: float = 0.0):
        super().__init__(VOCAB, **CONF)
        self.delay = delay
        self.prefixes = []

    def batch_score(self, ys, states, xs):
        self.prefixes.append(ys.clone())
        time.sleep(self.delay)
        return super().batch_score(ys, states, xs)


def test_beam_steps_start_from_sos_and_append_the_fixed_tokens():
    lm = Recording().eval()
    tokens = torch.tensor([[3, 4], [5, 6], [7, 8]])  # (num_steps, beam)
    latency.run_beam_steps(lm, tokens, sos=VOCAB - 1)
    assert [p.shape for p in lm.prefixes] == [(2, 1), (2, 2), (2, 3)]
    assert lm.prefixes[-1].tolist() == [[VOCAB - 1, 3, 5], [VOCAB - 1, 4, 6]]


def test_time_lms_reports_seconds_per_step_and_restores_the_threads():
    torch.manual_seed(0)
    lms = {"fast": Recording(), "slow": Recording(delay=0.02)}
    threads = torch.get_num_threads()
    medians = latency.time_lms(lms, beam_size=3, num_steps=4, repeats=3, num_threads=1)
    assert torch.get_num_threads() == threads
    assert set(medians) == {"fast", "slow"}
    assert 0.02 <= medians["slow"] < 1.0  # per step, not per loop of 4 steps
    assert medians["fast"] < medians["slow"]
    # Both LMs scored the same prefixes: 3 warm-up steps, then 3 rounds of 4 steps.
    assert len(lms["fast"].prefixes) == len(lms["slow"].prefixes) == 3 + 3 * 4
    for first, second in zip(lms["fast"].prefixes, lms["slow"].prefixes):
        assert torch.equal(first, second)
