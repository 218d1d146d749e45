"""Physical pruning: the compact encoder computes what the gated one did, and serialises on its own."""

import copy
import io
import json

import pytest
import torch
import yaml

from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import load_compact, prune_encoder, save_compact
from espnet_prune.ssl.units import UNIT_NAMES
from test.espnet_prune.ssl.tiny import tiny_config

ARCHS = {
    "wav2vec2_post_ln": dict(model_type="wav2vec2"),
    "wav2vec2_pre_ln": dict(model_type="wav2vec2", layer_norm_first=True),
    "hubert": dict(model_type="hubert"),
    "wavlm_post_ln": dict(model_type="wavlm"),
    "wavlm_pre_ln": dict(model_type="wavlm", layer_norm_first=True),
}
LENGTHS = torch.tensor([4000, 3300, 2600])
TOLERANCE = 1e-4


def make_model(arch: str, seed: int = 0) -> SSLEncoder:
    """A tiny eval-mode encoder whose every parameter (LayerNorm affines included) is random."""
    torch.manual_seed(seed)
    model = SSLEncoder(tiny_config(**ARCHS[arch])).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model


def make_waveforms(seed: int = 0) -> torch.Tensor:
    """``(3, 4000)`` zero-padded batch of unequal lengths ``LENGTHS``."""
    generator = torch.Generator().manual_seed(seed)
    waveforms = torch.randn(len(LENGTHS), int(LENGTHS.max()), generator=generator)
    valid = torch.arange(waveforms.shape[1])[None, :] < LENGTHS[:, None]
    return waveforms * valid


def vector_mask(size: int, generator: torch.Generator) -> torch.Tensor:
    """Mix of exact zeros, soft values in (0, 1) and ones; at least one zero and one non-zero if size > 1."""
    values = torch.rand(size, generator=generator) * 0.9 + 0.05
    draw = torch.rand(size, generator=generator)
    values[draw < 0.3] = 0.0
    values[draw > 0.85] = 1.0
    if size > 1:
        order = torch.randperm(size, generator=generator)
        values[order[0]] = 0.0
        values[order[1]] = max(float(values[order[1]]), 0.5)
    return values


def scalar_mask(generator: torch.Generator) -> torch.Tensor:
    """0, a soft value or 1, with equal chance."""
    choice = int(torch.randint(3, (), generator=generator))
    return torch.tensor([0.0, 0.3 + 0.6 * float(torch.rand((), generator=generator)), 1.0][choice])


def random_masks(config: EncoderConfig, seed: int, units=UNIT_NAMES) -> dict:
    """Random masks for ``units``, sized by ``config`` (zero-width layers get empty masks)."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    if "conv" in units:
        masks["conv"] = [vector_mask(channels, generator) for channels in config.conv_channels]
    if "head" in units:
        masks["head"] = [vector_mask(heads, generator) for heads in config.num_heads]
    if "attn_layer" in units:
        masks["attn_layer"] = torch.stack([scalar_mask(generator) for _ in range(config.num_layers)])
    if "interm" in units:
        masks["interm"] = [vector_mask(width, generator) for width in config.ffn_dims]
    if "ffn_layer" in units:
        masks["ffn_layer"] = [scalar_mask(generator) for _ in range(config.num_layers)]
    return masks


def run(model: SSLEncoder, waveforms: torch.Tensor, masks=None):
    with torch.no_grad():
        return model(waveforms, LENGTHS, masks=masks)


def max_valid_diff(expected, actual) -> float:
    """Largest absolute difference between two encoder outputs over valid frames of every hidden state."""
    (expected_states, expected_lengths), (actual_states, actual_lengths) = expected, actual
    assert torch.equal(expected_lengths, actual_lengths)
    assert len(expected_states) == len(actual_states)
    valid = torch.arange(expected_states[0].shape[1])[None, :] < expected_lengths[:, None]
    diffs = [(e - a).abs()[valid].max().item() for e, a in zip(expected_states, actual_states)]
    return max(diffs)


def num_parameters(model: SSLEncoder) -> int:
    return sum(p.numel() for p in model.parameters())


def nonzero(mask) -> int:
    return int(torch.count_nonzero(torch.as_tensor(mask)))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_matches_gated_all_units(arch, seed):
    model = make_model(arch, seed)
    masks = random_masks(model.config, seed)
    waveforms = make_waveforms(seed)
    compact = prune_encoder(model, masks)
    assert max_valid_diff(run(model, waveforms, masks), run(compact, waveforms)) <= TOLERANCE
    assert num_parameters(compact) < num_parameters(model)


@pytest.mark.parametrize("arch", ["wav2vec2_pre_ln", "wavlm_post_ln"])
@pytest.mark.parametrize("units", [("conv",), ("head",), ("head", "attn_layer"), ("interm", "ffn_layer"),
                                   ("conv", "head", "interm")])
def test_compact_matches_gated_unit_subsets(arch, units):
    model = make_model(arch, seed=3)
    masks = random_masks(model.config, seed=3, units=units)
    waveforms = make_waveforms(3)
    compact = prune_encoder(model, masks)
    assert max_valid_diff(run(model, waveforms, masks), run(compact, waveforms)) <= TOLERANCE
    if "conv" not in units:
        assert compact.config.conv_layers == model.config.conv_layers
    if not {"head", "attn_layer"} & set(units):
        assert compact.config.num_heads == model.config.num_heads


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_follow_masks(arch):
    model = make_model(arch)
    config = model.config
    masks = random_masks(config, seed=4)
    masks["attn_layer"] = torch.tensor([0.5, 0.0])
    masks["ffn_layer"] = [torch.tensor(0.0), torch.tensor(1.0)]
    compact = prune_encoder(model, masks)
    new = compact.config
    channels = [nonzero(m) for m in masks["conv"]]
    assert new.conv_channels == channels
    assert [layer[1:] for layer in new.conv_layers] == [layer[1:] for layer in config.conv_layers]
    for i, block in enumerate(compact.feature_extractor.conv_layers):
        assert block.conv.weight.shape == (channels[i], 1 if i == 0 else channels[i - 1], config.conv_layers[i][1])
    projection = compact.encoder.feature_projection
    assert projection.layer_norm.weight.shape == (channels[-1],)
    assert projection.projection.weight.shape == (config.embed_dim, channels[-1])

    heads = nonzero(masks["head"][0])
    assert new.use_attention == [True, False] and new.num_heads == [heads, 0]
    first, second = compact.encoder.transformer.layers
    assert first.attention.q_proj.weight.shape == (heads * config.head_dim, config.embed_dim)
    assert first.attention.out_proj.weight.shape == (config.embed_dim, heads * config.head_dim)
    assert second.attention is None
    assert (second.layer_norm is None) == config.layer_norm_first
    units = nonzero(masks["interm"][1])
    assert new.use_ffn == [False, True] and new.ffn_dims == [0, units]
    assert first.feed_forward is None
    assert second.feed_forward.intermediate_dense.weight.shape == (units, config.embed_dim)
    assert second.feed_forward.output_dense.weight.shape == (config.embed_dim, units)
    if config.model_type == "wavlm":
        kept = masks["head"][0].nonzero().squeeze(1).tolist()
        assert new.kept_heads == [kept, []]
        assert first.attention.gru_rel_pos_const.shape == (1, heads, 1, 1)
        assert compact.encoder.transformer.position_bias.rel_attn_embed.weight.shape == (
            config.num_buckets, max(kept) + 1)
    else:
        assert new.kept_heads is None

    expected_removed = (
        sum(b.conv.weight.numel() for b in model.feature_extractor.conv_layers)
        - sum(b.conv.weight.numel() for b in compact.feature_extractor.conv_layers)
    )
    assert num_parameters(model) - num_parameters(compact) > expected_removed > 0


@pytest.mark.parametrize("arch", ["wav2vec2_post_ln", "wavlm_pre_ln"])
def test_gated_model_untouched(arch):
    model = make_model(arch)
    before = copy.deepcopy(model.state_dict())
    config_before = model.config.to_dict()
    compact = prune_encoder(model, random_masks(model.config, seed=5))
    assert model.config.to_dict() == config_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    compact_storages = {p.data_ptr() for p in compact.parameters()}
    assert not compact_storages & {p.data_ptr() for p in model.parameters()}


@pytest.mark.parametrize("arch", ["wav2vec2_post_ln", "wavlm_pre_ln"])
def test_zero_heads_and_zero_ffn_units_keep_their_sublayers(arch):
    model = make_model(arch)
    masks = random_masks(model.config, seed=6)
    masks["head"][0] = torch.zeros(model.config.num_heads[0])
    masks["attn_layer"] = torch.tensor([0.8, 1.0])
    masks["interm"][1] = torch.zeros(model.config.ffn_dims[1])
    masks["ffn_layer"] = torch.tensor([1.0, 0.6])
    waveforms = make_waveforms(6)
    compact = prune_encoder(model, masks)
    assert compact.config.num_heads[0] == 0 and compact.config.use_attention[0]
    assert compact.config.ffn_dims[1] == 0 and compact.config.use_ffn[1]
    assert max_valid_diff(run(model, waveforms, masks), run(compact, waveforms)) <= TOLERANCE


@pytest.mark.parametrize("arch", ARCHS)
def test_second_round_of_pruning(arch):
    model = make_model(arch, seed=7)
    waveforms = make_waveforms(7)
    first_masks = random_masks(model.config, seed=7)
    first_masks["attn_layer"] = torch.tensor([1.0, 0.9])  # keep heads to prune again
    compact = prune_encoder(model, first_masks)
    second_masks = random_masks(compact.config, seed=8)
    second_masks["attn_layer"] = torch.tensor([0.7, 1.0])
    twice = prune_encoder(compact, second_masks)
    assert max_valid_diff(run(compact, waveforms, second_masks), run(twice, waveforms)) <= TOLERANCE
    assert num_parameters(twice) < num_parameters(compact)
    if model.config.model_type == "wavlm":
        for layer in range(model.config.num_layers):
            first_kept = first_masks["head"][layer].nonzero().squeeze(1).tolist()
            second_kept = second_masks["head"][layer].nonzero().squeeze(1).tolist()
            assert twice.config.kept_heads[layer] == [first_kept[h] for h in second_kept]


@pytest.mark.parametrize("arch", ARCHS)
def test_serialisation_round_trip(arch, tmp_path):
    model = make_model(arch, seed=9)
    waveforms = make_waveforms(9)
    compact = prune_encoder(model, random_masks(model.config, seed=9))
    expected = run(compact, waveforms)
    config_dict = compact.config.to_dict()
    assert EncoderConfig.from_dict(json.loads(json.dumps(config_dict))) == compact.config
    assert EncoderConfig.from_dict(yaml.safe_load(yaml.safe_dump(config_dict))) == compact.config

    path = tmp_path / "compact.pth"
    save_compact(compact, path)
    del model
    from_file = load_compact(path)
    assert not from_file.training
    assert from_file.config == compact.config
    assert max_valid_diff(expected, run(from_file, waveforms)) == 0.0

    plain = {"config": yaml.safe_load(yaml.safe_dump(config_dict)), "state_dict": compact.state_dict()}
    assert max_valid_diff(expected, run(load_compact(plain), waveforms)) == 0.0

    buffer = io.BytesIO()
    save_compact(compact, buffer)
    buffer.seek(0)
    assert max_valid_diff(expected, run(load_compact(buffer), waveforms)) == 0.0


def test_positional_conv_copied_with_weight_norm():
    model = make_model("wav2vec2_post_ln")
    compact = prune_encoder(model, random_masks(model.config, seed=10))
    original = model.encoder.transformer.pos_conv_embed.conv
    pruned = compact.encoder.transformer.pos_conv_embed.conv
    assert torch.equal(original.parametrizations.weight.original0, pruned.parametrizations.weight.original0)
    assert torch.equal(original.parametrizations.weight.original1, pruned.parametrizations.weight.original1)
    assert torch.equal(original.weight, pruned.weight)


def test_keeps_dtype_and_mode():
    model = make_model("wavlm_post_ln").double()
    masks = random_masks(model.config, seed=11)
    assert not prune_encoder(model, masks).training
    compact = prune_encoder(model.train(), masks)
    assert compact.training
    assert all(p.dtype == torch.float64 for p in compact.parameters())
    waveforms = make_waveforms(11).double()
    assert max_valid_diff(run(model.eval(), waveforms, masks), run(compact.eval(), waveforms)) <= 1e-10


def _bad_masks(config: EncoderConfig, case: str) -> dict:
    masks = random_masks(config, seed=12)
    if case == "unknown_key":
        masks["neurons"] = masks.pop("interm")
    elif case == "conv_all_zero":
        masks["conv"][3] = torch.zeros(config.conv_channels[3])
    elif case == "conv_count":
        masks["conv"] = masks["conv"][:-1]
    elif case == "head_count":
        masks["head"] = masks["head"][:1]
    elif case == "head_shape":
        masks["head"][1] = torch.ones(config.num_heads[1] + 1)
        masks["attn_layer"] = torch.ones(config.num_layers)
    elif case == "interm_shape":
        masks["interm"][0] = torch.ones(2, config.ffn_dims[0])
        masks["ffn_layer"] = torch.ones(config.num_layers)
    elif case == "ffn_layer_not_scalar":
        masks["ffn_layer"] = [torch.ones(2), torch.ones(2)]
    elif case == "conv_shape":
        masks["conv"][6] = torch.ones(config.conv_channels[6] - 1)
    elif case == "value_out_of_range":
        masks["interm"][1] = torch.full((config.ffn_dims[1],), 1.5)
        masks["ffn_layer"] = torch.ones(config.num_layers)
    return masks


@pytest.mark.parametrize("case, message", [
    ("unknown_key", r"Unknown mask keys \['neurons'\]"),
    ("conv_all_zero", r"'conv' mask of CNN layer 3 is zero for every channel"),
    ("conv_count", r"'conv' masks have 6 entries but the encoder has 7 CNN layers"),
    ("conv_shape", r"'conv' mask of CNN layer 6 has shape \(31,\), expected \(32,\)"),
    ("head_count", r"'head' masks have 1 entries but the encoder has 2 Transformer layers"),
    ("head_shape", r"'head' mask of layer 1 has shape \(5,\), expected \(4,\)"),
    ("interm_shape", r"'interm' mask of layer 0 has shape \(2, 64\), expected \(64,\)"),
    ("ffn_layer_not_scalar", r"'ffn_layer' mask of layer 0 must be a scalar"),
    ("value_out_of_range", r"'interm' mask of layer 1 must hold values in \[0, 1\], got values from 1.5 to 1.5"),
])
def test_bad_masks_raise(case, message):
    model = make_model("wavlm_post_ln")
    with pytest.raises(ValueError, match=message):
        prune_encoder(model, _bad_masks(model.config, case))


def test_load_compact_rejects_other_objects():
    with pytest.raises(ValueError, match="exactly the keys 'config' and 'state_dict'"):
        load_compact({"model": {}})
    model = make_model("hubert")
    saved = {"config": model.config.to_dict(), "state_dict": dict(model.state_dict())}
    saved["state_dict"].pop("encoder.feature_projection.projection.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_compact(saved)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_layers", [0, 1])
def test_keep_first_layers_computes_the_same_hidden_states_and_costs_less(arch, num_layers):
    from espnet_prune.ssl import cost
    from espnet_prune.ssl.prune import keep_first_layers

    model = make_model(arch)
    waveforms = make_waveforms()
    states, lengths = run(model, waveforms)
    cut = keep_first_layers(model, num_layers)
    cut_states, cut_lengths = run(cut, waveforms)
    assert cut.config.num_layers == num_layers == len(cut_states) - 1
    assert torch.equal(lengths, cut_lengths)
    # Hidden states 0..k are those of the full model (a pre-LN model's final LayerNorm is gone).
    assert max_valid_diff((states[:num_layers + 1], lengths), (cut_states, cut_lengths)) == 0.0
    assert cut.config.final_layer_norm == (not model.config.layer_norm_first)
    assert cost.count_params(cut.config)["total"] == num_parameters(cut) < num_parameters(model)
    assert cost.count_macs(cut.config, 1.0)["transformer"] < cost.count_macs(model.config, 1.0)["transformer"]
    # The cut structure serialises and rebuilds like any other.
    assert EncoderConfig.from_dict(json.loads(json.dumps(cut.config.to_dict()))) == cut.config
    assert keep_first_layers(model, model.config.num_layers) is model
    with pytest.raises(ValueError, match="num_layers=3"):
        keep_first_layers(model, 3)
