"""ESPnet frontend ``pruned_ssl``: an SSL encoder fine-tuned, and optionally pruned, in place.

Without ``pruning`` it is a plain SSL frontend (the fine-tuning baseline, like ESPnet's
``s3prl`` frontend). With ``pruning`` a :class:`PruningController` gates the encoder;
the pruning-aware models (``model: pruned_espnet``) add its Lagrangian to the loss.
``make_compact()`` turns the gated encoder into the physically smaller one, and a
compact state dict rebuilds that structure when loaded into a frontend built from the
unchanged training config.
"""

import json
import logging
from typing import Any, Dict, List, Optional, Tuple, Union

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from torch import Tensor, nn
from typeguard import typechecked

from espnet_prune.pruning.config import PruningConfig
from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.multisize import SNAPSHOTS_ATTRIBUTE
from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.load import load_encoder
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import keep_first_layers, prune_encoder

_STRUCTURE_KEY = "compact_structure"
#: s3prl's ``S3PRLUpstream`` pads a batch whose longest utterance is shorter than this (0.05 s at 16 kHz).
S3PRL_MIN_SAMPLES = 800


def _fit_frames(hidden: Tensor, frames: int) -> Tensor:
    """``(B, T, D)`` -> ``(B, frames, D)``: cut, or extended by repeating the last frame."""
    if hidden.shape[1] >= frames:
        return hidden[:, :frames]
    return torch.cat([hidden, hidden[:, -1:].expand(-1, frames - hidden.shape[1], -1)], dim=1)


def _encode_structure(config: EncoderConfig) -> Tensor:
    return torch.tensor(list(json.dumps(config.to_dict()).encode("utf-8")), dtype=torch.int32)


def _decode_structure(values: Tensor) -> EncoderConfig:
    return EncoderConfig.from_dict(json.loads(bytes(values.tolist()).decode("utf-8")))


class PrunedSSLFrontend(AbsFrontend):
    """wav2vec 2.0 / HuBERT / WavLM frontend with HJ-Pruning.

    Args:
        fs: sampling rate of the input (e.g. ``16k``); must equal the model's.
        checkpoint: local path of pretrained weights (fairseq ``.pt``, Hugging Face
            directory, s3prl converted checkpoint, or a torchaudio state dict with ``arch``).
        arch: architecture preset name (``wav2vec2_base``, ``hubert_base``, ``wavlm_base``,
            ``*_large`` ...) or a dict of :class:`EncoderConfig` values (``preset`` + overrides).
            Without ``checkpoint`` the encoder is randomly initialised from it; with one it is
            only needed for torchaudio state dicts, and its dropout-like values override the
            checkpoint's (an override that changes what the weights compute, e.g.
            ``num_heads``, is logged as a warning). Values are type-checked when the encoder
            config is built, naming the key (:class:`EncoderConfig`).
            ``espnet_prune.bin.export --output_dir`` writes ``checkpoint: null`` and the
            compact encoder's complete structure (every :class:`EncoderConfig` field,
            per-layer widths included) here, so the exported config builds the compact
            encoder itself and its weights come from the model file alone.
        layer: hidden state to output: ``-1`` the last, ``0`` the Transformer input,
            ``k`` the output of layer k. Layers above k are not built (nor computed, nor
            counted in the pruning cost): the encoder keeps its first k layers.
        multilayer_feature: output a learned softmax-weighted sum of all hidden states
            (like ESPnet's ``s3prl`` frontend); exclusive with ``layer != -1``.
        normalize_hidden_states: apply a LayerNorm without learned parameters (eps 1e-5) to
            each hidden state before it is output or weighted (ESPnet's ``s3prl`` frontend with
            ``frontend_conf: {normalize: true}``, i.e. s3prl's ``S3PRLUpstream(normalize=True)``).
        s3prl_lengths: count output frames as ESPnet's ``s3prl`` frontend does (s3prl's
            ``S3PRLUpstream``): an utterance of ``n`` samples gets ``ceil(n / hop)`` frames
            (``hop`` the CNN's total stride) instead of the CNN's own output length (one frame
            fewer for most lengths); the hidden states are cut, or extended by repeating their
            last frame, to ``ceil(longest / hop)`` frames, and a batch whose longest utterance
            is shorter than 0.05 s (800 samples) is first zero-padded at the end by the
            difference. ``espnet_prune.bin.convert`` sets it so that a converted model decodes
            what the original decodes. In a batch, an utterance's frames past its own CNN output
            are what the encoder computes at padded positions (s3prl's model computes them with
            its own padding handling); one utterance at a time (``Speech2Text``) the outputs are
            the same.
        pruning: ``None`` for no pruning, or a dict of
            :class:`~espnet_prune.pruning.config.PruningConfig` keys (``preset``: a budget
            in ``conf/pruning/``, ``units``, ``metric``,
            ``target`` or ``cnn_target``/``transformer_target``, or for several sizes from one
            run ``targets`` or ``cnn_targets``/``transformer_targets`` with ``hold_steps``, ``warmup_steps``,
            ``reference_seconds``, ``reg_lr``, ``lambda2_lr_scale``, ``temperature``,
            ``init_keep_prob``); checked (keys, types, ranges) before the encoder is built.
    """

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        checkpoint: Optional[str] = None,
        arch: Optional[Union[str, Dict[str, Any]]] = None,
        layer: int = -1,
        multilayer_feature: bool = False,
        normalize_hidden_states: bool = False,
        s3prl_lengths: bool = False,
        pruning: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        # Bad pruning settings fail before a checkpoint is read.
        self.pruning_conf = (None if pruning is None else
                             PruningConfig.from_dict(pruning, where="frontend_conf.pruning"))
        if multilayer_feature and layer != -1:
            raise ValueError("frontend_conf: multilayer_feature: true cannot be combined with layer != -1")
        if checkpoint is not None:
            encoder = load_encoder(checkpoint, arch=arch)
        elif arch is not None:
            encoder = SSLEncoder(get_config(arch))
            logging.info("pruned_ssl: no checkpoint given, random initialisation of %s (a model file "
                         "loaded afterwards replaces the weights)",
                         arch if isinstance(arch, str) else "the encoder structure given by arch")
        else:
            raise ValueError("frontend_conf needs 'checkpoint' (pretrained weights) or 'arch' (random init)")
        config = encoder.config
        if fs != config.sample_rate:
            raise ValueError(f"frontend_conf fs={fs} Hz, but the SSL model was trained on "
                             f"{config.sample_rate} Hz audio; resample the data")
        num_hidden = config.num_layers + 1
        if not -1 <= layer < num_hidden:
            raise ValueError(f"frontend_conf layer={layer} is out of range; the encoder has hidden states "
                             f"0..{num_hidden - 1} (or -1 for the last)")
        if 0 <= layer < config.num_layers:
            # Layers above the chosen hidden state would be computed for nothing (and, under
            # DDP, leave parameters without gradients): they are not built, nor counted in the cost.
            encoder = keep_first_layers(encoder, layer)
            config = encoder.config
            logging.info("pruned_ssl: layer=%d, the encoder keeps its first %d Transformer layers", layer, layer)
            if self.pruning_conf is not None and layer == 0 and set(self.pruning_conf.units) - {"conv"}:
                raise ValueError(
                    "frontend_conf: layer=0 outputs the Transformer's input, so no Transformer layer is built and "
                    f"frontend_conf.pruning.units {self.pruning_conf.units} names units that do not exist; "
                    "use units: [conv] (or a layer >= 1)")
        self.encoder = encoder
        self.layer = layer
        self.multilayer_feature = multilayer_feature
        self.normalize_hidden_states = normalize_hidden_states
        self.s3prl_lengths = s3prl_lengths
        self.layer_weights = nn.Parameter(torch.zeros(num_hidden)) if multilayer_feature else None
        self.controller = None
        #: Masks given by the model's whole-model controller (``model_conf.pruning``, :meth:`set_masks`).
        self.masks = None
        if self.pruning_conf is not None:
            self.controller = PruningController(config, self.pruning_conf)
            logging.info("pruned_ssl: pruning %s to %s", self.pruning_conf.units,
                         self.controller.sizes if len(self.controller.sizes) > 1 else self.controller.budgets)
        #: Utterances shorter than the receptive field that ``forward`` zero-padded (see ``_pad_short``).
        self.num_padded_utterances = 0
        self.hop_length = 1
        for _, _, stride in config.conv_layers:
            self.hop_length *= stride
        self._register_load_state_dict_pre_hook(self._rebuild_compact)

    @property
    def skips_layers_in_training(self) -> bool:
        """Whether the encoder uses LayerDrop (``layer_drop > 0``): each training step skips
        random layers, whose parameters then get no gradient (DDP must be told, see
        ``espnet_prune.register``)."""
        return self.encoder.config.layer_drop > 0 and self.encoder.config.num_layers > 0

    def output_size(self) -> int:
        return self.encoder.config.embed_dim

    def forward(self, input: Tensor, input_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            input: ``(B, S)`` waveforms.
            input_lengths: ``(B,)`` valid samples.
        Returns:
            features ``(B, T, D)`` and valid frames ``(B,)``.
        """
        if self.s3prl_lengths:
            if input_lengths is None:
                input_lengths = torch.full((input.shape[0],), input.shape[1], dtype=torch.long, device=input.device)
            original_lengths = input_lengths
            input, input_lengths = self._s3prl_min_length(input, input_lengths)
            frames = -(-int(input_lengths.max()) // self.hop_length)
        input, input_lengths = self._pad_short(input, input_lengths)
        masks = self.controller() if self.controller is not None else self.masks
        hidden_states, lengths = self.encoder(input, input_lengths, masks)
        hidden_states = hidden_states if self.multilayer_feature else [hidden_states[self.layer]]
        if self.s3prl_lengths:
            lengths = torch.div(original_lengths - 1, self.hop_length, rounding_mode="floor") + 1
            hidden_states = [_fit_frames(h, frames)[:, :int(lengths.max())] for h in hidden_states]
        if self.normalize_hidden_states:
            hidden_states = [nn.functional.layer_norm(h, h.shape[-1:]) for h in hidden_states]
        if self.multilayer_feature:
            weights = torch.softmax(self.layer_weights, dim=0)
            features = (torch.stack(hidden_states, dim=0) * weights[:, None, None, None]).sum(0)
        else:
            features = hidden_states[0]
        return features, lengths

    @staticmethod
    def _s3prl_min_length(input: Tensor, input_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """A batch whose longest utterance has fewer than :data:`S3PRL_MIN_SAMPLES` samples,
        zero-padded at the end by the difference; every utterance's length grows by it (as
        s3prl's ``S3PRLUpstream`` does).

        Args:
            input: ``(B, S)`` waveforms.
            input_lengths: ``(B,)`` valid samples.
        Returns:
            ``(B, S + e)`` waveforms and ``(B,)`` lengths ``+ e``, ``e >= 0``.
        """
        extra = S3PRL_MIN_SAMPLES - int(input_lengths.max())
        if extra <= 0:
            return input, input_lengths
        return nn.functional.pad(input, (0, extra)), input_lengths + extra

    def _pad_short(self, input: Tensor, input_lengths: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """Zero-pad utterances shorter than the CNN's receptive field to it (one output frame).

        Such an utterance (e.g. 200 samples against wav2vec2's 400) has no CNN output frame;
        rather than failing the whole batch (and with it a training job or a decoding run) it is
        padded with silence, and a warning counts the utterances padded so far (logged at the
        1st, 2nd, 4th, 8th ... one).

        Args:
            input: ``(B, S)`` zero-padded waveforms.
            input_lengths: ``(B,)`` valid samples, or ``None``.
        Returns:
            ``(B, max(S, R))`` waveforms and ``(B,)`` lengths of at least ``R`` samples
            (``R`` the receptive field).
        """
        field = self.encoder.receptive_field
        if input_lengths is None:
            short = int(input.shape[1] < field) * input.shape[0]
        else:
            short_rows = input_lengths < field
            short = int(short_rows.sum())
        if not short:
            return input, input_lengths
        if input.shape[1] < field:
            input = torch.nn.functional.pad(input, (0, field - input.shape[1]))
        if input_lengths is not None:
            # Silence after each short utterance's own samples, whatever the batch padded with.
            positions = torch.arange(input.shape[1], device=input.device)[None, :]
            beyond = short_rows[:, None] & (positions >= input_lengths[:, None])
            input = input.masked_fill(beyond, 0.0)
            input_lengths = torch.where(short_rows, torch.full_like(input_lengths, field), input_lengths)
        before = self.num_padded_utterances
        self.num_padded_utterances += short
        if self.num_padded_utterances.bit_length() > before.bit_length():  # passed 1, 2, 4, 8, ...
            logging.warning(
                "pruned_ssl: %d utterance(s) so far were shorter than the encoder's receptive field of %d samples "
                "(%.0f ms) and were zero-padded to it (one output frame)", self.num_padded_utterances, field,
                1000 * field / self.encoder.config.sample_rate)
        return input, input_lengths

    def set_masks(self, masks: Optional[Dict[str, List[Tensor]]]) -> None:
        """Masks of the SSL encoder's units (:data:`espnet_prune.ssl.model.Masks`) from a whole-model
        controller (``model_conf.pruning``), used by every following ``forward``; ``None``: none."""
        if masks is not None and self.controller is not None:
            raise ValueError("pruned_ssl: the frontend has its own controller (frontend_conf.pruning); "
                             "it takes no masks from the model")
        self.masks = masks

    def make_compact(self, masks: Optional[Dict[str, List[Tensor]]] = None) -> Dict[str, Any]:
        """Prune physically with the controller's deterministic masks (or with ``masks``, those of
        a whole-model controller); drop the controller and the masks.

        Returns:
            ``{"before": EncoderConfig dict, "after": EncoderConfig dict}``.
        """
        if masks is None:
            if self.controller is None:
                raise RuntimeError("make_compact() needs a frontend with pruning (frontend_conf.pruning) or masks")
            self.controller.eval()
            with torch.no_grad():
                masks = self.controller()
        before = self.encoder.config
        self.encoder = prune_encoder(self.encoder.eval(), masks)
        self.controller = None
        self.masks = None
        self.register_buffer(_STRUCTURE_KEY, _encode_structure(self.encoder.config))
        return {"before": before.to_dict(), "after": self.encoder.config.to_dict()}

    def _rebuild_compact(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata, strict: bool,
                         missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> None:
        """Load-time hook: a state dict with a compact structure rebuilds the encoder to match it.

        ESPnet loads model files with ``strict=False``, so this hook also checks that the
        frontend's own keys match exactly and fails loudly otherwise (a state dict with no
        frontend keys at all, as from a partial ``--init_param``, is left alone).
        """
        key = prefix + _STRUCTURE_KEY
        if key in state_dict:
            structure = _decode_structure(state_dict[key])
            if structure != self.encoder.config:
                self.encoder = SSLEncoder(structure).to(next(self.parameters()).device)
            self.controller = None
            self.register_buffer(_STRUCTURE_KEY, state_dict[key].clone())
        if self.controller is not None:
            self.controller.complete_old_state(state_dict, f"{prefix}controller.")
        # The snapshots of a run with several sizes check their own keys (SizeSnapshots); a
        # snapshot being restored into the model for export comes without them.
        snapshots = f"{prefix}controller.{SNAPSHOTS_ATTRIBUTE}."
        own = {prefix + name for name in self.state_dict() if not (prefix + name).startswith(snapshots)}
        given = {name for name in state_dict if name.startswith(prefix) and not name.startswith(snapshots)}
        if given and own != given:
            missing = sorted(own - given)
            extra = sorted(given - own)
            raise RuntimeError(
                f"pruned_ssl frontend cannot load this state dict: missing keys {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected keys {extra[:8]}"
                f"{' ...' if len(extra) > 8 else ''}")
