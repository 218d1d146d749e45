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

from espnet_prune.pruning.controller import PruningController
from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.load import load_encoder
from espnet_prune.ssl.model import SSLEncoder
from espnet_prune.ssl.prune import prune_encoder

#: Keys of ``frontend_conf.pruning`` and their defaults (``target`` or the separate targets required).
PRUNING_DEFAULTS: Dict[str, Any] = dict(
    units=["conv", "head", "interm"],
    metric="macs",
    target=None,
    cnn_target=None,
    transformer_target=None,
    warmup_steps=5000,
    reference_seconds=10.0,
    reg_lr=0.02,
    lambda2_lr_scale=10.0,
    temperature=2.0 / 3.0,
    init_keep_prob=0.99,
)

_STRUCTURE_KEY = "compact_structure"


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
            checkpoint's. ``espnet_prune.bin.export --output_dir`` writes ``checkpoint: null``
            and the compact encoder's complete structure (every :class:`EncoderConfig` field,
            per-layer widths included) here, so the exported config builds the compact
            encoder itself and its weights come from the model file alone.
        layer: hidden state to output: ``-1`` the last, ``0`` the Transformer input,
            ``k`` the output of layer k.
        multilayer_feature: output a learned softmax-weighted sum of all hidden states
            (like ESPnet's ``s3prl`` frontend); exclusive with ``layer != -1``.
        pruning: ``None`` for no pruning, or a dict with keys ``units`` (any of conv, head,
            attn_layer, interm, ffn_layer), ``metric`` (macs | params), ``target`` (joint keep
            ratio) or ``cnn_target``/``transformer_target`` (separate budgets),
            ``warmup_steps``, ``reference_seconds``, ``reg_lr`` (constant learning rate of the
            gates and lambda1), ``lambda2_lr_scale`` (lambda2 learns this many times faster),
            ``temperature``, ``init_keep_prob``.
    """

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        checkpoint: Optional[str] = None,
        arch: Optional[Union[str, Dict[str, Any]]] = None,
        layer: int = -1,
        multilayer_feature: bool = False,
        pruning: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
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
        self.encoder = encoder
        self.layer = layer
        self.multilayer_feature = multilayer_feature
        self.layer_weights = nn.Parameter(torch.zeros(num_hidden)) if multilayer_feature else None
        self.pruning_conf = self._check_pruning(pruning) if pruning is not None else None
        self.controller = None
        if self.pruning_conf is not None:
            conf = dict(self.pruning_conf)
            conf.pop("reg_lr")
            conf.pop("lambda2_lr_scale")
            self.controller = PruningController(config, **conf)
            logging.info("pruned_ssl: pruning %s to %s", conf["units"], self.controller.budgets)
        self.hop_length = 1
        for _, _, stride in config.conv_layers:
            self.hop_length *= stride
        self._register_load_state_dict_pre_hook(self._rebuild_compact)

    @staticmethod
    def _check_pruning(pruning: Dict[str, Any]) -> Dict[str, Any]:
        unknown = sorted(set(pruning) - set(PRUNING_DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in frontend_conf.pruning; known keys: {sorted(PRUNING_DEFAULTS)}")
        conf = {**PRUNING_DEFAULTS, **pruning}
        if isinstance(conf["units"], str):
            conf["units"] = [conf["units"]]
        for key in ("reg_lr", "lambda2_lr_scale"):
            if not float(conf[key]) > 0:
                raise ValueError(f"frontend_conf.pruning.{key} must be > 0, got {conf[key]}")
        return conf

    @property
    def reg_lr(self) -> Optional[float]:
        """Learning rate of the gates and lambda1 (``None`` without pruning)."""
        return None if self.pruning_conf is None else float(self.pruning_conf["reg_lr"])

    @property
    def lambda2_lr_scale(self) -> Optional[float]:
        """lambda2's learning rate relative to ``reg_lr`` (``None`` without pruning)."""
        return None if self.pruning_conf is None else float(self.pruning_conf["lambda2_lr_scale"])

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
        masks = self.controller() if self.controller is not None else None
        hidden_states, lengths = self.encoder(input, input_lengths, masks)
        if self.multilayer_feature:
            weights = torch.softmax(self.layer_weights, dim=0)
            features = (torch.stack(hidden_states, dim=0) * weights[:, None, None, None]).sum(0)
        else:
            features = hidden_states[self.layer]
        return features, lengths

    def make_compact(self) -> Dict[str, Any]:
        """Prune physically with the controller's deterministic masks; drop the controller.

        Returns:
            ``{"before": EncoderConfig dict, "after": EncoderConfig dict}``.
        """
        if self.controller is None:
            raise RuntimeError("make_compact() needs a frontend with pruning (frontend_conf.pruning)")
        before = self.encoder.config
        self.controller.eval()
        with torch.no_grad():
            masks = self.controller()
        self.encoder = prune_encoder(self.encoder.eval(), masks)
        self.controller = None
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
        own = {prefix + name for name in self.state_dict()}
        given = {name for name in state_dict if name.startswith(prefix)}
        if given and own != given:
            missing = sorted(own - given)
            extra = sorted(given - own)
            raise RuntimeError(
                f"pruned_ssl frontend cannot load this state dict: missing keys {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected keys {extra[:8]}"
                f"{' ...' if len(extra) > 8 else ''}")
