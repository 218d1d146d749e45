"""Write, read and check Kaldi-style data directories, the input format of ESPnet's recipes.

A data directory holds one line per utterance (or speaker) in each of:

- ``wav.scp``: ``<utt_id> <path of a 16-bit PCM wav file>``
- ``text``: ``<utt_id> <transcript>``
- ``utt2spk``: ``<utt_id> <speaker_id>``
- ``spk2utt``: ``<speaker_id> <utt_id> <utt_id> ...``

Kaldi's rules, which :func:`validate_data_dir` checks: every file is sorted by its first
field in byte order (``LC_ALL=C sort``) with unique keys; ``wav.scp``, ``text`` and
``utt2spk`` list the same utterances; ``spk2utt`` is the inverse of ``utt2spk``; and sorting
``utt2spk`` by utterance id also sorts it by speaker id, which is what making every speaker
id a prefix of its utterance ids (``spk1-0001``) is for.

Besides writing a directory from waveforms (:func:`write_data_dir`), :func:`read_table` /
:func:`write_table` read and write any ``<key> <value>`` table (``utt2num_samples``, ESPnet's
``1best_recog/text``), :func:`spk2utt` inverts ``utt2spk``, and :func:`subset_data_dir` keeps
some utterances of a directory (what asr.sh's stage 4 filtering does).
"""

import re
import shutil
from pathlib import Path
from typing import Collection, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import soundfile

PathLike = Union[str, Path]
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
_ARK_OFFSET = re.compile(r"^(.+):\d+$")


class Utterance(NamedTuple):
    """One utterance to write with :func:`write_data_dir` (plain 4-tuples work too)."""

    utt_id: str  # must start with ``speaker``; no whitespace
    speaker: str  # no whitespace
    waveform: np.ndarray  # (num_samples,) float in [-1, 1]
    text: str  # transcript, one line


def write_data_dir(
    data_dir: PathLike,
    utterances: Iterable[Union[Utterance, tuple]],
    wav_dir: Optional[PathLike] = None,
    sample_rate: int = 16000,
) -> Path:
    """Write utterances as a Kaldi data directory, with one wav file per utterance.

    Args:
        data_dir: directory to create; it must not exist yet or be empty, so no stale
            Kaldi file (``segments``, ``feats.scp``, ...) can survive next to the new ones.
        utterances: ``(utt_id, speaker, waveform, text)`` records in any order. ``waveform``
            is a ``(num_samples,)`` float array in [-1, 1] at ``sample_rate``; it is stored as
            16-bit PCM (``round(x * 32767)``). Each ``utt_id`` must start with its speaker id.
        wav_dir: where the wav files go, as ``<utt_id>.wav``; default ``data_dir/wavs``.
            ``wav.scp`` refers to them by absolute path.
        sample_rate: sample rate of every waveform, in Hz.

    Returns:
        ``data_dir`` as a Path, after :func:`validate_data_dir` has passed on it.

    Raises:
        ValueError: an invalid record (named by its utt_id), a duplicate utt_id, no records,
            or a non-empty ``data_dir``.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"data directory {data_dir} is not empty; write into a new directory")
    records = [Utterance(*record) for record in utterances]
    if not records:
        raise ValueError("no utterances to write")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    seen = set()
    for record in records:
        _check_record(record)
        if record.utt_id in seen:
            raise ValueError(f"duplicate utterance id '{record.utt_id}'")
        seen.add(record.utt_id)

    records.sort(key=lambda record: record.utt_id)
    _check_speaker_order(
        [record.utt_id for record in records], {record.utt_id: record.speaker for record in records}, "utterances"
    )

    wav_dir = (data_dir / "wavs") if wav_dir is None else Path(wav_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_paths = {}
    for record in records:
        wav_path = (wav_dir / f"{record.utt_id}.wav").resolve()
        pcm = np.round(np.asarray(record.waveform, dtype=np.float64) * 32767.0).astype(np.int16)
        soundfile.write(str(wav_path), pcm, sample_rate, subtype="PCM_16")
        wav_paths[record.utt_id] = str(wav_path)

    _write_table(data_dir / "wav.scp", wav_paths)
    _write_table(data_dir / "text", {record.utt_id: record.text for record in records})
    utt2spk = {record.utt_id: record.speaker for record in records}
    _write_table(data_dir / "utt2spk", utt2spk)
    _write_table(data_dir / "spk2utt", spk2utt(utt2spk))
    validate_data_dir(data_dir)
    return data_dir


def spk2utt(utt2spk: Mapping[str, str]) -> Dict[str, str]:
    """``utt2spk`` inverted: speaker id -> its utterance ids, sorted and space-separated."""
    speakers: Dict[str, List[str]] = {}
    for utt_id in sorted(utt2spk):
        speakers.setdefault(utt2spk[utt_id], []).append(utt_id)
    return {speaker: " ".join(utts) for speaker, utts in speakers.items()}


def read_table(path: PathLike, skip_empty_lines: bool = False) -> Dict[str, str]:
    """A Kaldi table (``<key> <value>`` lines) as {key: value}, in file order.

    A key alone on its line (e.g. an empty hypothesis in ESPnet's ``1best_recog/text``) maps to "".

    Args:
        path: the file.
        skip_empty_lines: ignore empty lines instead of refusing them.

    Raises:
        ValueError: the file is missing, has an empty line (unless skipped) or a repeated key.
    """
    return _read_table(Path(path), skip_empty_lines)


def write_table(path: PathLike, table: Mapping[str, object]) -> Path:
    """Write ``table`` as ``<key> <value>`` lines sorted by key (Kaldi's order); returns the path."""
    path = Path(path)
    _write_table(path, {key: str(value) for key, value in table.items()})
    return path


def subset_data_dir(source: PathLike, target: PathLike, keep: Collection[str],
                    files: Sequence[str] = ("wav.scp", "text", "utt2spk"), copy: Sequence[str] = ()) -> int:
    """Write into ``target`` (replaced if it exists) the utterances of ``source`` listed in ``keep``.

    Args:
        source: a data directory.
        target: the directory to write.
        keep: utterance ids to keep (others in ``keep`` are ignored).
        files: per-utterance tables of ``source`` to copy, restricted to ``keep``; ``utt2spk``
            among them also gets its ``spk2utt``.
        copy: files copied unchanged (e.g. ``feats_type``).

    Returns:
        The number of utterances kept.
    """
    source, target = Path(source), Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    keep = set(keep)
    kept = set()
    for name in files:
        table = {key: value for key, value in _read_table(source / name).items() if key in keep}
        kept |= set(table)
        _write_table(target / name, table)
        if name == "utt2spk":
            _write_table(target / "spk2utt", spk2utt(table))
    for name in copy:
        shutil.copyfile(source / name, target / name)
    return len(kept)


def write_text(data_dir: PathLike, texts: Mapping[str, str], filename: str = "text") -> Path:
    """Write an ``<utt_id> <text>`` file (``text``, or e.g. ESPnet SLU's ``transcript``), sorted.

    Args:
        data_dir: an existing data directory.
        texts: utt_id -> one-line text.
        filename: name of the file inside ``data_dir``.

    Returns:
        The path written.
    """
    for utt_id, text in texts.items():
        _check_id("utterance id", utt_id)
        _check_text(utt_id, text)
    path = Path(data_dir) / filename
    _write_table(path, texts)
    return path


def read_text(data_dir: PathLike, filename: str = "text") -> Dict[str, str]:
    """Read ``data_dir/filename`` (``<utt_id> <text>`` lines) into {utt_id: text}, in file order.

    An utterance without a transcript maps to "".

    Raises:
        ValueError: the file is missing, has an empty line or a repeated utt_id.
    """
    return _read_table(Path(data_dir) / filename)


def validate_data_dir(data_dir: PathLike, check_wav_files: bool = True) -> List[str]:
    """Check that ``data_dir`` is a well-formed Kaldi data directory.

    Checks: the four files exist; each is sorted by key with unique keys and no empty
    lines; ``wav.scp``, ``text`` and ``utt2spk`` have the same utterance ids; ``spk2utt``
    is exactly the inverse of ``utt2spk`` with each speaker's utterances sorted; speaker
    order agrees with utterance order; and (with ``check_wav_files``) every file named in
    ``wav.scp`` exists. Relative paths are taken relative to the current directory, as
    Kaldi and ESPnet scripts do; piped commands (``... |``) are not checked; for
    ``file.ark:offset`` entries the ark file is checked.

    Args:
        data_dir: the directory to check.
        check_wav_files: whether to check that the wav files exist.

    Returns:
        The sorted utterance ids.

    Raises:
        ValueError: the first problem found, naming the file and the offending ids.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"data directory {data_dir} does not exist")
    tables = {}
    for name in KALDI_FILES:
        path = data_dir / name
        if not path.is_file():
            raise ValueError(f"data directory {data_dir} has no '{name}' file")
        tables[name] = _read_table(path)
        keys = list(tables[name])
        for previous, key in zip(keys, keys[1:]):
            if key < previous:
                raise ValueError(f"{path} is not sorted: '{previous}' comes before '{key}' (sort with LC_ALL=C)")

    utt_ids = list(tables["utt2spk"])
    for name in ("wav.scp", "text"):
        _check_same_ids(data_dir, "utt2spk", set(utt_ids), name, set(tables[name]))

    utt2spk = tables["utt2spk"]
    for utt_id, speaker in utt2spk.items():
        if not speaker or len(speaker.split()) != 1:
            raise ValueError(f"{data_dir / 'utt2spk'}: utterance '{utt_id}' must have exactly one speaker id")
    _check_speaker_order(utt_ids, utt2spk, str(data_dir / "utt2spk"))

    expected_spk2utt: Dict[str, List[str]] = {}
    for utt_id in utt_ids:
        expected_spk2utt.setdefault(utt2spk[utt_id], []).append(utt_id)
    spk2utt = {speaker: utts.split() for speaker, utts in tables["spk2utt"].items()}
    _check_same_ids(data_dir, "utt2spk", set(expected_spk2utt), "spk2utt", set(spk2utt), kind="speaker ids")
    for speaker, utts in spk2utt.items():
        if utts != expected_spk2utt[speaker]:
            raise ValueError(
                f"{data_dir / 'spk2utt'}: speaker '{speaker}' lists {utts}, but utt2spk gives "
                f"{expected_spk2utt[speaker]} (sorted)"
            )

    if check_wav_files:
        for utt_id, entry in tables["wav.scp"].items():
            wav_file = _file_of_wav_entry(entry)
            if wav_file is not None and not wav_file.is_file():
                raise ValueError(f"{data_dir / 'wav.scp'}: the file of utterance '{utt_id}' does not exist: {entry}")
    return utt_ids


def _check_id(kind: str, value) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{kind} must be a non-empty string without whitespace, got {value!r}")


def _check_text(utt_id: str, text) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"utterance '{utt_id}': text must be a non-empty string, got {text!r}")
    if text != text.strip() or "\n" in text or "\r" in text:
        raise ValueError(f"utterance '{utt_id}': text must be one line without surrounding whitespace: {text!r}")


def _check_record(record: Utterance) -> None:
    _check_id("utterance id", record.utt_id)
    _check_id(f"speaker id of utterance '{record.utt_id}'", record.speaker)
    if not record.utt_id.startswith(record.speaker):
        raise ValueError(
            f"utterance id '{record.utt_id}' must start with its speaker id '{record.speaker}' "
            "(Kaldi needs utterance and speaker orders to agree)"
        )
    if "/" in record.utt_id:
        raise ValueError(f"utterance id '{record.utt_id}' names its wav file and must not contain '/'")
    _check_text(record.utt_id, record.text)
    waveform = record.waveform
    if not isinstance(waveform, np.ndarray) or waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"utterance '{record.utt_id}': waveform must be a non-empty 1-D numpy array")
    if not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(f"utterance '{record.utt_id}': waveform must be float in [-1, 1], got {waveform.dtype}")
    if not np.all(np.isfinite(waveform)):
        raise ValueError(f"utterance '{record.utt_id}': waveform has NaN or infinite samples")
    peak = float(np.abs(waveform).max())
    if peak > 1.0:
        raise ValueError(f"utterance '{record.utt_id}': waveform peak {peak:.3f} is outside [-1, 1]")


def _check_speaker_order(sorted_utt_ids: List[str], utt2spk: Mapping[str, str], where: str) -> None:
    for previous, utt_id in zip(sorted_utt_ids, sorted_utt_ids[1:]):
        if utt2spk[utt_id] < utt2spk[previous]:
            raise ValueError(
                f"{where}: sorted by utterance id it is not sorted by speaker id "
                f"('{previous}' of '{utt2spk[previous]}' comes before '{utt_id}' of '{utt2spk[utt_id]}'); "
                "make speaker ids prefixes of utterance ids, followed by a separator such as '-'"
            )


def _write_table(path: Path, table: Mapping[str, str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")


def _read_table(path: Path, skip_empty_lines: bool = False) -> Dict[str, str]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split(maxsplit=1)
            if not fields:
                if skip_empty_lines:
                    continue
                raise ValueError(f"{path}:{line_number}: empty line")
            key = fields[0]
            if key in table:
                raise ValueError(f"{path}:{line_number}: '{key}' appears more than once")
            table[key] = fields[1].strip() if len(fields) > 1 else ""
    return table


def _check_same_ids(
    data_dir: Path, name_a: str, ids_a: set, name_b: str, ids_b: set, kind: str = "utterance ids"
) -> None:
    if ids_a == ids_b:
        return
    only_a = sorted(ids_a - ids_b)
    only_b = sorted(ids_b - ids_a)
    raise ValueError(
        f"{data_dir}: {name_a} and {name_b} have different {kind}: only in {name_a}: {only_a[:5]}"
        f"{' ...' if len(only_a) > 5 else ''}; only in {name_b}: {only_b[:5]}{' ...' if len(only_b) > 5 else ''}"
    )


def _file_of_wav_entry(entry: str) -> Optional[Path]:
    """The file a ``wav.scp`` entry reads, or None for a piped command."""
    if entry.endswith("|"):
        return None
    path = Path(entry)
    if not path.exists():
        ark_offset = _ARK_OFFSET.match(entry)
        if ark_offset:
            return Path(ark_offset.group(1))
    return path
