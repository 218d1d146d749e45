"""Tiny synthetic English corpora (eSpeak NG speech) in ESPnet's data layout, for end-to-end tests.

:func:`make_asr_corpus` and :func:`make_slu_corpus` speak short voice-assistant commands
with eSpeak NG voice variants and write Kaldi data directories plus an ESPnet token list::

    root/data/train/{wav.scp,text,utt2spk,spk2utt,wavs/}
    root/data/valid/...
    root/data/token_list/char/tokens.txt      # <blank>, <unk>, [intents,] chars, <sos/eos>
    root/data/nlsyms.txt                      # SLU only: the intent tokens

Training and validation speakers use disjoint voice variants, each speaker with its own
speaking rate and pitch drawn from ``seed``; the same arguments give the same corpus.

SLU follows ESPnet's SLURP recipe (``egs2/slurp/slu1/local/prepare_slurp_data.py``): ``text``
is ``<scenario>_<action> <transcript>``, e.g. ``iot_hue_lighton turn on the light``, so the
first output token is the intent; a ``transcript`` file holds the words alone (what
``slu.sh --use_transcript true`` reads). With ``--token_type char``, pass ``nlsyms.txt`` as
the non-linguistic symbols (``--nlsyms_txt``) so that each intent stays one token.

``asr_corpus`` and ``slu_corpus`` are session-scoped pytest fixtures over the defaults, built
once per test run (also under pytest-xdist, see :func:`build_once`).
"""

import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
from filelock import FileLock

from espnet_prune.utils.espeak import synthesize
from espnet_prune.utils.kaldi_data import Utterance, read_text, write_data_dir, write_text

#: (intent, transcript): SLURP-style scenario_action intents over a small vocabulary.
COMMANDS: Tuple[Tuple[str, str], ...] = (
    ("iot_hue_lighton", "turn on the light"),
    ("iot_hue_lighton", "switch the lights on"),
    ("iot_hue_lightoff", "turn off the light"),
    ("iot_hue_lightoff", "switch the lights off"),
    ("play_music", "play some music"),
    ("play_music", "play my favorite song"),
    ("audio_volume_up", "turn up the volume"),
    ("audio_volume_down", "turn down the volume"),
    ("audio_volume_mute", "mute the speaker"),
    ("datetime_query", "what time is it"),
    ("alarm_set", "set an alarm for seven"),
    ("weather_query", "what is the weather today"),
)

#: Voice variants (eSpeak ``voices/!v``) of the speakers of each split; disjoint.
SPLIT_VARIANTS: Dict[str, Tuple[str, ...]] = {
    "train": ("f2", "m1", "m3"),
    "valid": ("f4", "m7"),
}
RATE_WPM_RANGE = (145, 195)  # speaking rate of a speaker, drawn uniformly (inclusive)
PITCH_RANGE = (35, 65)  # eSpeak base pitch (50 = normal) of a speaker, drawn uniformly
SPACE = "<space>"  # ESPnet CharTokenizer's default space symbol


def make_asr_corpus(root: Path, num_train: int = 12, num_valid: int = 4, seed: int = 0) -> Dict[str, Path]:
    """Synthesise an ASR corpus of voice commands under ``root/data``.

    Args:
        root: directory to write into (``root/data`` must not hold the splits yet).
        num_train: number of training utterances, spread round-robin over the
            training speakers.
        num_valid: number of validation utterances, likewise.
        seed: seed of the sentence order and the speakers' rates and pitches.

    Returns:
        ``{"train": data dir, "valid": data dir, "token_list": tokens.txt}``. The char token
        list covers every sentence of :data:`COMMANDS`, so no split has ``<unk>`` characters.
    """
    data = _write_splits(Path(root), num_train, num_valid, seed, lambda intent, words: words)
    data["token_list"] = _write_token_list(Path(root), _char_tokens([words for _, words in COMMANDS]))
    return data


def make_slu_corpus(root: Path, num_train: int = 12, num_valid: int = 4, seed: int = 0) -> Dict[str, Path]:
    """Synthesise a SLURP-style SLU corpus under ``root/data`` (see the module docstring).

    Arguments as for :func:`make_asr_corpus`.

    Returns:
        ``{"train", "valid", "token_list", "nlsyms"}``: the data dirs (each with ``text`` =
        ``intent words...`` and ``transcript`` = ``words...``), a token list ``<blank>``,
        ``<unk>``, the intents, the characters, ``<sos/eos>``, and the intents one a line.
    """
    root = Path(root)
    intents = sorted({intent for intent, _ in COMMANDS})
    data = _write_splits(root, num_train, num_valid, seed, lambda intent, words: f"{intent} {words}")
    for split in ("train", "valid"):
        transcripts = {utt_id: text.split(maxsplit=1)[1] for utt_id, text in read_text(data[split]).items()}
        write_text(data[split], transcripts, filename="transcript")
    data["token_list"] = _write_token_list(root, intents + _char_tokens([words for _, words in COMMANDS]))
    nlsyms = root / "data" / "nlsyms.txt"
    nlsyms.write_text("".join(f"{intent}\n" for intent in intents), encoding="utf-8")
    data["nlsyms"] = nlsyms
    return data


def build_once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> Any:
    """``build(directory)`` once per test run, for a session fixture whose result the tests
    only read.

    Without pytest-xdist this is ``build(tmp_path_factory.mktemp(name))``. Under xdist every
    worker has its own session, so the first worker to get here builds into ``name/`` of the
    run's shared temporary directory (the parent of the workers' own) while holding a file
    lock, and stores the (picklable) result next to it; the other workers wait for the lock and
    load that result. A build that failed leaves no result, so the next worker builds again.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent
    directory, result_file = shared / name, shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if result_file.is_file():
            return pickle.loads(result_file.read_bytes())
        shutil.rmtree(directory, ignore_errors=True)  # what a failed build left
        directory.mkdir()
        result = build(directory)
        result_file.write_bytes(pickle.dumps(result))
        return result


@pytest.fixture(scope="session")
def asr_corpus(tmp_path_factory) -> Dict[str, Path]:
    """:func:`make_asr_corpus` with default sizes, built once per test run."""
    return build_once(tmp_path_factory, "asr_corpus", make_asr_corpus)


@pytest.fixture(scope="session")
def slu_corpus(tmp_path_factory) -> Dict[str, Path]:
    """:func:`make_slu_corpus` with default sizes, built once per test run."""
    return build_once(tmp_path_factory, "slu_corpus", make_slu_corpus)


def _write_splits(
    root: Path, num_train: int, num_valid: int, seed: int, text_of: Callable[[str, str], str]
) -> Dict[str, Path]:
    """Synthesise and write both splits; ``text_of(intent, words)`` gives an utterance's text."""
    for name, count in (("num_train", num_train), ("num_valid", num_valid)):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be a positive int, got {count!r}")
    rng = np.random.default_rng(seed)
    data = {}
    for split, count in (("train", num_train), ("valid", num_valid)):
        variants = SPLIT_VARIANTS[split]
        rates = rng.integers(RATE_WPM_RANGE[0], RATE_WPM_RANGE[1] + 1, size=len(variants))
        pitches = rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1, size=len(variants))
        order = _command_order(rng, count)
        utterances = []
        for index, command_index in enumerate(order):
            speaker_index = index % len(variants)
            speaker = f"{split}-{variants[speaker_index]}"
            intent, words = COMMANDS[command_index]
            waveform = synthesize(
                words,
                variant=variants[speaker_index],
                rate_wpm=int(rates[speaker_index]),
                pitch=int(pitches[speaker_index]),
            )
            utterances.append(Utterance(f"{speaker}-{index:04d}", speaker, waveform, text_of(intent, words)))
        data[split] = write_data_dir(root / "data" / split, utterances)
    return data


def _command_order(rng: np.random.Generator, count: int) -> List[int]:
    """Indices into :data:`COMMANDS`: shuffled passes over all of them, ``count`` in total."""
    order: List[int] = []
    while len(order) < count:
        order.extend(int(index) for index in rng.permutation(len(COMMANDS)))
    return order[:count]


def _char_tokens(sentences: Sequence[str]) -> List[str]:
    """Characters of ``sentences`` (space as ``<space>``), most frequent first, ties by character."""
    counts: Dict[str, int] = {}
    for sentence in sentences:
        for char in sentence:
            token = SPACE if char == " " else char
            counts[token] = counts.get(token, 0) + 1
    return sorted(counts, key=lambda token: (-counts[token], token))


def _write_token_list(root: Path, tokens: List[str]) -> Path:
    path = root / "data" / "token_list" / "char" / "tokens.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["<blank>", "<unk>", *tokens, "<sos/eos>"]) + "\n", encoding="utf-8")
    return path
