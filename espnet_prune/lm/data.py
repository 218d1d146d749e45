"""Text input for LM pruning: checks, and mini-batches of token ids.

Text files are ESPnet ``text`` files (``dump/raw/lm_train.txt``, ``dump/raw/dev/text``):
one sentence per line, ``<key> <sentence>``. Tokenisation is that of the LM experiment
(its ``config.yaml``: ``token_type``, ``token_list``, ``bpemodel``, ...), done by ESPnet's
own preprocessor.
"""

import argparse
import itertools
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
from espnet2.tasks.lm import LMTask


def has_sentence(path: str) -> bool:
    """Whether ``path`` has a line with a key and a non-empty sentence (reads up to it)."""
    with open(path, encoding="utf-8") as f:
        return any(len(line.split(maxsplit=1)) == 2 for line in f)


def check_text_file(path: str, option: str) -> None:
    """Raise ``ValueError`` naming ``option`` if ``path`` is missing or has no sentence."""
    if not Path(path).is_file():
        raise ValueError(f"{option}: no such file: {path}")
    if not has_sentence(path):
        raise ValueError(f"{option}: {path} is empty (no '<key> <sentence>' line)")


def text_batches(
    train_args: argparse.Namespace,
    path: str,
    batch_size: int,
    max_batches: Optional[int] = None,
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``path`` in file order, tokenised as the LM was trained.

    Args:
        train_args: the LM experiment's config (``LMTask.build_model_from_file``'s).
        path: ESPnet text file.
        batch_size: sentences per batch.
        max_batches: stop after this many batches (None: whole file).

    Yields:
        text (batch, length) int64 token ids padded with 0, lengths (batch,) int64.
    """
    loader = LMTask.build_streaming_iterator(
        data_path_and_name_and_type=[(str(path), "text", "text")],
        preprocess_fn=LMTask.build_preprocess_fn(train_args, False),
        collate_fn=LMTask.build_collate_fn(train_args, False),
        batch_size=batch_size,
        dtype="float32",
        num_workers=0,
        inference=True,
    )
    for _, batch in itertools.islice(loader, max_batches):
        yield batch["text"], batch["text_lengths"]


#: Sentences of each text file that :func:`unknown_token_rate` reads (from the start).
UNK_CHECK_SENTENCES = 10000


def unknown_token_rate(train_args: argparse.Namespace, path: str,
                       max_sentences: int = UNK_CHECK_SENTENCES) -> Tuple[int, int]:
    """How many tokens of ``path`` the LM's tokenisation maps to ``<unk>``.

    Text whose characters (or words, or pieces) are missing from the LM's token list is
    silently turned into ``<unk>`` by ESPnet's preprocessor; statistics and fine-tuning on
    it would learn ``<unk>``.

    Args:
        train_args: the LM experiment's config.
        path: ESPnet text file.
        max_sentences: read at most this many sentences from the start of the file.
    Returns:
        ``(unknown, total)`` token counts over the sentences read (``<sos/eos>`` excluded).
    """
    token_list = train_args.token_list
    if isinstance(token_list, (str, Path)):
        token_list = [line.rstrip("\n").split(" ")[0] for line in open(token_list, encoding="utf-8")]
    if "<unk>" not in token_list:
        return 0, 0
    unk = token_list.index("<unk>")
    batch_size = 64
    unknown = total = 0
    for text, lengths in text_batches(train_args, path, batch_size, -(-max_sentences // batch_size)):
        valid = torch.arange(text.shape[1])[None, :] < lengths[:, None]
        unknown += int(((text == unk) & valid).sum())
        total += int(lengths.sum())
    return unknown, total
