"""The pruned downstream modules as ESPnet choices: built by ``ASRTask.build_model`` from YAML-like
configs, and a model trained with ``encoder: conformer`` / ``decoder: transformer`` loaded through
ESPnet's ``--init_param`` loader."""

import argparse

import torch
from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

from espnet_prune import register
from espnet_prune.asr.decoder.pruned_transformer_decoder import PrunedTransformerDecoder
from espnet_prune.asr.encoder.pruned_conformer_encoder import PrunedConformerEncoder
from test.espnet_prune.asr.decoder.tiny import step_by_step
from test.espnet_prune.asr.encoder.tiny import inputs

ENCODER_CONF = dict(output_size=16, attention_heads=2, linear_units=12, num_blocks=2, cnn_module_kernel=3,
                    macaron_style=True, rel_pos_type="latest", dropout_rate=0.0, use_flash_attn=False)
DECODER_CONF = dict(attention_heads=2, linear_units=12, num_blocks=2, dropout_rate=0.0, use_flash_attn=False)


def build(encoder: str, decoder: str, **extra):
    register()
    from espnet2.tasks.asr import ASRTask

    args = vars(ASRTask.get_parser().parse_args([]))
    args.update(frontend=None, specaug=None, normalize=None, input_size=20, encoder=encoder,
                encoder_conf=dict(ENCODER_CONF, **extra), decoder=decoder, decoder_conf=dict(DECODER_CONF),
                token_list=["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"])
    return ASRTask.build_model(argparse.Namespace(**args)).eval()


def test_init_param_loads_espnet_weights(tmp_path):
    torch.manual_seed(0)
    dense = build("conformer", "transformer")
    torch.save(dense.state_dict(), tmp_path / "dense.pth")
    pruned = build("pruned_conformer", "pruned_transformer")
    assert isinstance(pruned.encoder, PrunedConformerEncoder) and isinstance(pruned.decoder, PrunedTransformerDecoder)
    load_pretrained_model(str(tmp_path / "dense.pth"), pruned, ignore_init_mismatch=False)
    features, lengths = inputs()
    expected, expected_lengths = dense.encode(features, lengths)
    encoded, encoded_lengths = pruned.encode(features, lengths)
    torch.testing.assert_close(encoded, expected)
    assert torch.equal(encoded_lengths, expected_lengths)
    ys = torch.tensor([[5, 2, 3, 4], [5, 4, 4, 2]])
    torch.testing.assert_close(step_by_step(pruned.decoder, ys, encoded), step_by_step(dense.decoder, ys, expected))


def test_pruned_structure_is_a_config_key():
    model = build("pruned_conformer", "pruned_transformer", pruned_structure={"attention_heads": [1, 2]})
    assert model.encoder.pruned_structure["attention_heads"] == [1, 2]
    assert model.encoder.encoders[0].self_attn.linear_q.out_features == 8
