"""The one description of the pruning units drives the encoder, the cost model, the controller
and physical pruning alike."""

import pytest
import torch

from espnet_prune.pruning.controller import PruningController
from espnet_prune.ssl import cost
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder
from espnet_prune.ssl.units import SUBLAYERS, UNIT_BY_NAME, UNIT_NAMES, UNITS
from test.espnet_prune.ssl.tiny import tiny_config


def pruned_config():
    """Two layers: layer 0 lost its FFN, layer 1 its attention; uneven widths."""
    return tiny_config(num_heads=[3, 4], head_dim=8, ffn_dims=[64, 40], use_attention=[True, False],
                       use_ffn=[False, True])


def test_unit_names_are_the_keys_of_masks_counts_and_gates():
    config = pruned_config()
    assert UNIT_NAMES == ("conv", "head", "attn_layer", "interm", "ffn_layer")
    assert tuple(cost.structure_counts(config)) == UNIT_NAMES
    controller = PruningController(config, units=list(UNIT_NAMES), target=0.5, warmup_steps=0)
    masks = controller.eval()()
    # Scalar units with no remaining layer get no gate (and no masks); every other unit does.
    assert set(masks) == set(controller.gates) == set(UNIT_NAMES)
    for unit in UNITS:
        assert len(masks[unit.name]) == unit.num_layers(config)
        for layer, mask in enumerate(masks[unit.name]):
            assert tuple(mask.shape) == unit.mask_shape(config, layer), (unit.name, layer)
    # Each sublayer's two units agree on where it exists.
    for sub in SUBLAYERS:
        assert UNIT_BY_NAME[sub.width_unit].present == UNIT_BY_NAME[sub.layer_unit].present
    assert UNIT_BY_NAME["head"].gated_layers(config) == [0] and UNIT_BY_NAME["interm"].gated_layers(config) == [1]
    assert UNIT_BY_NAME["attn_layer"].exact_counts(config) == [1, 0]


def test_masks_shaped_by_the_units_prune_to_the_counted_structure():
    torch.manual_seed(0)
    config = pruned_config()
    model = SSLEncoder(config).eval()
    masks = {unit.name: [torch.ones(unit.mask_shape(config, layer)) for layer in range(unit.num_layers(config))]
             for unit in UNITS}
    masks["conv"][2][:5] = 0.0
    masks["head"][0][1] = 0.0
    masks["interm"][1][:7] = 0.0
    compact = prune_encoder(model, masks)
    counted = {name: list(values) for name, values in cost.structure_counts(config).items()}
    counted["conv"][2] -= 5
    counted["head"][0] -= 1
    counted["interm"][1] -= 7
    got = cost.structure_counts(compact.config)
    for name in ("conv", "attn_layer", "ffn_layer"):
        assert got[name] == counted[name]
    # Widths of removed sublayers drop to 0 in the compact config.
    assert got["head"] == [2, 0] and got["interm"] == [0, 33]
    assert cost.count_params(compact.config)["total"] == sum(p.numel() for p in compact.parameters())


@pytest.mark.parametrize("model_type, bias", [("wav2vec2", False), ("hubert", False), ("wavlm", True)])
def test_the_architecture_difference_is_one_property(model_type, bias):
    config = tiny_config(model_type)
    assert config.relative_position_bias is bias
    assert config.gated_position_bias is (bias and config.gru_rel_pos)
    assert config.position_bias_table is bias
    assert not tiny_config(model_type, num_layers=0).position_bias_table
    model = SSLEncoder(config)
    assert (model.encoder.transformer.position_bias is not None) is bias
    assert cost.count_params(config)["total"] == sum(p.numel() for p in model.parameters())
