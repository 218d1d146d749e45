"""Random-weight ESPnet ASR models in the shapes of the recipes, to time decoding without training.

Each shape is an ESPnet training config (what ``config.yaml`` of an experiment holds: frontend,
encoder, decoder, token list) around the ``pruned_ssl`` frontend with random weights, and the
decode config that asr.sh would pass for it:

* ``ctc``: SSL + CTC layer (the LibriSpeech recipe), 5000 tokens; best path (beam 1, CTC weight 1.0).
* ``transformer_decoder``: SSL + linear projection to 256 + 6-layer Transformer decoder (the
  SLURP recipe), 500 tokens; beam 10, CTC weight 0.3.
* ``conformer``: SSL + linear projection to 80 + 12-block Conformer (256 wide, 4 heads, 1024 FFN
  units, kernel 31, ``conv2d2`` subsampling) + 6-layer Transformer decoder, 5000 tokens; beam 10,
  CTC weight 0.3.
"""

from pathlib import Path
from typing import Any, Dict, Union

SHAPES = ("ctc", "transformer_decoder", "conformer")

#: Decode configs (asr.sh's ``--inference_config``) of the shapes.
DECODE_CONFIGS: Dict[str, Dict[str, Any]] = {
    "ctc": dict(beam_size=1, ctc_weight=1.0, lm_weight=0.0, penalty=0.0, maxlenratio=0.0, minlenratio=0.0),
    "transformer_decoder": dict(beam_size=10, ctc_weight=0.3, lm_weight=0.0, penalty=0.0, maxlenratio=0.0,
                                minlenratio=0.0),
    "conformer": dict(beam_size=10, ctc_weight=0.3, lm_weight=0.0, penalty=0.0, maxlenratio=0.0, minlenratio=0.0),
}

#: Output vocabulary of each shape (blank, unknown, sos/eos included).
VOCABULARY = {"ctc": 5000, "transformer_decoder": 500, "conformer": 5000}


def token_list(size: int) -> list:
    """``size`` tokens in ESPnet's order: ``<blank>``, ``<unk>``, words ``w2`` ..., ``<sos/eos>`` last."""
    if size < 3:
        raise ValueError(f"a token list needs at least 3 entries (blank, unk, sos/eos), got {size}")
    return ["<blank>", "<unk>"] + [f"w{i}" for i in range(2, size - 1)] + ["<sos/eos>"]


def train_config(shape: str, arch: Union[str, Dict[str, Any]] = "wav2vec2_base", vocabulary: int = 0,
                 small: bool = False) -> Dict[str, Any]:
    """The ESPnet ASR training config of ``shape`` (module docstring).

    Args:
        shape: one of :data:`SHAPES`.
        arch: the ``pruned_ssl`` frontend's architecture (a preset name or an ``EncoderConfig`` dict).
        vocabulary: output tokens; 0 takes the shape's (:data:`VOCABULARY`).
        small: shrink the downstream networks (1 block each, 32 wide) for tests.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    ssl_dim = None if not isinstance(arch, dict) else arch.get("embed_dim")
    if ssl_dim is None:
        from espnet_prune.ssl.config import get_config

        ssl_dim = get_config(arch).embed_dim
    width = 32 if small else 256
    blocks = 1 if small else 6
    decoder_conf = dict(attention_heads=4, linear_units=64 if small else 2048, num_blocks=blocks,
                        dropout_rate=0.0, positional_dropout_rate=0.0, self_attention_dropout_rate=0.0,
                        src_attention_dropout_rate=0.0)
    config: Dict[str, Any] = dict(
        frontend="pruned_ssl", frontend_conf=dict(arch=arch), specaug=None, normalize=None,
        token_list=token_list(vocabulary or VOCABULARY[shape]), token_type="word", bpemodel=None,
        model="espnet", model_conf=dict(ctc_weight=1.0 if shape == "ctc" else 0.3), input_size=None,
    )
    if shape == "ctc":
        config.update(encoder="transformer", encoder_conf=dict(output_size=ssl_dim, num_blocks=0, input_layer=None,
                                                                normalize_before=True),
                      decoder=None, decoder_conf={})
    elif shape == "transformer_decoder":
        config.update(preencoder="linear", preencoder_conf=dict(input_size=ssl_dim, output_size=width),
                      encoder="transformer", encoder_conf=dict(output_size=width, num_blocks=0, input_layer=None,
                                                                normalize_before=True),
                      decoder="transformer", decoder_conf=decoder_conf)
    else:
        config.update(preencoder="linear", preencoder_conf=dict(input_size=ssl_dim, output_size=80),
                      encoder="conformer", encoder_conf=dict(
                          output_size=width, attention_heads=4, linear_units=64 if small else 1024,
                          num_blocks=1 if small else 12, dropout_rate=0.0, positional_dropout_rate=0.0,
                          attention_dropout_rate=0.0, input_layer="conv2d2", normalize_before=True,
                          macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
                          selfattention_layer_type="rel_selfattn", activation_type="swish",
                          use_cnn_module=True, cnn_module_kernel=31),
                      decoder="transformer", decoder_conf=decoder_conf)
    return config


def write_train_config(config: Dict[str, Any], path: Path) -> Path:
    """Write ``config`` over ``ASRTask``'s defaults as an experiment's ``config.yaml`` (which, as
    asr_train writes it, holds every option: ``build_model_from_file`` reads no defaults)."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_prune import register

    register()
    full = vars(ASRTask.get_parser().parse_args([]))
    full.update(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(full, f, indent=4, sort_keys=False)
    return path
