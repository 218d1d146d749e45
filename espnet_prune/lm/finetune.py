"""Fine-tuning a pruned LM between pruning steps, with ESPnet's own LM trainer.

Each call writes the pruned LM as an experiment (``<work_dir>/<tag>/init/``), a
training config ``<work_dir>/<tag>/finetune.yaml`` derived from the original LM's
``config.yaml``, and runs ``LMTask.main(cmd=["--config", finetune.yaml])`` in-process —
the same as ``python -m espnet_prune -m espnet2.bin.lm_train --config finetune.yaml``
(logged, so it can be re-run by hand). The trainer's output goes to
``<work_dir>/<tag>/train/``; the fine-tuned weights are read back from its
``1epoch.pth``.

Changes to the original training config: ``lm: pruned_transformer`` and its
``lm_conf``; ``init_param`` = the pruned weights; the given train/valid text with
shape files written from it (``<key> <length>,<vocab>``, as ``asr.sh`` writes them);
one "epoch" of ``steps`` iterations; the optimiser of the original config at constant
learning rate ``lr`` (no scheduler, no warm-up); no tensorboard/wandb/attention plots;
the best model by validation loss. Batch settings are kept unless ``batch_size`` is
given (then ``batch_type: folded``).
"""

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel
from espnet2.tasks.lm import LMTask
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_prune.lm.experiment import build_lm_model, pruned_config, save_lm_experiment

LAUNCHER = "python -m espnet_prune -m espnet2.bin.lm_train"


def write_shape_file(train_args, text_path: str, shape_path: Path) -> int:
    """Write ``<key> <num tokens>,<vocab>`` for every sentence of ``text_path``.

    Returns:
        number of sentences written (lines without a sentence are left out).
    """
    preprocess = LMTask.build_preprocess_fn(train_args, False)
    vocab_size = len(train_args.token_list)
    shape_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(text_path, encoding="utf-8") as src, shape_path.open("w", encoding="utf-8") as dst:
        for line in src:
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) != 2:
                continue
            key, sentence = parts
            length = len(preprocess(key, {"text": sentence})["text"])
            dst.write(f"{key} {length},{vocab_size}\n")
            count += 1
    return count


class EspnetFinetuner:
    """Fine-tunes LMs with ``espnet2.bin.lm_train``'s trainer.

    Args:
        base_config: the original LM experiment's ``config.yaml`` contents.
        train_args: its parsed form (``experiment.load_lm_experiment``).
        train_text, valid_text: ESPnet text files to train and validate on.
        work_dir: where step directories go.
        steps: training iterations per call.
        lr: constant learning rate.
        batch_size: sentences per batch (None: the original batch settings).
        ngpu: 0 (CPU) or 1.
        seed: random seed of the trainer.
    """

    def __init__(
        self,
        base_config: Dict[str, Any],
        train_args,
        train_text: str,
        valid_text: str,
        work_dir: str,
        steps: int,
        lr: float,
        batch_size: Optional[int] = None,
        ngpu: int = 0,
        seed: int = 0,
    ):
        if steps < 1:
            raise ValueError(f"fine-tuning needs steps >= 1, got {steps}")
        if ngpu not in (0, 1):
            raise ValueError(f"fine-tuning runs on ngpu 0 or 1, got {ngpu}")
        self.base_config = base_config
        self.train_args = train_args
        self.train_text = str(train_text)
        self.valid_text = str(valid_text)
        self.work_dir = Path(work_dir)
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.ngpu = ngpu
        self.seed = seed
        self._shape_files: Optional[Dict[str, str]] = None

    def shape_files(self) -> Dict[str, str]:
        """Shape files of the train and valid text (written on first use)."""
        if self._shape_files is None:
            shapes = {}
            for name, text in (("train", self.train_text), ("valid", self.valid_text)):
                path = self.work_dir / "shapes" / f"{name}_shape"
                logging.info(f"writing the shape file of {text} to {path}")
                count = write_shape_file(self.train_args, text, path)
                logging.info(f"{path}: {count} sentences")
                shapes[name] = str(path)
            self._shape_files = shapes
        return self._shape_files

    def training_config(
        self, model: ESPnetLanguageModel, init_model: Path, output_dir: Path
    ) -> Dict[str, Any]:
        """The ``lm_train`` config that fine-tunes ``model`` from ``init_model``."""
        known = {action.dest for action in LMTask.get_parser()._actions}
        config = {
            k: v
            for k, v in pruned_config(self.base_config, model.lm, output_dir).items()
            if k in known and k != "config"
        }
        shapes = self.shape_files()
        optim_conf = dict(config.get("optim_conf") or {})
        optim_conf["lr"] = self.lr
        fold_length = list(config.get("fold_length") or [150])[:1]
        config.update(
            init_param=[str(init_model)],
            ignore_init_mismatch=False,
            freeze_param=[],
            init=None,
            train_data_path_and_name_and_type=[[self.train_text, "text", "text"]],
            valid_data_path_and_name_and_type=[[self.valid_text, "text", "text"]],
            train_shape_file=[shapes["train"]],
            valid_shape_file=[shapes["valid"]],
            fold_length=fold_length,
            allow_variable_data_keys=False,
            multi_task_dataset=False,
            iterator_type="sequence",
            valid_iterator_type=None,
            multiple_iterator=False,
            max_epoch=1,
            num_iters_per_epoch=self.steps,
            patience=None,
            best_model_criterion=[["valid", "loss", "min"]],
            keep_nbest_models=[1],
            nbest_averaging_interval=0,
            optim_conf=optim_conf,
            scheduler=None,
            scheduler_conf={},
            resume=False,
            dry_run=False,
            collect_stats=False,
            print_config=False,
            ngpu=self.ngpu,
            use_amp=bool(config.get("use_amp")) and self.ngpu > 0,
            dist_world_size=None,
            dist_rank=None,
            local_rank=None,
            dist_launcher=None,
            multiprocessing_distributed=False,
            use_deepspeed=False,
            use_adapter=False,
            use_wandb=False,
            use_tensorboard=False,
            use_matplotlib=False,
            num_att_plot=0,
            seed=self.seed,
        )
        if self.batch_size is not None:
            config.update(batch_type="folded", batch_size=self.batch_size, valid_batch_type=None)
        return config

    def __call__(self, model: ESPnetLanguageModel, tag: str) -> ESPnetLanguageModel:
        """Fine-tune ``model`` for ``steps`` iterations; return the fine-tuned copy.

        Args:
            model: ESPnet LM around a :class:`PrunedTransformerLM`.
            tag: name of the step directory under ``work_dir``.
        """
        from espnet_prune import register

        register()
        step_dir = self.work_dir / tag
        _, init_model = save_lm_experiment(model, self.base_config, step_dir / "init")
        train_dir = step_dir / "train"
        config_path = step_dir / "finetune.yaml"
        with config_path.open("w", encoding="utf-8") as f:
            yaml_no_alias_safe_dump(
                self.training_config(model, init_model, train_dir), f, indent=4, sort_keys=False
            )
        logging.info(f"fine-tuning {tag} for {self.steps} steps: {LAUNCHER} --config {config_path}")
        LMTask.main(cmd=["--config", str(config_path)])

        state = torch.load(train_dir / "1epoch.pth", map_location="cpu", weights_only=False)
        (train_dir / "checkpoint.pth").unlink(missing_ok=True)  # optimiser state: not needed
        finetuned = build_lm_model(pruned_config(self.base_config, model.lm, train_dir))
        finetuned.load_state_dict(state, strict=True)
        device = next(model.parameters()).device
        return finetuned.to(device).train(model.training)
