"""``model: pruned_espnet`` for the SLU task: ESPnet's SLU model plus the pruning loss."""

from typing import Dict, Tuple

from espnet2.slu.espnet_model import ESPnetSLUModel
from torch import Tensor

from espnet_prune.pruning.espnet_glue import PruningLossMixin


class PrunedESPnetSLUModel(PruningLossMixin, ESPnetSLUModel):
    """ESPnet's SLU model; with a pruning ``pruned_ssl`` frontend its training loss adds the
    Lagrangian of the expected cost ratio. Takes exactly ESPnet's SLU ``model_conf`` keys."""

    def forward(self, speech: Tensor, speech_lengths: Tensor, text: Tensor, text_lengths: Tensor,
                **kwargs) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        return self.add_pruning_loss(loss, stats), stats, weight
