"""``model_conf.pruning``: one budget over the parts of an ESPnet model, priced for its decoding.

:func:`build_model_controller` reads ``model_conf.pruning``
(:class:`~espnet_prune.pruning.config.ModelPruningConfig`), makes one
:class:`~espnet_prune.pruning.parts.PrunablePart` per covered part of the model, each priced for
a decode of ``reference_seconds`` of audio with the configured ``decoding``
(:func:`model_parts`), and returns the :class:`~espnet_prune.pruning.controller.PruningController`
that gates them all. :func:`apply_masks` hands each module its masks (``set_masks``).

The cost of a decode (MACs; parameters are counted once per part):

* ``frontend``: the SSL encoder on ``reference_seconds`` of audio (:mod:`espnet_prune.ssl.cost`);
* ``encoder``: the downstream encoder on the frames the frontend gives for that audio;
* ``decoder``: its cost per decoded token x ``tokens_per_second x reference_seconds`` tokens x
  ``beam_size`` hypotheses (left out at ``ctc_weight: 1``, where asr_inference runs no decoder);
* ``ctc``: the CTC layer on every encoder output frame and its prefix scoring, each output step,
  for every hypothesis and each of the ``1.5 x beam_size`` pre-beam candidates (the full vocabulary
  at ``ctc_weight: 1``), over every encoder frame (two log-additions per frame, counted as MACs);
  no unit removes it (left out at ``ctc_weight: 0``).

With ``metric: latency`` the cost is the decode's measured time instead
(:mod:`espnet_prune.pruning.decode_latency`: per part a fixed time plus a time per MAC, and the
rest of the decode -- CTC, prefix scoring, the beam search's own work -- with the ``ctc`` part).
"""

import math
from typing import Dict, List

import torch
from torch import nn

from espnet_prune.asr.downstream import cost as downstream_cost
from espnet_prune.asr.downstream.part import DecoderPart, EncoderPart
from espnet_prune.asr.downstream.prune import prune_downstream
from espnet_prune.asr.downstream.structure import EncoderStructure
from espnet_prune.pruning import decode_latency
from espnet_prune.pruning.config import ModelPruningConfig
from espnet_prune.pruning.controller import PruningController
from espnet_prune.pruning.parts import PrunablePart, SSLPart
from espnet_prune.pruning.whole_model import FixedPart, WholeModelPart
from espnet_prune.ssl import cost

#: Where ``model_conf.pruning``'s errors point.
WHERE = "model_conf.pruning"
#: ESPnet's beam search scores this many pre-beam candidates per hypothesis with CTC prefix
#: scoring (``pre_beam_ratio`` of ``BeamSearch``).
PRE_BEAM_RATIO = 1.5


def frontend_frames(model: nn.Module, seconds: float) -> int:
    """Frames the model's ``pruned_ssl`` frontend gives for ``seconds`` of audio (the encoder's input)."""
    frontend = getattr(model, "frontend", None)
    encoder = getattr(frontend, "encoder", None)
    config = getattr(encoder, "config", None)
    if config is None or not hasattr(config, "conv_layers"):
        raise ValueError(f"{WHERE} prices the downstream encoder and decoder at the frame rate of a "
                         "'frontend: pruned_ssl'; this model's frontend is "
                         f"{type(frontend).__name__ if frontend is not None else None}")
    return cost.frames_for(config, seconds)


def model_tables(model: nn.Module) -> Dict[str, List[str]]:
    """``{part: its unit names}`` of the parts of ``model`` a budget can cover."""
    tables = {}
    frontend = getattr(model, "frontend", None)
    if hasattr(frontend, "set_masks") and hasattr(getattr(frontend, "encoder", None), "config"):
        tables["frontend"] = [unit.name for unit in SSLPart.table]
    for name in ("encoder", "decoder"):
        module = getattr(model, name, None)
        if module is not None and hasattr(module, "set_masks") and hasattr(module, "units"):
            tables[name] = [unit.name for unit in module.units()]
    if getattr(model, "ctc", None) is not None:
        tables["ctc"] = []
    return tables


def ctc_part(model: nn.Module, encoder_frames: int, config: ModelPruningConfig) -> FixedPart:
    """The CTC layer and its prefix scoring in the decode (module docstring)."""
    decoding = config.decoding
    layer = model.ctc.ctc_lo
    vocab, dim = layer.out_features, layer.in_features
    macs = 0.0
    if decoding.ctc_weight > 0.0:
        tokens = decoding.tokens_per_second * config.reference_seconds
        candidates = vocab if decoding.ctc_weight == 1.0 else min(vocab, int(PRE_BEAM_RATIO * decoding.beam_size))
        macs = encoder_frames * dim * vocab + 2.0 * tokens * decoding.beam_size * candidates * encoder_frames
    return FixedPart("ctc", macs, sum(p.numel() for p in layer.parameters()))


def model_parts(model: nn.Module, config: ModelPruningConfig) -> WholeModelPart:
    """The parts ``config.parts`` covers, priced for ``config.decoding`` (module docstring)."""
    parts: List[PrunablePart] = []
    seconds = config.reference_seconds
    for name in config.parts:
        if name == "frontend":
            parts.append(SSLPart(model.frontend.encoder.config, seconds, "frontend"))
        elif name == "encoder":
            parts.append(encoder_part(model, config))
        elif name == "decoder":
            parts.append(decoder_part(model, config))
        elif name == "ctc":
            parts.append(ctc_part(model, encoder_output_frames(model, seconds), config))
    fits = None
    if config.latency_table is not None:
        fits = latency_fits(parts, config)
    return WholeModelPart(parts, fits)


def latency_fits(parts: List[PrunablePart], config: ModelPruningConfig) -> Dict[str, decode_latency.Fit]:
    """The decode latency model of ``config.latency_table`` for ``parts`` (module docstring of
    :mod:`espnet_prune.pruning.decode_latency`), the table checked against their dense MACs,
    the budget's ``decoding`` and ``reference_seconds``."""
    where = f"{WHERE}.latency_table"
    table = decode_latency.load_table(config.latency_table, where)
    timed = {part.name: float(part.macs()["total"]) / 1e9 for part in parts if part.name != decode_latency.REST_PART}
    decoding = {"beam_size": config.decoding.beam_size, "tokens_per_second": config.decoding.tokens_per_second,
                "ctc_weight": config.decoding.ctc_weight}
    decode_latency.check_table(table, timed, decoding, config.reference_seconds, where)
    fits = decode_latency.part_fits(table)
    return {part.name: fits[part.name] for part in parts}


def encoder_output_frames(model: nn.Module, seconds: float) -> int:
    """Frames the encoder gives (after its own subsampling) for ``seconds`` of audio."""
    frames = frontend_frames(model, seconds)
    encoder = model.encoder
    if isinstance(getattr(encoder, "structure", None), EncoderStructure):
        return downstream_cost.encoder_output_frames(encoder.structure, frames)
    embed = getattr(encoder, "embed", None)
    if embed is None or isinstance(embed, nn.Sequential):  # ESPnet's linear / no input layer: no subsampling
        return frames
    preencoder = getattr(model, "preencoder", None)
    size = preencoder.output_size() if preencoder is not None else model.frontend.output_size()
    with torch.no_grad():  # run the encoder's subsampling input layer on zeros
        out = embed(torch.zeros(1, frames, size), torch.ones(1, 1, frames, dtype=torch.bool))
        while isinstance(out, tuple):
            out = out[0]
        return int(out.shape[1])


def encoder_part(model: nn.Module, config: ModelPruningConfig) -> PrunablePart:
    return EncoderPart(model.encoder.structure, frontend_frames(model, config.reference_seconds))


def decoder_part(model: nn.Module, config: ModelPruningConfig) -> PrunablePart:
    decoding = config.decoding
    steps = 0.0 if decoding.ctc_weight == 1.0 else decoding.tokens_per_second * config.reference_seconds
    return DecoderPart(model.decoder.structure, encoder_output_frames(model, config.reference_seconds),
                       tokens=max(1, int(math.ceil(steps))) if steps else 0, hypotheses=decoding.beam_size)


def build_model_controller(model: nn.Module, pruning: Dict) -> PruningController:
    """The controller of ``model_conf.pruning`` on ``model`` (checked against the model first)."""
    config = ModelPruningConfig.from_dict(pruning, where=WHERE)
    frontend = getattr(model, "frontend", None)
    if getattr(frontend, "controller", None) is not None:
        raise ValueError(f"{WHERE} and frontend_conf.pruning are both set: {WHERE} prices and prunes the whole model "
                         "(parts: [frontend, ...] covers the frontend), frontend_conf.pruning the frontend alone; "
                         "give one of them")
    tables = model_tables(model)
    defaults = {"frontend": list(SSLPart.default_units)}
    for name, part in (("encoder", EncoderPart), ("decoder", DecoderPart)):
        if name in tables:
            defaults[name] = [unit for unit in part.default_units if unit in tables[name]]
    config.check_model(tables, defaults)
    return PruningController(model_parts(model, config), config)


def apply_masks(model: nn.Module, controller: PruningController) -> None:
    """Give every gated module its masks from ``controller`` (samples in training mode, the
    deterministic masks in eval mode)."""
    for name, masks in controller().items():
        getattr(model, name).set_masks(masks)


def compact_model(model: nn.Module) -> Dict[str, Dict]:
    """Prune every gated module of ``model`` physically with the whole-model controller's
    deterministic masks (kept units' mask values folded into the weights), then drop the controller:
    the model computes in eval mode what the gated model computed.

    Returns:
        ``{part: {"before": structure dict, "after": structure dict}}`` (the frontend's
        ``EncoderConfig`` dicts; the encoder's and decoder's ``pruned_structure``).
    """
    controller = model.controller
    controller.eval()
    with torch.no_grad():
        masks = controller()
    structures = {}
    for name, part_masks in masks.items():
        module = getattr(model, name)
        if name == "frontend":
            structures[name] = module.make_compact(part_masks)
            continue
        before = module.pruned_structure
        compact = prune_downstream(module.eval(), part_masks)
        setattr(model, name, compact)
        structures[name] = {"before": before, "after": compact.pruned_structure}
    model.controller = None
    return structures

