"""EspnetFinetuner's inputs to ESPnet's LM trainer: shape files, the derived training config and
its checks. (A full fine-tuning run is tested with unstructured masks in test_lm_methods.py.)"""

import copy

import pytest
from espnet2.tasks.lm import LMTask

from espnet_prune.lm.finetune import EspnetFinetuner, write_shape_file


def finetuner(dense_lm, work_dir, **overrides):
    values = dict(base_config=dense_lm.config, train_args=dense_lm.train_args,
                  train_text=str(dense_lm.experiment.train_text), valid_text=str(dense_lm.experiment.valid_text),
                  work_dir=work_dir, steps=7, lr=0.003)
    values.update(overrides)
    return EspnetFinetuner(**values)


@pytest.mark.parametrize("overrides, message", [
    (dict(steps=0), "steps >= 1"),
    (dict(ngpu=2), "ngpu 0 or 1"),
])
def test_bad_settings_are_refused(dense_lm, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        finetuner(dense_lm, tmp_path, **overrides)


def test_shape_file_counts_the_tokens_of_every_sentence(dense_lm, tmp_path):
    text = tmp_path / "text"
    text.write_text("a0 the cat\nkey_without_sentence\n\nb1 ab\n", encoding="utf-8")
    vocab = len(dense_lm.train_args.token_list)
    assert write_shape_file(dense_lm.train_args, str(text), tmp_path / "shape" / "text_shape") == 2
    # character tokens: "the cat" is t h e <space> c a t
    assert (tmp_path / "shape" / "text_shape").read_text() == f"a0 7,{vocab}\nb1 2,{vocab}\n"


def test_training_config_is_one_constant_rate_epoch_that_espnet_accepts(dense_lm, tmp_path):
    base = copy.deepcopy(dense_lm.config)
    tuner = finetuner(dense_lm, tmp_path / "work", batch_size=5)
    init = tmp_path / "init.pth"
    config = tuner.training_config(dense_lm.model, init, tmp_path / "out")
    assert dense_lm.config == base  # the original experiment's config is not modified
    assert config["lm"] == "pruned_transformer" and config["init_param"] == [str(init)]
    assert config["max_epoch"] == 1 and config["num_iters_per_epoch"] == 7
    assert config["optim"] == base["optim"] and config["optim_conf"]["lr"] == 0.003
    assert config["scheduler"] is None and config["resume"] is False
    assert config["batch_type"] == "folded" and config["batch_size"] == 5
    assert config["train_shape_file"] == [str(tmp_path / "work" / "shapes" / "train_shape")]
    assert (tmp_path / "work" / "shapes" / "valid_shape").is_file()
    # Every key is one of lm_train's options: the parser takes the config as written.
    known = {action.dest for action in LMTask.get_parser()._actions}
    assert set(config) <= known
    without_batch = finetuner(dense_lm, tmp_path / "work").training_config(dense_lm.model, init, tmp_path / "out")
    assert without_batch["batch_type"] == base.get("batch_type", without_batch["batch_type"])
    assert without_batch["batch_size"] == base["batch_size"]
