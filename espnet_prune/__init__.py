"""espnet_prune: structured pruning of SSL speech encoders and Transformer LMs in ESPnet.

``register()`` is the one place that touches ESPnet: it adds this package's classes
to the ``ClassChoices`` registries of ESPnet's tasks, so that YAML configs can name
them (``frontend: pruned_ssl``, ``model: pruned_espnet``, ``encoder: pruned_conformer``,
``encoder: pruned_transformer``, ``decoder: pruned_transformer``, ``lm: ...``). The launcher
``python -m espnet_prune ...`` calls it before running ESPnet's own entry points.
Besides the registries, ``register()`` wraps ``AbsTask.build_optimizers`` so that a model
whose frontend prunes gets a separate parameter group for its gates (``reg_lr``) and a
step hook that moves the Lagrange multipliers and the pruning schedule; every other model
is built as before. For a ``pruned_ssl`` encoder with LayerDrop under DDP it also sets
ESPnet's ``--unused_parameters true`` (see :func:`_ddp_options_for`). It also wraps
``Trainer.run`` so that, when training ends, a pruning model logs where its budgets ended
(a WARNING in ``train.log`` for a missed one), and ``AbsTask.build_streaming_iterator`` so that
ESPnet's inference and statistics tools name every utterance whose audio has NaN or Inf samples.
"""

import importlib
from typing import Dict, List, Tuple

__version__ = "0.1.0"

# (ESPnet task module, registry attribute, choice name, "our.module:ClassName")
REGISTRATIONS: List[Tuple[str, str, str, str]] = [
    ("espnet2.tasks.asr", "frontend_choices", "pruned_ssl", "espnet_prune.asr.frontend.pruned_ssl:PrunedSSLFrontend"),
    ("espnet2.tasks.slu", "frontend_choices", "pruned_ssl", "espnet_prune.asr.frontend.pruned_ssl:PrunedSSLFrontend"),
    ("espnet2.tasks.asr", "model_choices", "pruned_espnet", "espnet_prune.asr.espnet_model:PrunedESPnetASRModel"),
    ("espnet2.tasks.slu", "model_choices", "pruned_espnet", "espnet_prune.slu.espnet_model:PrunedESPnetSLUModel"),
    ("espnet2.tasks.asr", "encoder_choices", "pruned_conformer",
     "espnet_prune.asr.encoder.pruned_conformer_encoder:PrunedConformerEncoder"),
    ("espnet2.tasks.slu", "encoder_choices", "pruned_conformer",
     "espnet_prune.asr.encoder.pruned_conformer_encoder:PrunedConformerEncoder"),
    ("espnet2.tasks.asr", "encoder_choices", "pruned_transformer",
     "espnet_prune.asr.encoder.pruned_transformer_encoder:PrunedTransformerEncoder"),
    ("espnet2.tasks.slu", "encoder_choices", "pruned_transformer",
     "espnet_prune.asr.encoder.pruned_transformer_encoder:PrunedTransformerEncoder"),
    ("espnet2.tasks.asr", "decoder_choices", "pruned_transformer",
     "espnet_prune.asr.decoder.pruned_transformer_decoder:PrunedTransformerDecoder"),
    ("espnet2.tasks.slu", "decoder_choices", "pruned_transformer",
     "espnet_prune.asr.decoder.pruned_transformer_decoder:PrunedTransformerDecoder"),
    ("espnet2.tasks.lm", "lm_choices", "pruned_transformer",
     "espnet_prune.lm.pruned_transformer_lm:PrunedTransformerLM"),
]


def _load(target: str):
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def register() -> Dict[str, List[str]]:
    """Add espnet_prune's classes to ESPnet's task registries (idempotent).

    Returns:
        ``{"espnet2.tasks.asr.frontend_choices": ["pruned_ssl"], ...}``: what is registered.
    """
    added: Dict[str, List[str]] = {}
    for task_module, registry_name, choice, target in REGISTRATIONS:
        registry = getattr(importlib.import_module(task_module), registry_name)
        cls = _load(target)
        existing = registry.classes.get(choice)
        if existing is not None and existing is not cls:
            raise RuntimeError(
                f"{task_module}.{registry_name} already has a different class named '{choice}': {existing}"
            )
        registry.classes[choice] = cls
        added.setdefault(f"{task_module}.{registry_name}", []).append(choice)
    _wrap_build_optimizers()
    _wrap_trainer_run()
    _wrap_streaming_iterator()
    return added


def _wrap_streaming_iterator() -> None:
    """Make the loader of ESPnet's inference and statistics tools name utterances whose audio has
    NaN or Inf samples (see :class:`espnet_prune.asr.input_check.FiniteInputReport`)."""
    from espnet2.tasks.abs_task import AbsTask

    original = AbsTask.build_streaming_iterator.__func__
    if getattr(original, "espnet_prune_wrapper", False):
        return

    def build_streaming_iterator(cls, *args, **kwargs):
        from espnet_prune.asr.input_check import FiniteInputReport

        return FiniteInputReport(original(cls, *args, **kwargs))

    build_streaming_iterator.espnet_prune_wrapper = True
    build_streaming_iterator.__doc__ = original.__doc__
    AbsTask.build_streaming_iterator = classmethod(build_streaming_iterator)


def _wrap_trainer_run() -> None:
    from espnet2.train.trainer import Trainer

    original = Trainer.run.__func__
    if getattr(original, "espnet_prune_wrapper", False):
        return

    def run(cls, *args, **kwargs):
        from espnet_prune.pruning.espnet_glue import report_budgets

        result = original(cls, *args, **kwargs)
        report_budgets(kwargs["model"] if "model" in kwargs else args[0])
        return result

    run.espnet_prune_wrapper = True
    run.__doc__ = original.__doc__
    Trainer.run = classmethod(run)


def _wrap_build_optimizers() -> None:
    from espnet2.tasks.abs_task import AbsTask, optim_classes

    original = AbsTask.build_optimizers.__func__
    if getattr(original, "espnet_prune_wrapper", False):
        return

    def build_optimizers(cls, args, model):
        from espnet_prune.pruning.espnet_glue import PruningLossMixin, build_optimizer, find_controller

        _ddp_options_for(args, model)
        if find_controller(model) is None:
            return original(cls, args, model)
        if not isinstance(model, PruningLossMixin):
            raise ValueError(
                f"frontend_conf.pruning is set but model '{type(model).__name__}' does not add the pruning "
                "loss, so nothing would be pruned; use 'model: pruned_espnet'")
        if args.sharded_ddp or args.exclude_weight_decay:
            raise ValueError("frontend_conf.pruning does not support sharded_ddp or exclude_weight_decay")
        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"must be one of {list(optim_classes)}: {args.optim}")
        return [build_optimizer(optim_class, model, args.optim_conf)]

    build_optimizers.espnet_prune_wrapper = True
    build_optimizers.__doc__ = original.__doc__
    AbsTask.build_optimizers = classmethod(build_optimizers)


def _ddp_options_for(args, model) -> None:
    """Set ESPnet's ``--unused_parameters true`` where DDP needs it for our frontend.

    A ``pruned_ssl`` encoder with LayerDrop skips random layers in every training step, and
    each rank skips different ones; DDP then has to look for parameters without gradients
    (``find_unused_parameters``), or ranks wait for gradients that never come (gloo:
    "collective mismatch"; NCCL: a hang). ESPnet's ``build_optimizers`` runs after the model
    is built and before ``config.yaml`` is written and the trainer reads its options, so the
    option set here is the one ESPnet's trainer uses and the one ``config.yaml`` records.
    """
    import logging

    frontend = getattr(model, "frontend", None)
    if not getattr(frontend, "skips_layers_in_training", False):
        return
    if getattr(args, "distributed", False) and not getattr(args, "unused_parameters", True):
        logging.warning("pruned_ssl: the encoder uses LayerDrop (layer_drop=%s), so different ranks skip different "
                        "layers; setting --unused_parameters true for DDP", frontend.encoder.config.layer_drop)
        args.unused_parameters = True
