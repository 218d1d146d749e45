import random
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from espnet_prune.layers.hard_concrete import HardConcreteGate
from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.cost import (
    COST_PARTS,
    attention_product_macs,
    count_macs,
    count_params,
    describe_cost,
    format_cost,
    frames_for,
    structure_counts,
)
from espnet_prune.ssl.model import SSLEncoder
from test.espnet_prune.ssl.tiny import tiny_config

MODEL_VARIANTS = [  # (model_type, layer_norm_first, extractor_mode)
    ("wav2vec2", False, "group_norm"),
    ("wav2vec2", True, "layer_norm"),
    ("hubert", False, "layer_norm"),
    ("hubert", True, "group_norm"),
    ("wavlm", False, "group_norm"),
    ("wavlm", True, "layer_norm"),
]
ORIGINAL_HEADS = 4
HEAD_DIM = 8


def num_params(config: EncoderConfig) -> int:
    return sum(p.numel() for p in SSLEncoder(config).parameters())


def random_pruned_config(seed: int, model_type: str, layer_norm_first: bool, extractor_mode: str) -> EncoderConfig:
    """A tiny config with random per-layer widths, removed sublayers and conv channels.

    Layer 0 always keeps at least one head in its attention sublayer, so the attention
    products are never all zero.
    """
    rng = random.Random(seed)
    num_layers = 4
    heads = [rng.randint(0, ORIGINAL_HEADS) for _ in range(num_layers)]
    heads[0] = max(heads[0], 1)
    use_attention = [rng.random() < 0.75 for _ in range(num_layers)]
    use_attention[0] = True
    kept_heads = None
    if model_type == "wavlm":
        kept_heads = [sorted(rng.sample(range(ORIGINAL_HEADS), h)) for h in heads]
    base = tiny_config(model_type, layer_norm_first=layer_norm_first, extractor_mode=extractor_mode)
    return base.replace(
        conv_layers=[[rng.randint(1, 32), kernel, stride] for _, kernel, stride in base.conv_layers],
        conv_bias=rng.random() < 0.5,
        num_layers=num_layers,
        num_heads=heads,
        head_dim=HEAD_DIM,
        kept_heads=kept_heads,
        ffn_dims=[rng.choice([0, rng.randint(1, 64)]) for _ in range(num_layers)],
        use_attention=use_attention,
        use_ffn=[rng.random() < 0.75 for _ in range(num_layers)],
        pos_conv_kernel=rng.choice([8, 15, 16]),
        gru_rel_pos=rng.random() < 0.8,
    )


def explicit_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """Scaled dot-product attention written with matmuls, which FlopCounterMode counts on CPU."""
    assert dropout_p == 0.0 and not is_causal and not enable_gqa
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if attn_mask is not None:
        scores = scores + attn_mask
    return scores.softmax(dim=-1) @ value


def measured_macs(model: SSLEncoder, waveform: torch.Tensor) -> Dict[str, int]:
    """MACs (FLOPs / 2) per cost part, and the attention products (``bmm``), as FlopCounterMode sees them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(waveform)
    flops = counter.get_flop_counts()

    def macs(module_name: str) -> int:
        return sum(flops.get(module_name, {}).values()) // 2

    pos_conv = macs("SSLEncoder.encoder.transformer.pos_conv_embed")
    return {
        "cnn": macs("SSLEncoder.feature_extractor"),
        "pos_conv": pos_conv,
        "transformer": (macs("SSLEncoder.encoder.feature_projection") + macs("SSLEncoder.encoder.transformer")
                        - pos_conv),
        "total": macs("SSLEncoder"),
        "attention_products": flops["Global"].get(torch.ops.aten.bmm, 0) // 2,
    }


@pytest.mark.parametrize("model_type, layer_norm_first, extractor_mode", MODEL_VARIANTS)
def test_exact_params_of_dense_tiny_configs(model_type, layer_norm_first, extractor_mode):
    config = tiny_config(model_type, layer_norm_first=layer_norm_first, extractor_mode=extractor_mode)
    model = SSLEncoder(config)
    params = count_params(config)
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert params["cnn"] == sum(p.numel() for p in model.feature_extractor.parameters())
    assert params["pos_conv"] == sum(p.numel() for p in model.encoder.transformer.pos_conv_embed.parameters())
    assert params["total"] == params["cnn"] + params["pos_conv"] + params["transformer"]


@pytest.mark.parametrize("model_type, layer_norm_first, extractor_mode", MODEL_VARIANTS)
@pytest.mark.parametrize("seed", range(8))
def test_exact_params_of_random_pruned_structures(model_type, layer_norm_first, extractor_mode, seed):
    config = random_pruned_config(seed, model_type, layer_norm_first, extractor_mode)
    assert count_params(config)["total"] == num_params(config), config


def test_exact_params_of_extreme_structures():
    """Attention without heads keeps out_proj's bias, FFN without units keeps its output bias."""
    for model_type, layer_norm_first, extractor_mode in MODEL_VARIANTS:
        base = tiny_config(model_type, layer_norm_first=layer_norm_first, extractor_mode=extractor_mode)
        empty = base.replace(num_heads=[0, 0], head_dim=HEAD_DIM, kept_heads=None, ffn_dims=[0, 0])
        removed = base.replace(use_attention=[False, False], use_ffn=[False, False])
        for config in (empty, removed):
            assert count_params(config)["total"] == num_params(config)


@pytest.mark.parametrize("model_type, layer_norm_first, extractor_mode", MODEL_VARIANTS)
@pytest.mark.parametrize("seed", range(3))
def test_exact_macs_match_flop_counter(model_type, layer_norm_first, extractor_mode, seed, monkeypatch):
    config = random_pruned_config(100 + seed, model_type, layer_norm_first, extractor_mode)
    model = SSLEncoder(config).eval()
    seconds = 0.4
    waveform = torch.randn(1, round(seconds * config.sample_rate))
    with torch.no_grad():
        reference = model(waveform)[0][-1]
    monkeypatch.setattr(F, "scaled_dot_product_attention", explicit_attention)
    measured = measured_macs(model, waveform)
    with torch.no_grad():  # the stand-in computes what the fused kernel computes
        torch.testing.assert_close(model(waveform)[0][-1], reference, atol=1e-4, rtol=1e-4)

    expected = count_macs(config, seconds)
    for part in COST_PARTS:
        assert expected[part] == pytest.approx(measured[part], rel=0.01), part
    products = attention_product_macs(config, seconds)
    assert products > 0
    assert measured["attention_products"] == products


def test_wav2vec2_base_sanity_anchor(monkeypatch):
    """About 7 GMACs per second before the T^2 term: CNN 2.4 G, positional conv 0.24 G, Transformer 4.2 G."""
    config = get_config("wav2vec2_base")
    macs = count_macs(config, 1.0)
    products = attention_product_macs(config, 1.0)
    assert frames_for(config, 1.0) == 49
    assert products == 2 * 49 * 49 * 768 * 12
    assert macs["cnn"] / 1e9 == pytest.approx(2.4, abs=0.1)
    assert macs["pos_conv"] / 1e9 == pytest.approx(0.24, abs=0.01)
    assert 4.15 <= (macs["transformer"] - products) / 1e9 <= 4.3
    assert (macs["total"] - products) / 1e9 == pytest.approx(7.0, abs=0.15)
    assert count_params(config)["total"] == pytest.approx(94.4e6, rel=1e-3)

    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = SSLEncoder(config).eval()
    assert count_params(config)["total"] == sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(F, "scaled_dot_product_attention", explicit_attention)
    measured = measured_macs(model, torch.zeros(1, config.sample_rate, device="meta"))
    for part in COST_PARTS:
        assert macs[part] == pytest.approx(measured[part], rel=0.01), part
    assert measured["attention_products"] == products


def test_expected_cost_with_certain_gates_equals_exact():
    config = random_pruned_config(7, "wavlm", False, "group_norm")
    exact = structure_counts(config)
    ones = {key: [torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in values]
            for key, values in exact.items()}
    # Expected counts as the controller forms them: sums of keep probabilities that are all 1.
    ones["head"] = [torch.ones(h, dtype=torch.float64).sum() for h in config.num_heads]
    expected_params = count_params(config, ones)
    expected_macs = count_macs(config, 0.5, ones)
    exact_params, exact_macs = count_params(config), count_macs(config, 0.5)
    for part in ("cnn", "transformer", "total"):  # pos_conv depends on no unit count
        assert isinstance(expected_params[part], torch.Tensor) and isinstance(expected_macs[part], torch.Tensor)
    for part in COST_PARTS:
        assert float(expected_params[part]) == pytest.approx(exact_params[part], rel=1e-12)
        assert float(expected_macs[part]) == pytest.approx(exact_macs[part], rel=1e-12)


def test_partial_counts_take_the_rest_from_the_config():
    config = random_pruned_config(3, "hubert", True, "layer_norm")
    heads = [torch.tensor(float(h)) for h in config.num_heads]
    partial = count_macs(config, 1.0, {"head": heads})
    assert partial["total"].item() == pytest.approx(count_macs(config, 1.0)["total"], rel=1e-6)
    assert partial["cnn"] == count_macs(config, 1.0)["cnn"]  # untouched parts stay exact numbers


def _gates(config: EncoderConfig) -> Dict[str, list]:
    return {
        "conv": [HardConcreteGate(c) for c in config.conv_channels],
        "head": [HardConcreteGate(h) for h in config.num_heads],
        "attn_layer": [HardConcreteGate(1) for _ in range(config.num_layers)],
        "interm": [HardConcreteGate(f) for f in config.ffn_dims],
        "ffn_layer": [HardConcreteGate(1) for _ in range(config.num_layers)],
    }


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_gradients_reach_every_gate(model_type):
    torch.manual_seed(0)
    config = tiny_config(model_type)
    gates = _gates(config)
    counts = {key: [gate.expected_kept() for gate in layer_gates] for key, layer_gates in gates.items()}
    macs, params = count_macs(config, 1.0, counts), count_params(config, counts)
    assert 0 < macs["total"].item() < count_macs(config, 1.0)["total"]
    (macs["total"] / count_macs(config, 1.0)["total"] + params["total"] / count_params(config)["total"]).backward()
    for key, layer_gates in gates.items():
        for gate in layer_gates:
            assert gate.log_alpha.grad is not None, key
            assert (gate.log_alpha.grad > 0).all(), key  # keeping more of any unit costs more


def test_expected_cost_is_the_mean_cost_of_sampled_structures():
    """The polynomial is the expectation under independent gates (checked by Monte Carlo)."""
    config = tiny_config("wavlm", num_layers=3)
    rng = torch.Generator().manual_seed(0)
    probs = {
        "conv": [torch.rand(c, generator=rng, dtype=torch.float64) for c in config.conv_channels],
        "head": [torch.rand(h, generator=rng, dtype=torch.float64) for h in config.num_heads],
        "attn_layer": [torch.rand(1, generator=rng, dtype=torch.float64) for _ in range(config.num_layers)],
        "interm": [torch.rand(f, generator=rng, dtype=torch.float64) for f in config.ffn_dims],
        "ffn_layer": [torch.rand(1, generator=rng, dtype=torch.float64) for _ in range(config.num_layers)],
    }
    expected = {key: [p.sum() for p in layer_probs] for key, layer_probs in probs.items()}
    samples = 4000
    sampled = {key: torch.stack([torch.bernoulli(p.expand(samples, -1), generator=rng).sum(1) for p in layer_probs],
                                dim=1).long().tolist()
               for key, layer_probs in probs.items()}  # key -> samples x layers unit counts
    structures = [{key: sampled[key][s] for key in sampled} for s in range(samples)]
    mean_params = sum(count_params(config, counts)["total"] for counts in structures) / samples
    mean_macs = sum(count_macs(config, 1.0, counts)["total"] for counts in structures) / samples
    assert count_params(config, expected)["total"].item() == pytest.approx(mean_params, rel=0.01)
    assert count_macs(config, 1.0, expected)["total"].item() == pytest.approx(mean_macs, rel=0.01)


def test_fewer_heads_cost_less():
    config = get_config("wavlm_base")
    heads = torch.full((config.num_layers,), 12.0, requires_grad=True)
    full = count_macs(config, 2.0, {"head": heads})["total"]
    full.backward()
    assert (heads.grad > 0).all()
    previous = full.item()
    for kept in (11.5, 8.0, 4.0, 0.0):
        fewer = count_macs(config, 2.0, {"head": torch.full((config.num_layers,), kept)})["total"].item()
        assert fewer < previous
        previous = fewer
    assert count_macs(config, 2.0, {"head": [12] * 11 + [11]})["total"] < count_macs(config, 2.0)["total"]


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_frames_for_matches_the_model(model_type):
    config = tiny_config(model_type)
    model = SSLEncoder(config).eval()
    for seconds in (0.025, 0.1, 0.3337, 1.0):
        samples = round(seconds * config.sample_rate)
        with torch.no_grad():
            hidden_states, frame_lengths = model(torch.randn(1, samples), torch.tensor([samples]))
        assert frames_for(config, seconds) == hidden_states[-1].shape[1] == frame_lengths.item()
    assert frames_for(get_config("wav2vec2_base"), 10.0) == 499


def test_bad_input_is_rejected_with_a_clear_message():
    config = tiny_config()
    with pytest.raises(ValueError, match="receptive field"):
        frames_for(config, 0.001)
    with pytest.raises(ValueError, match="positive"):
        count_macs(config, 0.0)
    with pytest.raises(ValueError, match="Unknown unit count keys"):
        count_params(config, {"heads": [4, 4]})  # the mask key is "head"
    with pytest.raises(ValueError, match=r"counts\['interm'\] has 3 entries but the config has 2"):
        count_params(config, {"interm": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"must be a scalar count.*shape \(4,\)"):
        count_macs(config, 1.0, {"head": [torch.ones(4), torch.ones(4)]})
    with pytest.raises(ValueError, match="missing"):
        describe_cost({"cnn": 1}, count_macs(config, 1.0))


def test_describe_cost_table():
    config = get_config("wav2vec2_base")
    table = describe_cost(count_params(config), count_macs(config, 1.0))
    lines = table.splitlines()
    assert len(lines) == 1 + len(COST_PARTS)
    assert lines[1].split() == ["cnn", "4.20", "M", "params", "2.45", "GMACs"]
    assert lines[-1].split()[:2] == ["total", "94.37"]
    params = {k: torch.tensor(float(v)) for k, v in count_params(config).items()}
    assert describe_cost(params, count_macs(config, 1.0)) == table  # tensors print like numbers


def test_format_cost_is_the_one_formatter_of_cost_numbers():
    assert format_cost(94_370_000) == "94.37M"
    assert format_cost(torch.tensor(2.45e9)) == "2.45G"
    assert format_cost(1500) == "1.50k" and format_cost(999) == "999"
    assert format_cost(4.2e6, "M", 8, " ") == "    4.20 M"
    assert format_cost(2e6, "G") == "0.00G"
    with pytest.raises(ValueError, match="Unknown prefix"):
        format_cost(1.0, "T")
