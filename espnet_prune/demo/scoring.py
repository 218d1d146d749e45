"""asr.sh stage 13 without sclite: WER, CER and intent accuracy in Python.

The text goes through what ESPnet's scoring does before ``sclite``: for each of ``ref`` and
``hyp`` the transcript (``<utt_id> <text>``, the utterance id dropped) is tokenised with
ESPnet's own ``WordTokenizer`` / ``CharTokenizer`` (``espnet2.bin.tokenize_text --token_type
word|char``) with ``--non_linguistic_symbols`` removed; the reference, and only the reference,
is first cleaned with ``--cleaner``. sclite then aligns the token sequences case-insensitively
(its default; ``-s`` would make it case-sensitive), so tokens are compared lower-cased here,
with sclite's alignment weights (:func:`align_counts`). The error rate is the substitutions,
deletions and insertions summed over all utterances, divided by the number of reference tokens. With
char tokens the space is the token ``<space>``, as in ESPnet's CER.

Intent accuracy follows ESPnet's SLURP recipe (``egs2/slurp/slu1/local/score.sh``): an
utterance is right when the first word of the hypothesis equals the first word of the
reference (``text`` = ``<intent> <words>``). It is taken before non-linguistic symbols are
removed, because in this demo the intents are those symbols.

An utterance of the reference without a hypothesis is scored against an empty hypothesis.
Both files are read as Kaldi tables (:func:`espnet_prune.utils.kaldi_data.read_table`, blank
lines skipped).
"""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from espnet_prune.utils.kaldi_data import read_table

PathLike = Union[str, Path]
TOKEN_TYPES = ("word", "char")


@dataclass(frozen=True)
class ErrorCounts:
    """Totals over a set of utterances; ``rate`` = (sub + del + ins) / ref_tokens."""

    substitutions: int
    deletions: int
    insertions: int
    ref_tokens: int
    utterances: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return self.errors / self.ref_tokens if self.ref_tokens else float(self.errors > 0)

    def as_dict(self) -> Dict[str, float]:
        return {**asdict(self), "errors": self.errors, "rate": self.rate}


def read_symbols(path: Optional[PathLike]) -> List[str]:
    """Non-linguistic symbols, one a line (``none`` or ``None`` -> no symbols)."""
    if path is None or str(path) == "none":
        return []
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class ScoringNormalizer:
    """ESPnet's scoring tokenisation for one token type.

    Args:
        token_type: ``word`` (WER) or ``char`` (CER).
        non_linguistic_symbols: symbols removed from both sides (``--nlsyms_txt``).
        cleaner: ESPnet text cleaner applied to references only (``--cleaner``), or None.
    """

    def __init__(self, token_type: str, non_linguistic_symbols: Sequence[str] = (), cleaner: Optional[str] = None):
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"token_type must be one of {TOKEN_TYPES}, got {token_type!r}")
        from espnet2.text.char_tokenizer import CharTokenizer
        from espnet2.text.cleaner import TextCleaner
        from espnet2.text.word_tokenizer import WordTokenizer

        symbols = list(non_linguistic_symbols)
        if token_type == "word":
            self.tokenizer = WordTokenizer(non_linguistic_symbols=symbols, remove_non_linguistic_symbols=True)
        else:
            self.tokenizer = CharTokenizer(non_linguistic_symbols=symbols, remove_non_linguistic_symbols=True)
        self.cleaner = TextCleaner(cleaner) if cleaner not in (None, "none") else None

    def reference(self, text: str) -> List[str]:
        """Tokens of a reference: cleaned, tokenised, symbols removed, lower-cased."""
        if self.cleaner is not None:
            text = self.cleaner(text)
        return [token.lower() for token in self.tokenizer.text2tokens(text)]

    def hypothesis(self, text: str) -> List[str]:
        """Tokens of a hypothesis: tokenised, symbols removed, lower-cased (no cleaner)."""
        return [token.lower() for token in self.tokenizer.text2tokens(text)]


#: sclite's default alignment weights: a correct word costs 0, a substitution 4, an insertion or deletion 3.
SUBSTITUTION_COST, INSERTION_COST, DELETION_COST = 4, 3, 3


def align_counts(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """``(substitutions, deletions, insertions)`` of sclite's alignment of ``hyp`` to ``ref``.

    The alignment minimises sclite's weighted cost (:data:`SUBSTITUTION_COST` etc.); among
    alignments of equal cost, the one with the fewest errors is taken. For a pair with a
    mismatch on each side this prefers a deletion and an insertion (6) to two substitutions (8),
    and now and then, as in sclite, it counts more errors than the edit distance: ``aaabb`` vs
    ``bbcca`` gives 3 deletions + 3 insertions (cost 18) rather than 5 substitutions (cost 20).
    """
    # Each cell: (weighted cost, errors, substitutions, deletions, insertions) for ref[:i] vs hyp[:j].
    previous = [(INSERTION_COST * j, j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        current = [(DELETION_COST * i, i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            cost, errors, sub, dele, ins = previous[j - 1]
            if ref[i - 1] == hyp[j - 1]:
                best = (cost, errors, sub, dele, ins)
            else:
                best = (cost + SUBSTITUTION_COST, errors + 1, sub + 1, dele, ins)
            cost, errors, sub, dele, ins = previous[j]
            best = min(best, (cost + DELETION_COST, errors + 1, sub, dele + 1, ins))
            cost, errors, sub, dele, ins = current[j - 1]
            best = min(best, (cost + INSERTION_COST, errors + 1, sub, dele, ins + 1))
            current.append(best)
        previous = current
    _, _, sub, dele, ins = previous[-1]
    return sub, dele, ins


def error_rate(refs: Mapping[str, str], hyps: Mapping[str, str], token_type: str = "word",
               non_linguistic_symbols: Sequence[str] = (), cleaner: Optional[str] = None) -> ErrorCounts:
    """WER (``token_type="word"``) or CER (``"char"``) of ``hyps`` against ``refs``.

    Args:
        refs: utterance id -> reference text; every one is scored.
        hyps: utterance id -> hypothesis text; missing ones count as empty.
        token_type: ``word`` or ``char``.
        non_linguistic_symbols: removed from both sides before scoring.
        cleaner: ESPnet cleaner for the references (``tacotron``, ``whisper_en``, ...).
    Raises:
        ValueError: no references, or hypotheses for utterances that have no reference.
    """
    if not refs:
        raise ValueError("no reference utterances to score")
    unknown = sorted(set(hyps) - set(refs))
    if unknown:
        raise ValueError(f"hypotheses for utterances without a reference: {unknown[:5]}")
    normalizer = ScoringNormalizer(token_type, non_linguistic_symbols, cleaner)
    sub = dele = ins = ref_tokens = 0
    for utt_id, ref_text in refs.items():
        ref = normalizer.reference(ref_text)
        hyp = normalizer.hypothesis(hyps.get(utt_id, ""))
        s, d, i = align_counts(ref, hyp)
        sub, dele, ins, ref_tokens = sub + s, dele + d, ins + i, ref_tokens + len(ref)
    return ErrorCounts(sub, dele, ins, ref_tokens, len(refs))


def intent_accuracy(refs: Mapping[str, str], hyps: Mapping[str, str]) -> float:
    """Fraction of utterances whose hypothesis starts with the reference's first word (the intent).

    Raises:
        ValueError: no references, or a reference with no text.
    """
    if not refs:
        raise ValueError("no reference utterances to score")
    correct = 0
    for utt_id, ref_text in refs.items():
        ref_words = ref_text.split()
        if not ref_words:
            raise ValueError(f"reference of '{utt_id}' is empty; it has no intent")
        hyp_words = hyps.get(utt_id, "").split()
        correct += bool(hyp_words) and hyp_words[0].lower() == ref_words[0].lower()
    return correct / len(refs)


def score_decoding(ref_file: PathLike, hyp_file: PathLike, task: str = "asr",
                   non_linguistic_symbols: Iterable[str] = (), cleaner: Optional[str] = None) -> Dict[str, object]:
    """Score one decoding directory's ``text`` against the data's ``text``.

    Returns:
        ``{"wer": ..., "cer": ..., "score_wer": counts, "score_cer": counts}`` and, for
        ``task="slu"``, ``"intent_acc"``; rates are fractions.
    """
    refs = read_table(ref_file, skip_empty_lines=True)
    hyps = read_table(hyp_file, skip_empty_lines=True)
    symbols = list(non_linguistic_symbols)
    wer = error_rate(refs, hyps, "word", symbols, cleaner)
    cer = error_rate(refs, hyps, "char", symbols, cleaner)
    result: Dict[str, object] = {"wer": wer.rate, "cer": cer.rate, "score_wer": wer.as_dict(),
                                 "score_cer": cer.as_dict()}
    if task == "slu":
        result["intent_acc"] = intent_accuracy(refs, hyps)
    return result
