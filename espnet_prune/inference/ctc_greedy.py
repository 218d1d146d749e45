"""Best path of the CTC posteriors: a decode that costs what the model costs.

ESPnet's beam search at beam 1 with CTC weight 1.0 still scores every token of the vocabulary
with the CTC prefix scorer at every output step (O(T·V) per step). The best path takes the most
probable token of every frame, merges repeats and drops blanks: one ``argmax`` over ``(T, V)``.
:class:`CTCBestPath` does that on a built ``Speech2Text`` (its model, token converter and
tokenizer), and returns what ``Speech2Text`` returns, so that ``asr_inference`` writes the same
files (:mod:`espnet_prune.bin.asr_inference`).

The two searches agree whenever each frame's most probable token carries most of the frame's
probability (a trained model's usual posteriors); beam search ranks prefixes by the probability
summed over all their alignments, the best path by its single best alignment, so on flat
posteriors they can differ. The ``score`` is the best path's log-probability (the sum over
frames of the chosen tokens' log-posteriors), not the prefix probability beam search reports.
"""

from typing import List, Tuple, Union

import numpy as np
import torch
from espnet.nets.beam_search import Hypothesis

Result = Tuple[Union[str, None], List[str], List[int], Hypothesis]


def best_path(log_probs: torch.Tensor, blank: int, drop: Tuple[int, ...] = ()) -> Tuple[List[int], float]:
    """Token ids and log-probability of the best path.

    Args:
        log_probs: ``(T, V)`` CTC log-posteriors of one utterance.
        blank: the blank id (merged-over, then removed).
        drop: further ids removed after merging (``<sos/eos>``, which CTC never emits as a label).
    Returns:
        the collapsed token ids and the sum over frames of the chosen log-posteriors.
    """
    scores, frames = log_probs.max(dim=-1)
    tokens = torch.unique_consecutive(frames)
    ids = [int(t) for t in tokens if int(t) != blank and int(t) not in drop]
    return ids, float(scores.sum())


class CTCBestPath:
    """``Speech2Text``'s interface, decoding by the CTC best path.

    Args:
        speech2text: a built ``espnet2.bin.asr_inference.Speech2Text`` whose model has a CTC
            layer; its ``asr_model``, ``converter``, ``tokenizer``, ``device`` and ``dtype`` are used.
    """

    def __init__(self, speech2text):
        model = speech2text.asr_model
        if getattr(model, "ctc", None) is None:
            raise ValueError("the model has no CTC layer; the best path needs CTC posteriors")
        self.asr_model = model
        self.speech2text = speech2text

    @torch.no_grad()
    def __call__(self, speech: Union[torch.Tensor, np.ndarray]) -> List[Result]:
        """Decode one ``(S,)`` waveform; returns ``[(text, token, token_int, hyp)]`` (one best)."""
        s2t = self.speech2text
        if isinstance(speech, np.ndarray):
            speech = torch.tensor(speech)
        speech = speech.unsqueeze(0).to(device=s2t.device, dtype=getattr(torch, s2t.dtype))
        lengths = speech.new_full([1], dtype=torch.long, fill_value=speech.size(1))
        enc, enc_lengths = self.asr_model.encode(speech, lengths)
        if isinstance(enc, tuple):  # intermediate CTC outputs come along; the last layer decodes
            enc = enc[0]
        log_probs = self.asr_model.ctc.log_softmax(enc)[0, : int(enc_lengths[0])]
        token_int, score = best_path(log_probs, self.asr_model.blank_id, (self.asr_model.sos, self.asr_model.eos))
        hyp = Hypothesis(yseq=torch.tensor([self.asr_model.sos] + token_int + [self.asr_model.eos]), score=score,
                         scores={"ctc": score}, states={})
        # As Speech2Text: ids 0 removed, ids to tokens, tokens to text.
        token_int = [t for t in token_int if t != 0]
        token = s2t.converter.ids2tokens(token_int)
        text = s2t.tokenizer.tokens2text(token) if s2t.tokenizer is not None else None
        return [(text, token, token_int, hyp)]
