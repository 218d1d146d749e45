"""``espnet2.bin.asr_train`` as the launcher runs it, plus a record of what each DDP rank ends with.

Run as ``torchrun ... -m espnet_prune -m test.espnet_prune.pruning.ddp_probe ASR_TRAIN_ARGS``:
ESPnet's own ``ASRTask.main`` trains; around ESPnet's ``Trainer.run`` this writes
``<output_dir>/rank<R>.pt`` with the rank's final model state dict, the controller's state
and the resolved DDP options, so the test can compare the ranks.
"""

from pathlib import Path

import torch
from espnet2.bin.asr_train import main as asr_train_main
from espnet2.train.trainer import Trainer

_original_run = Trainer.run.__func__


def _recording_run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
                   plot_attention_iter_factory, trainer_options, distributed_option):
    _original_run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
                  plot_attention_iter_factory, trainer_options, distributed_option)
    rank = distributed_option.dist_rank if distributed_option.distributed else 0
    controller = model.frontend.controller
    torch.save({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "controller": {k: v.detach().cpu() for k, v in controller.state_dict().items()},
        "world_size": distributed_option.dist_world_size,
        "unused_parameters": trainer_options.unused_parameters,
        "num_layers": model.frontend.encoder.config.num_layers,
    }, Path(trainer_options.output_dir) / f"rank{rank}.pt")


Trainer.run = classmethod(_recording_run)

if __name__ == "__main__":
    asr_train_main()
