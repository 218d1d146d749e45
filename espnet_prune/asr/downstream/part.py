"""The prunable downstream modules as the pruning core sees them, priced for a decode.

:class:`EncoderPart` and :class:`DecoderPart` are the :class:`~espnet_prune.pruning.parts.
PrunablePart` of ``encoder: pruned_conformer`` / ``pruned_transformer`` and ``decoder:
pruned_transformer`` (units tables and structures of :mod:`espnet_prune.asr.downstream.structure`,
costs of :mod:`espnet_prune.asr.downstream.cost`), each priced for one decode of a fixed audio
duration: the encoder on the frames the frontend gives for it, the decoder for the tokens decoded
from it times the hypotheses of the beam.
"""

from typing import Dict, Optional

from espnet_prune.asr.downstream import cost
from espnet_prune.asr.downstream.structure import (
    CONFORMER_UNITS,
    DECODER_UNITS,
    TRANSFORMER_ENCODER_UNITS,
    DecoderStructure,
    EncoderStructure,
)
from espnet_prune.pruning.parts import Number, PrunablePart, UnitCounts


class EncoderPart(PrunablePart):
    """A prunable downstream encoder on ``input_frames`` frames (the frontend's, for the decode's audio).

    Args:
        structure: its shape.
        input_frames: frames at its input.
        name: the part's name.
    """

    default_units = ("head", "interm", "macaron_interm", "conv_channel")

    def __init__(self, structure: EncoderStructure, input_frames: int, name: str = "encoder"):
        self.structure = structure
        self.input_frames = int(input_frames)
        self.name = name
        conformer = structure.macaron_style or structure.use_cnn_module
        self.table = CONFORMER_UNITS if conformer else TRANSFORMER_ENCODER_UNITS

    def macs(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return cost.encoder_macs(self.structure, self.input_frames, counts)

    def params(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return cost.encoder_params(self.structure, counts)

    def with_structure(self, structure: EncoderStructure) -> "EncoderPart":
        return EncoderPart(structure, self.input_frames, self.name)


class DecoderPart(PrunablePart):
    """A prunable attention decoder decoding ``tokens`` tokens for each of ``hypotheses``
    hypotheses attending to ``encoder_frames`` frames (``tokens`` 0: not run, no MACs).

    Args:
        structure: its shape.
        encoder_frames: encoder output frames of the decode's audio.
        tokens: output tokens of the decode.
        hypotheses: hypotheses scored per output step (the beam size).
        name: the part's name.
    """

    default_units = ("self_head", "src_head", "interm")

    def __init__(self, structure: DecoderStructure, encoder_frames: int, tokens: int, hypotheses: int,
                 name: str = "decoder"):
        self.structure = structure
        self.encoder_frames, self.tokens, self.hypotheses = int(encoder_frames), int(tokens), int(hypotheses)
        self.name = name
        self.table = DECODER_UNITS

    def macs(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        if self.tokens == 0:
            return {"total": 0.0}
        found = cost.decoder_macs(self.structure, self.encoder_frames, self.tokens, counts)
        return {key: value * self.hypotheses for key, value in found.items()}

    def params(self, counts: Optional[UnitCounts] = None) -> Dict[str, Number]:
        return cost.decoder_params(self.structure, counts)

    def with_structure(self, structure: DecoderStructure) -> "DecoderPart":
        return DecoderPart(structure, self.encoder_frames, self.tokens, self.hypotheses, self.name)
