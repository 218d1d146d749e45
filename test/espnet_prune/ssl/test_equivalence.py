"""The loaded encoder computes what independent implementations compute from the same file.

Tiny random models are saved in each supported format by an independent implementation
(torchaudio, transformers, s3prl's copies of fairseq's / Microsoft's model classes), loaded
with :func:`espnet_prune.ssl.load.load_encoder`, and every hidden state (the Transformer
input and each layer's output) is compared on the valid frames of a padded batch of
unequal lengths, with no masks and with every gate open (all-ones masks).

Two references cannot take a padded batch the way the encoder does, so they are compared
one utterance at a time: torchaudio's WavLM refuses lengths, and fairseq's HuBERT / WavLM
mark a frame as padding only when all samples it is reshaped from are padding (their
``forward_padding_mask``), which differs from the CNN's output length by up to a frame.
The original WavLM checkpoint format is exercised through s3prl's ``wavlm`` expert.
"""

from typing import Dict, List, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from espnet_prune.ssl.config import EncoderConfig
from espnet_prune.ssl.load import load_encoder
from espnet_prune.ssl.model import SSLEncoder

ATOL = 1e-4
GATES = ("no_masks", "all_ones_masks")
WAV2VEC2_HUBERT = [("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("hubert", True)]
ALL_MODELS = WAV2VEC2_HUBERT + [("wavlm", False), ("wavlm", True)]
#: Config fields that only WavLM uses; other models' checkpoints do not set them.
WAVLM_ONLY = ("num_buckets", "max_distance", "gru_rel_pos")


def case_id(model_type: str, layer_norm_first: bool) -> str:
    return f"{model_type}-{'pre_ln' if layer_norm_first else 'post_ln'}"


MODEL_IDS = [case_id(*case) for case in ALL_MODELS]
WAV2VEC2_HUBERT_IDS = [case_id(*case) for case in WAV2VEC2_HUBERT]


def gate_masks(gates: str, config: EncoderConfig) -> Optional[Dict[str, List[Tensor]]]:
    """``None`` or every gate open, in the masks layout of :mod:`espnet_prune.ssl.model`."""
    if gates == "no_masks":
        return None
    return {
        "conv": [torch.ones(c) for c in config.conv_channels],
        "head": [torch.ones(h) for h in config.num_heads],
        "attn_layer": [torch.ones(()) for _ in range(config.num_layers)],
        "interm": [torch.ones(f) for f in config.ffn_dims],
        "ffn_layer": [torch.ones(()) for _ in range(config.num_layers)],
    }


def architecture(config: EncoderConfig) -> dict:
    """Config fields that must survive the round trip through a checkpoint file."""
    values = config.to_dict()
    if config.model_type != "wavlm":
        for name in WAVLM_ONLY:
            values.pop(name)
    return values


def assert_hidden_states_match(ours: Sequence[Tensor], reference: Sequence[Tensor],
                               frames: Sequence[int]) -> None:
    """Every hidden state agrees within :data:`ATOL` on each utterance's first ``frames[b]`` frames."""
    assert len(ours) == len(reference), f"{len(ours)} hidden states vs {len(reference)} in the reference"
    for layer, (mine, theirs) in enumerate(zip(ours, reference)):
        assert mine.shape[0] == theirs.shape[0] and mine.shape[-1] == theirs.shape[-1]
        for utterance, count in enumerate(frames):
            assert mine.shape[1] >= count and theirs.shape[1] >= count
            error = (mine[utterance, :count] - theirs[utterance, :count]).abs().max().item()
            assert error <= ATOL, f"hidden state {layer}, utterance {utterance}: max abs error {error:.2e}"


def run_encoder(encoder: SSLEncoder, waveforms: Tensor, lengths: Optional[Tensor], gates: str):
    with torch.no_grad():
        return encoder(waveforms, lengths, gate_masks(gates, encoder.config))


def normalized_batch(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """Each utterance normalised on its own (as fairseq's data loader does), then zero-padded."""
    out = torch.zeros_like(waveforms)
    for i, length in enumerate(lengths.tolist()):
        out[i, :length] = F.layer_norm(waveforms[i, :length], (length,))
    return out


def torchaudio_hidden_states(model: nn.Module, waveforms: Tensor, lengths: Optional[Tensor]):
    """``L + 1`` hidden states of a torchaudio ``Wav2Vec2Model`` and its frame lengths.

    The first layer's input is captured by a hook; torchaudio's ``extract_features`` returns the
    layers' outputs without a pre-LN model's final LayerNorm, which is applied here.
    """
    transformer = model.encoder.transformer
    captured = []
    hook = transformer.layers[0].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            outputs, frame_lengths = model.extract_features(waveforms, lengths)
            outputs = list(outputs)
            # torchaudio's Transformer.layer_norm_first is the opposite of its layers' flag
            if transformer.layers[0].layer_norm_first:
                outputs[-1] = transformer.layer_norm(outputs[-1])
    finally:
        hook.remove()
    return captured + outputs, frame_lengths


def huggingface_hidden_states(model: nn.Module, waveforms: Tensor, lengths: Tensor):
    """``output_hidden_states`` of a transformers model, padding hidden by ``attention_mask``,
    and its frame lengths.

    For a pre-LN (``do_stable_layer_norm``) model, transformers 5 records the last layer's
    output without the final LayerNorm (4.x recorded it with); ``last_hidden_state`` has it.
    """
    attention_mask = (torch.arange(waveforms.shape[1])[None, :] < lengths[:, None]).long()
    base = getattr(model, model.base_model_prefix, model)
    with torch.no_grad():
        output = base(waveforms, attention_mask=attention_mask, output_hidden_states=True)
    hidden_states = list(output.hidden_states)
    if base.config.do_stable_layer_norm:
        hidden_states[-1] = output.last_hidden_state
    return hidden_states, base._get_feat_extract_output_lengths(lengths)


def s3prl_hidden_states(expert: nn.Module, waveforms: Tensor, lengths: Tensor) -> List[Tensor]:
    """Hidden states of an s3prl upstream expert for the unpadded utterances of the batch."""
    with torch.no_grad():
        return list(expert([w[:n] for w, n in zip(waveforms, lengths.tolist())])["hidden_states"])


@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("model_type,layer_norm_first", WAV2VEC2_HUBERT, ids=WAV2VEC2_HUBERT_IDS)
def test_torchaudio_state_dict_matches_torchaudio(model_type, layer_norm_first, gates, make_config, checkpoints,
                                                  batch):
    config = make_config(model_type, layer_norm_first)
    path, reference = checkpoints.torchaudio(config)
    encoder = load_encoder(path, arch=config.to_dict())
    waveforms, lengths = batch
    ours, frames = run_encoder(encoder, waveforms, lengths, gates)
    theirs, their_frames = torchaudio_hidden_states(reference, waveforms, lengths)
    assert torch.equal(frames, their_frames)
    assert_hidden_states_match(ours, theirs, frames.tolist())


@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("layer_norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_torchaudio_wavlm_matches_per_utterance(layer_norm_first, gates, make_config, checkpoints, batch):
    config = make_config("wavlm", layer_norm_first)
    path, reference = checkpoints.torchaudio(config)
    encoder = load_encoder(path, arch=config.to_dict())
    waveforms, lengths = batch
    for i, length in enumerate(lengths.tolist()):
        single = waveforms[i:i + 1, :length]
        ours, frames = run_encoder(encoder, single, lengths[i:i + 1], gates)
        theirs, _ = torchaudio_hidden_states(reference, single, None)
        assert_hidden_states_match(ours, theirs, [theirs[0].shape[1]])
        assert frames.item() == theirs[0].shape[1]


@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("head", [None, "ctc"], ids=["base", "for_ctc"])
@pytest.mark.parametrize("model_type,layer_norm_first", ALL_MODELS, ids=MODEL_IDS)
def test_huggingface_directory_matches_transformers(model_type, layer_norm_first, head, gates, make_config,
                                                    checkpoints, batch):
    config = make_config(model_type, layer_norm_first)
    path, reference = checkpoints.huggingface(config, head=head,
                                              preprocessor={"do_normalize": False, "sampling_rate": 16000})
    encoder = load_encoder(path)
    assert architecture(encoder.config) == architecture(config)
    waveforms, lengths = batch
    ours, frames = run_encoder(encoder, waveforms, lengths, gates)
    theirs, their_frames = huggingface_hidden_states(reference, waveforms, lengths)
    assert torch.equal(frames, their_frames)
    assert_hidden_states_match(ours, theirs, frames.tolist())


@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("model_type,layer_norm_first", ALL_MODELS, ids=MODEL_IDS)
def test_s3prl_checkpoint_matches_s3prl_upstream(model_type, layer_norm_first, gates, make_config, checkpoints,
                                                 batch):
    # Large models (pre-LN) are trained on normalised waveforms: the loader must pick that up.
    config = make_config(model_type, layer_norm_first, normalize_waveform=layer_norm_first)
    path, expert = checkpoints.s3prl(config)
    encoder = load_encoder(path)
    assert architecture(encoder.config) == architecture(config)
    waveforms, lengths = batch
    if model_type == "wav2vec2":
        ours, frames = run_encoder(encoder, waveforms, lengths, gates)
        assert_hidden_states_match(ours, s3prl_hidden_states(expert, waveforms, lengths), frames.tolist())
        return
    for i, length in enumerate(lengths.tolist()):
        single, single_length = waveforms[i:i + 1, :length], lengths[i:i + 1]
        ours, frames = run_encoder(encoder, single, single_length, gates)
        theirs = s3prl_hidden_states(expert, single, single_length)
        assert theirs[0].shape[1] == frames.item()
        assert_hidden_states_match(ours, theirs, frames.tolist())


@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("ctc", [False, True], ids=["pretrained", "ctc_fine_tuned"])
@pytest.mark.parametrize("model_type,layer_norm_first", WAV2VEC2_HUBERT, ids=WAV2VEC2_HUBERT_IDS)
def test_fairseq_checkpoint_matches_torchaudio_importer(model_type, layer_norm_first, ctc, gates, make_config,
                                                        checkpoints, batch):
    config = make_config(model_type, layer_norm_first, normalize_waveform=layer_norm_first)
    path, reference = checkpoints.fairseq(config, ctc=ctc)
    encoder = load_encoder(path)
    assert architecture(encoder.config) == architecture(config)
    waveforms, lengths = batch
    ours, frames = run_encoder(encoder, waveforms, lengths, gates)
    # torchaudio's model does not normalise; fairseq's data loader does it per utterance.
    reference_input = normalized_batch(waveforms, lengths) if config.normalize_waveform else waveforms
    theirs, their_frames = torchaudio_hidden_states(reference, reference_input, lengths)
    assert torch.equal(frames, their_frames)
    assert_hidden_states_match(ours, theirs, frames.tolist())
