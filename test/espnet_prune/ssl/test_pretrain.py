"""HuBERT-style pretraining: frame alignment of the targets, k-means, masking, learning, determinism."""

import numpy as np
import pytest
import torch

from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.pretrain import ClusterTargets, MfccFrames, PretrainSettings, kmeans, pretrain, span_mask
from test.espnet_prune.ssl.tiny import tiny_config


def tone_sequences(count, seed=0, sample_rate=16000):
    """Waveforms made of 80-ms tones from a small set of pitches: frame labels are predictable from context."""
    rng = np.random.default_rng(seed)
    waves = []
    for _ in range(count):
        pitches = rng.choice([220.0, 440.0, 880.0, 1760.0], size=int(rng.integers(8, 14)))
        t = np.arange(int(0.08 * sample_rate)) / sample_rate
        wave = np.concatenate([np.sin(2 * np.pi * f * t) for f in pitches])
        waves.append((0.5 * wave + 0.01 * rng.standard_normal(wave.shape)).astype(np.float32))
    return waves


@pytest.mark.parametrize("samples", [400, 719, 720, 16000, 16321])
def test_targets_have_the_cnns_frame_count(samples):
    config = tiny_config()
    waveform = torch.randn(samples)
    _, frame_lengths = SSLEncoder(config)(waveform[None], torch.tensor([samples]))
    frames = MfccFrames(config)(waveform)
    assert frames.shape == (int(frame_lengths), 39)


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centre + 0.1 * torch.randn(50, 2, generator=generator) for centre in centres])
    found = kmeans(points, 3, seed=1)
    assert torch.cdist(found, centres).min(0).values.max() < 0.1
    targets = ClusterTargets.fit([points], 3)
    labels = targets(points)
    assert [len(set(labels[i * 50:(i + 1) * 50].tolist())) for i in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 4 frames"):
        kmeans(points[:3], 4)


def test_span_mask_covers_about_mask_prob_and_never_padding():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([200, 120, 3])
    mask = span_mask(lengths, 200, mask_prob=0.5, span=5, generator=generator)
    assert not mask[1, 120:].any() and not mask[2, 3:].any()
    assert mask[2].any()  # even an utterance shorter than a span gets one
    fraction = mask[0].float().mean().item()
    assert 0.25 < fraction < 0.5  # overlapping spans: a little below mask_prob


def test_pretraining_learns_and_is_deterministic():
    config = tiny_config()
    waves = tone_sequences(16)
    settings = PretrainSettings(steps=40, batch_size=4, num_clusters=8, lr=2e-3, log_every=10, mask_span=3)
    encoder, record = pretrain(config, waves, settings, log=lambda line: None)
    curve = [point["loss"] for point in record["curve"]]
    assert len(curve) == 4 and curve[-1] < curve[0] - 0.3
    assert curve[-1] < record["chance_loss"]
    assert not encoder.training
    again, _ = pretrain(config, waves, settings, log=lambda line: None)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_bad_input_is_named():
    config = tiny_config()
    with pytest.raises(ValueError, match="shorter than the CNN's receptive field of 400 samples"):
        pretrain(config, [np.zeros(16000, np.float32)] * 4 + [np.zeros(100, np.float32)],
                 PretrainSettings(batch_size=2), log=lambda line: None)
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        pretrain(config, [np.zeros(16000, np.float32)] * 3, PretrainSettings(), log=lambda line: None)
    with pytest.raises(ValueError, match="mask_prob must be in"):
        PretrainSettings(mask_prob=1.5)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        PretrainSettings(steps=0)
