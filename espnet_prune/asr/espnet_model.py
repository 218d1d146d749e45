"""``model: pruned_espnet`` for the ASR task: ESPnet's ASR model plus the pruning loss."""

from typing import Any, Dict, Optional, Tuple

from espnet2.asr.espnet_model import ESPnetASRModel
from torch import Tensor

from espnet_prune.asr.input_check import FiniteInputMixin, empty_batch_loss
from espnet_prune.pruning.espnet_glue import PruningLossMixin


class PrunedESPnetASRModel(FiniteInputMixin, PruningLossMixin, ESPnetASRModel):
    """ESPnet's CTC/attention ASR model; with a pruning ``pruned_ssl`` frontend its training
    loss adds the Lagrangian ``lambda1 (c - t) + lambda2 (c - t)^2`` of the expected cost ratio
    c and target t. Utterances whose audio has NaN or Inf samples are left out of the batch, each
    named in a WARNING (:mod:`espnet_prune.asr.input_check`). Takes exactly ESPnet's
    ``model_conf`` keys, and ``pruning``: one budget over the whole model (a dict of
    :class:`~espnet_prune.pruning.config.ModelPruningConfig` keys, see
    :mod:`espnet_prune.asr.whole_model`), exclusive with ``frontend_conf.pruning``."""

    def __init__(self, *args, pruning: Optional[Dict[str, Any]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if pruning is not None:
            from espnet_prune.asr.whole_model import build_model_controller

            self.controller = build_model_controller(self, pruning)

    def forward(self, speech: Tensor, speech_lengths: Tensor, text: Tensor, text_lengths: Tensor,
                **kwargs) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
        self.apply_pruning_masks()
        batch = self.finite_batch(dict(speech=speech, speech_lengths=speech_lengths, text=text,
                                       text_lengths=text_lengths, **kwargs))
        if batch is None:
            return empty_batch_loss(self)
        loss, stats, weight = super().forward(**batch)
        return self.add_pruning_loss(loss, stats), stats, weight
