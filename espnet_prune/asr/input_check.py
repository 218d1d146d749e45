"""Utterances whose audio holds NaN or Inf samples: named, counted, and kept out of training.

A non-finite sample turns the whole utterance's features into NaN; in a training batch it makes
the loss NaN (ESPnet then skips the update, but the epoch's statistics and the validation loss
that picks the averaged model become NaN too), and in decoding it yields a garbage hypothesis.
Nothing in ESPnet says which utterance did it.

* :func:`split_finite` is what ``model: pruned_espnet`` calls on every batch (training and
  validation): it drops the non-finite utterances from the batch and logs a WARNING naming them;
  a batch made only of such utterances gives a zero loss of zero weight (:func:`empty_batch_loss`),
  so the job goes on and the reporter ignores it.
* :class:`FiniteInputReport` wraps the data loader that ESPnet's inference and statistics
  tools (``asr_inference``, ``slu_inference``, ``*_train --collect_stats``) iterate: it logs a
  WARNING naming every such utterance as it passes and, at the end, how many there were.
  Their hypotheses are still written (as ESPnet writes them), so the scored output keeps every
  utterance id.
"""

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from torch import Tensor, nn

#: How many utterance ids one WARNING line names.
SHOWN_IDS = 10


def non_finite_rows(speech: Tensor, speech_lengths: Optional[Tensor]) -> List[int]:
    """Rows of ``speech`` ``(B, S)`` (or ``(B, S, C)``) with a NaN or Inf among their valid samples.

    ``speech_lengths`` ``(B,)``: valid samples per row (padding is not looked at); ``None``: all.
    """
    finite = torch.isfinite(speech)
    if speech_lengths is not None:
        positions = torch.arange(speech.shape[1], device=speech.device)
        valid = positions[None, :] < speech_lengths[:, None].to(speech.device)
        finite = finite | ~valid.view(*valid.shape, *([1] * (speech.dim() - 2)))
    return [int(row) for row in torch.nonzero(~finite.reshape(speech.shape[0], -1).all(dim=1)).flatten()]


def _describe(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def split_finite(batch: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """The batch without its non-finite utterances, and their ids.

    Args:
        batch: a model's ``forward`` arguments as ESPnet's trainer passes them: ``speech``
            ``(B, S)``, ``speech_lengths`` ``(B,)``, the other ``(B, ...)`` tensors of the
            batch, and ``utt_id`` (``B`` ids; row numbers are named without it).

    Returns:
        the batch with only the finite utterances (every tensor and list of length ``B`` is
        indexed; the batch itself when all are finite), and the ids of those removed.
    """
    speech = batch["speech"]
    bad = non_finite_rows(speech, batch.get("speech_lengths"))
    if not bad:
        return batch, []
    size = speech.shape[0]
    ids = batch.get("utt_id")
    names = [str(ids[row]) if ids is not None else f"row {row}" for row in bad]
    keep = [row for row in range(size) if row not in set(bad)]
    index = torch.tensor(keep, dtype=torch.long)
    kept = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == size:
            kept[key] = value.index_select(0, index.to(value.device))
        elif isinstance(value, (list, tuple)) and len(value) == size:
            kept[key] = type(value)(value[row] for row in keep)
        else:
            kept[key] = value
    return kept, names


def warn_skipped(names: Sequence[str], skipped_so_far: int) -> None:
    """The training-time WARNING for utterances :func:`split_finite` removed."""
    logging.warning("skipping %d utterance(s) whose audio has NaN or Inf samples: %s (%d skipped so far)",
                    len(names), _describe(list(names)), skipped_so_far)


def empty_batch_loss(model: nn.Module) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
    """``(loss, stats, weight)`` for a batch with no finite utterance: a zero loss connected to
    every trainable parameter (so that DDP's gradient reduction sees them all) and weight 0 (so
    that ESPnet's reporter leaves it out of its averages)."""
    loss = sum(parameter.sum() for parameter in model.parameters() if parameter.requires_grad) * 0.0
    device = loss.device
    return force_gatherable((loss, {"loss": loss.detach()}, torch.tensor(0.0, device=device)), device)


class FiniteInputReport:
    """An iterable over ``(keys, batch)`` like ESPnet's streaming loader that logs a WARNING for
    every utterance with NaN or Inf samples in ``batch["speech"]``, and their count at the end.

    Args:
        loader: what ``AbsTask.build_streaming_iterator`` returns.
    """

    def __init__(self, loader):
        self.loader = loader
        self.non_finite: List[str] = []

    def __iter__(self) -> Iterator[Tuple[List[str], Dict[str, Tensor]]]:
        for keys, batch in self.loader:
            if isinstance(batch, dict) and isinstance(batch.get("speech"), Tensor):
                bad = [str(keys[row]) for row in non_finite_rows(batch["speech"], batch.get("speech_lengths"))]
                if bad:
                    self.non_finite += bad
                    logging.warning("utterance(s) whose audio has NaN or Inf samples: %s; what is computed "
                                    "from them (hypotheses, statistics) is not meaningful", _describe(bad))
            yield keys, batch
        if self.non_finite:
            logging.warning("%d utterance(s) had NaN or Inf samples: %s", len(self.non_finite),
                            _describe(self.non_finite))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (copy, unpickling): no delegation
            raise AttributeError(name)
        return getattr(self.loader, name)


class FiniteInputMixin:
    """Mixin for ESPnet models: :meth:`finite_batch` keeps a batch's finite utterances and logs
    the others (their running count is :attr:`non_finite_skipped`)."""

    non_finite_skipped: int = 0

    def finite_batch(self, batch: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """``batch`` (``forward``'s arguments) without its non-finite utterances; ``None`` when
        none is left (then return :func:`empty_batch_loss`)."""
        batch, skipped = split_finite(batch)
        if not skipped:
            return batch
        self.non_finite_skipped += len(skipped)
        warn_skipped(skipped, self.non_finite_skipped)
        return batch if batch["speech"].shape[0] else None
