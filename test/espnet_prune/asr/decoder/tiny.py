"""Tiny decoder configs (2 layers, D=16, 2 heads) and inputs shared by the decoder tests."""

import torch

VOCAB = 11
DECODER_BASE = dict(vocab_size=VOCAB, encoder_output_size=16, attention_heads=2, linear_units=12, num_blocks=2,
                    dropout_rate=0.0, positional_dropout_rate=0.0, use_flash_attn=False)
DECODER_OPTIONS = {"preln": dict(), "postln": dict(normalize_before=False)}


def memory(frames: int = 9, batch: int = 2, seed: int = 2):
    """Encoder output ``(B, T, 16)`` and its lengths ``(B,)`` (the second one shorter)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 16, generator=generator), torch.tensor([frames] + [frames - 3] * (batch - 1))


def tokens(length: int = 5, batch: int = 2, seed: int = 3):
    """Token ids ``(B, L)`` and lengths ``(B,)``."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, VOCAB, (batch, length), generator=generator),
            torch.tensor([length] + [length - 2] * (batch - 1)))


def step_by_step(decoder, ys, encoder_out):
    """Log-probabilities ``(B, L, V)`` of every prefix of ``ys`` ``(B, L)``, decoded one token at a time
    with ``batch_score`` and its per-hypothesis states, as ESPnet's batch beam search calls it."""
    states = [None] * ys.shape[0]
    scores = []
    for step in range(1, ys.shape[1] + 1):
        logp, states = decoder.batch_score(ys[:, :step], states, encoder_out)
        scores.append(logp)
    return torch.stack(scores, dim=1)
