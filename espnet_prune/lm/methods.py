"""One pruning step: criterion × method, applied to an ESPnet LM.

=============  =====================================  =====================================
method         ``magnitude``                          ``data``
=============  =====================================  =====================================
unstructured   ``W_ij²``                              ``W_ij² · E[x_j²]`` (activations)
structured     norms of a unit's in/out weights       gate Fisher information (gradients)
lowrank        SVD of ``W``                           SVD of ``W S^{1/2}`` (activations)
=============  =====================================  =====================================
"""

import logging
from typing import Callable, Iterable, Tuple

import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel

from espnet_prune.lm import lowrank, structured, unstructured
from espnet_prune.lm.choices import METHODS
from espnet_prune.lm.criteria import (
    CRITERIA,
    collect_input_statistics,
    unit_fisher_scores,
    unit_magnitude_scores,
    weight_scores,
)
from espnet_prune.lm.lowrank import DEFAULT_DAMPING, prune_lowrank
from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM
from espnet_prune.lm.structured import prune_structured
from espnet_prune.lm.unstructured import prune_unstructured

BatchFactory = Callable[[], Iterable[Tuple[torch.Tensor, torch.Tensor]]]


def minimum_params(lm: PrunedTransformerLM, method: str) -> int:
    """Fewest parameters ``method`` can leave of ``lm`` (smaller targets are refused).

    Raises ``ValueError`` if ``method`` cannot prune ``lm`` at all: weight masks and
    low-rank factors are not mixed, and structured pruning needs an LM with neither.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}', choose from {METHODS}")
    conf = lm.lm_conf
    conflicts = {
        "unstructured": conf["ranks"],
        "structured": conf["ranks"] or conf["weight_masks"],
        "lowrank": conf["weight_masks"],
    }
    if conflicts[method]:
        form = "low-rank factors" if conf["ranks"] else "weight masks"
        raise ValueError(f"{method} pruning does not apply to an LM with {form}")
    return {
        "unstructured": unstructured.minimum_params,
        "structured": structured.minimum_params,
        "lowrank": lowrank.minimum_params,
    }[method](lm)


def with_lm(model: ESPnetLanguageModel, lm: PrunedTransformerLM) -> ESPnetLanguageModel:
    """``model``'s ESPnet wrapper (same sos/eos and ignore id) around another ``lm``."""
    wrapper = ESPnetLanguageModel(lm=lm, vocab_size=lm.vocab_size, ignore_id=model.ignore_id)
    return wrapper.train(lm.training)


def prune_step(
    model: ESPnetLanguageModel,
    method: str,
    criterion: str,
    target_params: int,
    batches: BatchFactory,
    damping: float = DEFAULT_DAMPING,
) -> ESPnetLanguageModel:
    """Prune ``model.lm`` to about ``target_params`` parameters in one step.

    Args:
        model: ESPnet LM whose ``lm`` is a :class:`PrunedTransformerLM`.
        method: ``unstructured``, ``structured`` or ``lowrank``.
        criterion: ``magnitude`` or ``data``.
        target_params: parameter budget (non-zero parameters for ``unstructured``).
        batches: returns a fresh iterable of training (text, lengths) batches; called
            only for the ``data`` criterion.
        damping: relative damping of input second moments (``lowrank``, ``data``).

    Returns:
        a new ESPnet LM; ``model`` is unchanged.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}', choose from {METHODS}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion '{criterion}', choose from {CRITERIA}")
    lm = model.lm
    data = criterion == "data"
    logging.info(
        f"{method} pruning ({criterion}): {lm.num_params()} -> {target_params} parameters"
    )
    if method == "unstructured":
        statistics = (
            collect_input_statistics(lm, batches(), model.eos, diagonal=True) if data else None
        )
        pruned = prune_unstructured(lm, target_params, weight_scores(lm, criterion, statistics))
    elif method == "structured":
        scores = unit_fisher_scores(model, batches()) if data else unit_magnitude_scores(lm)
        pruned = prune_structured(lm, target_params, scores)
    else:
        statistics = collect_input_statistics(lm, batches(), model.eos) if data else None
        pruned = prune_lowrank(lm, target_params, statistics, damping)
    logging.info(f"pruned LM: {pruned.num_params()} parameters, lm_conf {_short(pruned)}")
    return with_lm(model, pruned)


def _short(lm: PrunedTransformerLM) -> str:
    conf = lm.lm_conf
    return (
        f"embed_unit={conf['embed_unit']} heads={conf['layer_heads']} "
        f"units={conf['layer_units']} ranks={conf['ranks']} masks={conf['weight_masks']}"
    )
