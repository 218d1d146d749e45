"""``model: pruned_espnet`` for the ASR task: ESPnet's ASR model plus the pruning loss."""

from typing import Dict, Tuple

from espnet2.asr.espnet_model import ESPnetASRModel
from torch import Tensor

from espnet_prune.pruning.espnet_glue import PruningLossMixin


class PrunedESPnetASRModel(PruningLossMixin, ESPnetASRModel):
    """ESPnet's CTC/attention ASR model; with a pruning ``pruned_ssl`` frontend its training
    loss adds the Lagrangian ``lambda1 (c - t) + lambda2 (c - t)^2`` of the expected cost ratio
    c and target t. Takes exactly ESPnet's ``model_conf`` keys."""

    def forward(self, speech: Tensor, speech_lengths: Tensor, text: Tensor, text_lengths: Tensor,
                **kwargs) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        return self.add_pruning_loss(loss, stats), stats, weight
