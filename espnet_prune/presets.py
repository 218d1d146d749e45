"""The shared presets in the repository's top-level ``conf/``: their one home.

``conf/ssl/<name>.yaml``: SSL encoder architectures (``frontend_conf.arch: <name>``), the
:class:`~espnet_prune.ssl.config.EncoderConfig` values that differ from its defaults.
``conf/pruning/<name>.yaml``: the HJ-Pruning budgets the paper compares
(``frontend_conf.pruning: {preset: <name>, ...}``): ``units``, ``metric`` and ``target``
(or ``cnn_target`` + ``transformer_target``).

From a source checkout (editable install, or ``PYTHONPATH`` on the checkout) they are read
from ``conf/`` itself; an installed wheel carries a copy at ``espnet_prune/conf/`` (setup.py
copies the directory into the package when it builds). The recipes link ``conf/pruning``
rather than copying it.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any, Dict

import yaml

KINDS = ("ssl", "pruning")
_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The ``conf/`` directory in use: the package's copy when installed, else the checkout's."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "ssl").is_dir() and (candidate / "pruning").is_dir():
            return candidate
    raise FileNotFoundError(f"espnet_prune's presets are missing: neither {_PACKAGE / 'conf'} (installed package) "
                            f"nor {_PACKAGE.parent / 'conf'} (source checkout) holds ssl/ and pruning/; "
                            "reinstall espnet_prune")


@lru_cache(maxsize=None)
def _load(kind: str) -> Dict[str, Dict[str, Any]]:
    if kind not in KINDS:
        raise ValueError(f"unknown preset kind '{kind}'; choose from {KINDS}")
    presets = {}
    for path in sorted((conf_dir() / kind).glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of keys to values")
        presets[path.stem] = values
    return presets


def presets(kind: str) -> Dict[str, Dict[str, Any]]:
    """``{name: values}`` of ``conf/<kind>/*.yaml`` (a fresh copy; ``kind``: ssl or pruning)."""
    return {name: dict(values) for name, values in _load(kind).items()}


def preset(kind: str, name: str) -> Dict[str, Any]:
    """The values of ``conf/<kind>/<name>.yaml``; an error lists the known names."""
    known = _load(kind)
    if name not in known:
        raise ValueError(f"Unknown {kind} preset '{name}'; known presets: {sorted(known)} "
                         f"(files in {conf_dir() / kind})")
    return dict(known[name])
