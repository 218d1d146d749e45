"""ESPnet LM experiments on disk: ``config.yaml`` + ``model.pth``.

Reading accepts the ``config.yaml`` that ``espnet2.bin.lm_train`` writes for
``lm: transformer`` (or ``pruned_transformer``, to prune further); the model is always
rebuilt as a :class:`PrunedTransformerLM` (dense ``transformer`` weights load into it
unchanged). Writing produces an experiment that ESPnet's tools load through the plugin
launcher: ``lm: pruned_transformer`` with the full ``lm_conf``, and the
``ESPnetLanguageModel`` state dict (keys ``lm.*``) as ``model.pth``.
"""

import argparse
import copy
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import yaml
from espnet2.lm.espnet_model import ESPnetLanguageModel
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump
from torch import Tensor

from espnet_prune.lm.pruned_transformer_lm import PrunedTransformerLM
from espnet_prune.ssl.load.common import listing
from espnet_prune.utils.output_dir import replace_file

SUPPORTED_LM_TYPES = ("transformer", "pruned_transformer")
PRUNED_LM_TYPE = "pruned_transformer"


def read_lm_config(path: str) -> Dict[str, Any]:
    """Load an LM experiment's ``config.yaml`` and check that it can be pruned.

    Raises:
        ValueError: missing file, not an LM config, unsupported ``lm`` or ``model`` type.
    """
    if not Path(path).is_file():
        raise ValueError(f"lm_train_config: no such file: {path}")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or "lm" not in config or "token_list" not in config:
        raise ValueError(f"lm_train_config: {path} is not an ESPnet LM config (no 'lm'/'token_list')")
    if config["lm"] not in SUPPORTED_LM_TYPES:
        raise ValueError(
            f"unsupported LM type 'lm: {config['lm']}' in {path}: "
            f"lm_prune supports {', '.join(SUPPORTED_LM_TYPES)}"
        )
    model_type = config.get("model") or "lm"
    if model_type != "lm":
        raise ValueError(f"unsupported model type 'model: {model_type}' in {path}: only 'lm'")
    return config


def token_list(config: Dict[str, Any]) -> List[str]:
    """The experiment's tokens (``token_list`` is a list or a file path)."""
    tokens = config["token_list"]
    if isinstance(tokens, str):
        with open(tokens, encoding="utf-8") as f:
            tokens = [line.rstrip() for line in f]
    return list(tokens)


def build_lm_model(config: Dict[str, Any]) -> ESPnetLanguageModel:
    """``ESPnetLanguageModel`` around a freshly initialised ``PrunedTransformerLM`` for
    ``config`` (its ``lm_conf``, token list and ``model_conf``)."""
    vocab_size = len(token_list(config))
    try:
        lm = PrunedTransformerLM(vocab_size=vocab_size, **(config.get("lm_conf") or {}))
    except TypeError as e:
        raise ValueError(f"lm_conf not supported by lm_prune: {e}") from e
    return ESPnetLanguageModel(lm=lm, vocab_size=vocab_size, **(config.get("model_conf") or {}))


def load_lm_experiment(
    config_path: str, model_path: str, device: str = "cpu"
) -> Tuple[ESPnetLanguageModel, argparse.Namespace, Dict[str, Any]]:
    """Load an LM experiment as a prunable model.

    Returns:
        the ESPnet LM (eval mode, on ``device``), its training args (as
        ``LMTask.build_model_from_file`` returns them, with ``token_list`` a list) and
        the raw config dict.
    """
    config = read_lm_config(config_path)
    if not Path(model_path).is_file():
        raise ValueError(f"lm_file: no such file: {model_path}")
    config["token_list"] = token_list(config)
    model = build_lm_model(config)
    model.load_state_dict(read_lm_state(model_path, model, config_path), strict=True)
    return model.to(device).eval(), argparse.Namespace(**copy.deepcopy(config)), config


def read_lm_state(model_path: str, model: ESPnetLanguageModel, config_path: str) -> Dict[str, Tensor]:
    """The state dict in ``model_path``, checked against ``model`` (built from ``config_path``).

    Raises:
        ValueError: one line naming the file and what is wrong: not a PyTorch file (a text file,
            a truncated file), not a state dict, keys that are not this LM's (how many, a few of
            them, and a few of the expected ones), or shapes that differ from ``config_path``'s.
    """
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=False)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"lm_file: cannot read {model_path} as a PyTorch model file "
                         f"({type(error).__name__}: {reason}); expected the model.pth or *.ave.pth of an ESPnet "
                         "LM experiment") from error
    if isinstance(state, dict) and "module" in state:  # deepspeed checkpoint
        state = state["module"]
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"lm_file: {model_path} holds a {type(state).__name__}, not a state dict of tensors; expected "
                         "the model.pth or *.ave.pth of an ESPnet LM experiment")
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} of the LM's {len(expected)} parameters are missing "
                            f"({listing(missing, 3)})")
        if unexpected:
            problems.append(f"{len(unexpected)} keys are not the LM's ({listing(unexpected, 3)})")
        raise ValueError(f"lm_file: {model_path} is not a model file of the LM that {config_path} describes: "
                         f"{'; '.join(problems)}; expected ESPnetLanguageModel keys such as "
                         f"{listing(sorted(expected), 3)}")
    mismatched = [f"{key}: file {tuple(state[key].shape)} vs config {tuple(value.shape)}"
                  for key, value in expected.items() if state[key].shape != value.shape]
    if mismatched:
        raise ValueError(f"lm_file: {model_path} does not fit the LM that {config_path} describes (lm_conf, "
                         f"token_list): the shapes of {len(mismatched)} of its parameters differ "
                         f"({listing(mismatched, 3)})")
    return state


def pruned_config(
    config: Dict[str, Any], lm: PrunedTransformerLM, output_dir: str
) -> Dict[str, Any]:
    """``config`` (an LM experiment's) describing ``lm`` as ``lm: pruned_transformer``."""
    config = copy.deepcopy(config)
    config["lm"] = PRUNED_LM_TYPE
    config["lm_conf"] = lm.lm_conf
    config["output_dir"] = str(output_dir)
    return config


def save_lm_experiment(
    model: ESPnetLanguageModel, config: Dict[str, Any], output_dir: str
) -> Tuple[Path, Path]:
    """Write ``output_dir/config.yaml`` and ``output_dir/model.pth`` for ``model``.

    Args:
        model: ESPnet LM whose ``lm`` is a :class:`PrunedTransformerLM`.
        config: the source experiment's config (training options, tokens, ...).
        output_dir: directory to create.

    Returns:
        paths of the config and the model file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path, model_path = output_dir / "config.yaml", output_dir / "model.pth"
    with replace_file(config_path, "w") as f:
        yaml_no_alias_safe_dump(
            pruned_config(config, model.lm, output_dir), f, indent=4, sort_keys=False
        )
    with replace_file(model_path) as f:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f)
    return config_path, model_path
