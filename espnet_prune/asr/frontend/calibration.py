"""Speech for calibrating (and checking) static int8 quantization of the frontend.

A calibration source is a string:

* ``synth:N`` -- N utterances synthesised offline with eSpeak NG
  (:func:`synthesized_speech`): sentences of the demo's templates, each spoken by another
  eSpeak voice variant at its own rate and pitch. Nothing is downloaded.
* a path to a Kaldi ``wav.scp`` (``utt_id path`` or ``utt_id command |`` lines, read with
  ESPnet's ``SoundScpReader``) -- the user's own speech, e.g. ``data/train/wav.scp``.

:func:`calibration_speech` reads either. :func:`held_out_speech` synthesises other sentences
with other voices: the speech the int8 model is checked on is never what it was calibrated on.
"""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: Default calibration source of the deploy path (export ``--calibration``, benchmark_deploy).
DEFAULT_CALIBRATION = "synth:16"
#: Speaking rates (words per minute) and pitches the synthesised utterances are drawn from.
RATE_RANGE = (130, 220)
PITCH_RANGE = (20, 80)


def synthesized_speech(count: int, sample_rate: int = 16000, seed: int = 0,
                       exclude_voices: Sequence[str] = ()) -> Tuple[List[np.ndarray], List[str]]:
    """``count`` utterances of the demo's sentence templates, synthesised with eSpeak NG.

    Args:
        count: number of utterances (at least 1).
        sample_rate: of the waveforms.
        seed: sentences, voices, rates and pitches follow from it.
        exclude_voices: eSpeak variants not to use (the held-out set avoids the calibration's).
    Returns:
        ``(waveforms, voices)``: ``(samples,)`` float32 waveforms, and the variants that spoke them.
    """
    from espnet_prune.demo.corpus import draw_sentences
    from espnet_prune.utils.espeak import synthesize

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of synthesised utterances must be a positive int, got {count!r}")
    rng = np.random.default_rng(seed)
    voices = _voice_order(rng, exclude_voices)
    waveforms, used = [], []
    for index, (_, words) in enumerate(draw_sentences(rng, count, unique=True)):
        voice = voices[index % len(voices)]
        waveforms.append(synthesize(words, variant=voice, rate_wpm=int(rng.integers(*RATE_RANGE)),
                                    pitch=int(rng.integers(*PITCH_RANGE)), sample_rate=sample_rate))
        used.append(voice)
    return waveforms, used


def _voice_order(rng: np.random.Generator, exclude_voices: Sequence[str] = ()) -> List[str]:
    """The eSpeak variants in the order :func:`synthesized_speech` gives them to utterances."""
    from espnet_prune.utils.espeak import list_variants

    pool = [variant for variant in list_variants() if variant not in set(exclude_voices)]
    return [pool[int(i)] for i in rng.permutation(len(pool))]


def wav_scp_speech(path: Path, sample_rate: int, limit: Optional[int] = None) -> List[np.ndarray]:
    """The waveforms of a Kaldi ``wav.scp`` (the first ``limit`` entries), mono float32.

    Raises:
        ValueError: the file is missing or empty, or an entry has another sample rate.
    """
    from espnet2.fileio.sound_scp import SoundScpReader

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"calibration source {path} is neither 'synth:N' nor an existing wav.scp file")
    reader = SoundScpReader(str(path), dtype="float32", always_2d=False)
    waveforms = []
    for key in list(reader.keys())[:limit]:
        rate, waveform = reader[key]
        if rate != sample_rate:
            raise ValueError(f"{path}: utterance {key} has sample rate {rate}, the model takes {sample_rate} "
                             "(resample the data first, as asr.sh's stage 3 does)")
        waveforms.append(np.asarray(waveform, dtype=np.float32).reshape(len(waveform), -1)[:, 0])
    if not waveforms:
        raise ValueError(f"calibration source {path} lists no utterances")
    return waveforms


def calibration_speech(source: str, sample_rate: int = 16000) -> List[np.ndarray]:
    """The waveforms of a calibration source (module docstring): ``synth:N`` or a ``wav.scp``."""
    if source.startswith("synth:"):
        count = source[len("synth:"):]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"calibration source {source!r}: expected synth:N with N a positive integer")
        return synthesized_speech(int(count), sample_rate)[0]
    return wav_scp_speech(Path(source), sample_rate)


def held_out_speech(seconds: float, sample_rate: int = 16000, calibration_count: int = 16) -> np.ndarray:
    """``seconds`` of synthesised speech in voices that ``synth:<calibration_count>`` does not use
    (utterances of seeds 1, 2, ..., joined and cut to length). ``(samples,)`` float32."""
    calibration_voices = _voice_order(np.random.default_rng(0))[:calibration_count]
    samples = int(seconds * sample_rate)
    pieces, total, seed = [], 0, 1
    while total < samples:
        waveforms, _ = synthesized_speech(4, sample_rate, seed=seed, exclude_voices=calibration_voices)
        pieces += waveforms
        total += sum(w.size for w in waveforms)
        seed += 1
    return np.concatenate(pieces)[:samples].astype(np.float32)
