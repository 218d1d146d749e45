"""espnet_prune: structured pruning of SSL speech encoders and Transformer LMs in ESPnet.

``register()`` is the one place that touches ESPnet: it adds this package's classes
to the ``ClassChoices`` registries of ESPnet's tasks, so that YAML configs can name
them (``frontend: pruned_ssl``, ``model: pruned_espnet``, ``lm: ...``). The launcher
``python -m espnet_prune ...`` calls it before running ESPnet's own entry points.
"""

import importlib
from typing import Dict, List, Tuple

__version__ = "0.1.0"

# (ESPnet task module, registry attribute, choice name, "our.module:ClassName")
REGISTRATIONS: List[Tuple[str, str, str, str]] = []

_registered = False


def _load(target: str):
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def register() -> Dict[str, List[str]]:
    """Add espnet_prune's classes to ESPnet's task registries (idempotent).

    Returns:
        ``{"espnet2.tasks.asr.frontend_choices": ["pruned_ssl"], ...}``: what is registered.
    """
    global _registered
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
    _registered = True
    return added
