"""Pretrain an SSL encoder without labels (HuBERT iteration 1) and save it to fine-tune from.

    python -m espnet_prune.bin.pretrain_ssl --arch ARCH --data_dir DIR [--data_dir DIR2 ...] \
        --output_dir OUT [--steps 3000 --batch_size 8 --num_clusters 50 ...]

ARCH is an architecture preset (``wav2vec2_base``, ...) or a YAML file holding the
architecture mapping (``frontend_conf.arch`` of a training config, or a file with that
mapping at its top level). Only the ``wav.scp`` of each data directory is read. Writes:

* ``OUT/ssl_encoder.pth``: the encoder with torchaudio's parameter names, for
  ``frontend_conf.checkpoint`` (with ``frontend_conf.arch`` set to the same architecture);
* ``OUT/ssl_encoder.json``: that architecture (as ``extract_ssl`` writes it);
* ``OUT/pretrain.json``: settings, data size, cluster sizes, the loss/accuracy curve, wall time.

The objective, masking and schedule are described in :mod:`espnet_prune.ssl.pretrain`;
progress goes to stderr every ``--log_every`` steps.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile
import torch
import yaml

from espnet_prune.ssl.config import EncoderConfig, get_config
from espnet_prune.ssl.pretrain import PretrainSettings, pretrain
from espnet_prune.utils.kaldi_data import read_text
from espnet_prune.utils.output_dir import check_output_dir, claim_output_dir, replace_file

#: The name under which pretrain_ssl claims its output directory (see espnet_prune.utils.output_dir).
COMMAND = "espnet_prune.bin.pretrain_ssl"
#: The run's record (settings, loss curve); a directory holding it is a pretraining run's.
RECORD = "pretrain.json"


def read_arch(arch: str) -> EncoderConfig:
    """A preset name, or a YAML file with the mapping at its top level or under ``frontend_conf.arch``."""
    path = Path(arch)
    if not path.is_file():
        return get_config(arch)
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(values).__name__}")
    if "frontend_conf" in values:
        values = (values["frontend_conf"] or {}).get("arch")
        if values is None:
            raise ValueError(f"{path}: frontend_conf has no 'arch'")
    return get_config(values)


def read_waveforms(data_dirs: Sequence[Path], sample_rate: int) -> List[np.ndarray]:
    """Every file of the data directories' ``wav.scp`` (plain file paths), as float32 at ``sample_rate``."""
    waveforms = []
    for data_dir in data_dirs:
        for utt_id, entry in read_text(data_dir, "wav.scp").items():
            if entry.endswith("|"):
                raise ValueError(f"{data_dir / 'wav.scp'}: utterance '{utt_id}' is a piped command; "
                                 "pretraining reads plain audio files only")
            wave, rate = soundfile.read(entry, dtype="float32")
            if rate != sample_rate:
                raise ValueError(f"{entry}: {rate} Hz, but the architecture expects {sample_rate} Hz")
            waveforms.append(wave if wave.ndim == 1 else wave.mean(1))
    return waveforms


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="architecture preset or YAML file")
    parser.add_argument("--data_dir", type=Path, action="append", required=True,
                        help="Kaldi data directory whose wav.scp is read (repeatable)")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--num_threads", type=int, default=1,
                        help="torch threads (default 1: the same number gives the same encoder)")
    for field in dataclasses.fields(PretrainSettings):
        parser.add_argument(f"--{field.name}", type=field.type,
                            default=field.default, help=f"default: {field.default}")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    torch.set_num_threads(args.num_threads)
    settings_keys = {field.name for field in dataclasses.fields(PretrainSettings)}
    try:
        check_output_dir(args.output_dir, COMMAND, marker=RECORD)
        settings = PretrainSettings(**{key: value for key, value in vars(args).items() if key in settings_keys})
        config = read_arch(args.arch)
        waveforms = read_waveforms(args.data_dir, config.sample_rate)
        print(f"pretraining on {len(waveforms)} utterances "
              f"({sum(len(w) for w in waveforms) / config.sample_rate / 3600:.2f} h)", file=sys.stderr)
        encoder, record = pretrain(config, waveforms, settings, log=lambda line: print(line, file=sys.stderr))
    except (OSError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    claim_output_dir(args.output_dir, COMMAND, marker=RECORD)
    with replace_file(args.output_dir / "ssl_encoder.pth") as f:
        torch.save(encoder.state_dict(), f)
    arch: Dict = config.to_dict()
    record["data_dirs"] = [str(path) for path in args.data_dir]
    record["num_threads"] = args.num_threads
    for name, content in (("ssl_encoder.json", arch), (RECORD, record)):
        with replace_file(args.output_dir / name, "w") as f:
            f.write(json.dumps(content, indent=2) + "\n")
    print(f"{args.output_dir / 'ssl_encoder.pth'}: final masked-prediction loss {record['curve'][-1]['loss']:.3f} "
          f"(chance {record['chance_loss']:.3f}) after {settings.steps} steps, {record['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
