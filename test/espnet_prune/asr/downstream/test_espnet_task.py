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


def test_beam_search_decodes_the_same_after_pruning():
    """ESPnet's ``BatchBeamSearch`` (what ``Speech2Text`` runs) over the masked model and over the
    compact one (encoder and decoder physically pruned) finds the same hypotheses and scores."""
    from espnet.nets.batch_beam_search import BatchBeamSearch

    from espnet_prune.asr.downstream.prune import prune_downstream
    from test.espnet_prune.asr.encoder.tiny import random_masks

    torch.manual_seed(0)
    model = build("pruned_conformer", "pruned_transformer")
    masks = {part: random_masks(module.units(), module.structure, seed=seed, zero_fraction=0.3)
             for seed, (part, module) in enumerate((("encoder", model.encoder), ("decoder", model.decoder)))}
    masks["encoder"]["attn_layer"] = [torch.tensor(0.8), torch.tensor(1.0)]
    masks["decoder"]["self_attn_layer"] = [torch.tensor(0.0), torch.tensor(0.6)]
    features, lengths = inputs(batch=1, frames=41)
    results = []
    for compact in (False, True):
        if compact:
            model.encoder = prune_downstream(model.encoder, masks["encoder"])
            model.decoder = prune_downstream(model.decoder, masks["decoder"])
        else:
            model.encoder.set_masks(masks["encoder"])
            model.decoder.set_masks(masks["decoder"])
        search = BatchBeamSearch(scorers={"decoder": model.decoder}, weights={"decoder": 1.0}, beam_size=3,
                                 vocab_size=6, sos=5, eos=5, token_list=None).eval()
        encoded = model.encode(features, lengths)[0][0]
        with torch.no_grad():
            results.append(search(encoded, maxlenratio=1.0, minlenratio=0.5)[:3])
    assert model.decoder.pruned_structure["use_self_attention"] == [False, True]
    assert len(results[0]) == 3 and len(results[0][0].yseq) > 3  # several hypotheses of several tokens
    for masked, compact in zip(*results):
        assert masked.yseq.tolist() == compact.yseq.tolist()
        torch.testing.assert_close(compact.score, masked.score, rtol=1e-4, atol=1e-4)
