"""Offline, reproducible speech synthesis with eSpeak NG, for test and demo corpora.

The eSpeak NG library and its data (voices, 104 voice variants in ``voices/!v/``) come from
the ``espeakng-loader`` wheel (``pip install espeakng-loader``, part of ``espnet_prune[test]``);
nothing is downloaded at run time.

Each call of :func:`synthesize` runs eSpeak in a new, short-lived process
(:mod:`espnet_prune.utils.espeak_worker`, ~20 ms to start). eSpeak keeps synthesiser state
in process-global C statics that no API call resets, so repeated synthesis inside one
process is not reproducible; a fresh process is. This also makes :func:`synthesize` safe to
call from several threads at once and keeps eSpeak's global state out of this process,
where another user of the library (e.g. a phonemizer) may have initialised it differently.

Example::

    wave = synthesize("turn on the light", variant="m3", rate_wpm=160)  # float32, 16 kHz
"""

import functools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from scipy.signal import resample_poly

from espnet_prune.utils import espeak_worker

RATE_WPM_RANGE = (80, 450)  # what eSpeak NG accepts for espeakRATE
PITCH_RANGE = (0, 100)  # espeakPITCH; 50 is the voice's normal pitch
_WORKER_TIMEOUT_S = 60.0


@functools.lru_cache(maxsize=1)
def _espeak_paths() -> Tuple[str, str]:
    """``(library_path, data_path)`` of the eSpeak NG shipped by ``espeakng-loader``."""
    try:
        import espeakng_loader
    except ImportError as error:
        raise ImportError(
            "espnet_prune.utils.espeak needs the 'espeakng-loader' package "
            "(pip install espeakng-loader, or pip install 'espnet_prune[test]')"
        ) from error
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@functools.lru_cache(maxsize=1)
def _variant_names() -> Tuple[str, ...]:
    variant_dir = Path(_espeak_paths()[1]) / "voices" / "!v"
    return tuple(sorted(path.name for path in variant_dir.iterdir() if path.is_file()))


def list_variants() -> List[str]:
    """Names of the voice variants that :func:`synthesize` accepts, sorted.

    These are the file names in eSpeak's ``voices/!v/`` directory (e.g. ``"f2"``, ``"m3"``,
    ``"klatt"``, ``"whisper"``); names are case-sensitive and one (``"Mr serious"``) has a
    space. Each variant changes a base voice's formants, pitch range, breathiness, etc.
    """
    return list(_variant_names())


def synthesize(
    text: str,
    variant: Optional[str] = None,
    rate_wpm: int = 175,
    pitch: int = 50,
    sample_rate: int = 16000,
    language: str = "en-us",
) -> np.ndarray:
    """Speak ``text`` with eSpeak NG and return the waveform.

    The result depends only on the arguments: equal arguments give identical samples.

    Args:
        text: what to say, read literally (no SSML or phoneme markup). Must contain a
            non-space character.
        variant: voice variant from :func:`list_variants`, or None for the plain voice.
        rate_wpm: speaking rate in words per minute, 80..450 (eSpeak's default is 175).
        pitch: base pitch, 0..100; 50 is the voice's normal pitch.
        sample_rate: sample rate of the result in Hz; eSpeak's native 22050 Hz audio is
            resampled with a polyphase filter.
        language: eSpeak voice (language) name the variant is applied to, e.g. ``"en-us"``,
            ``"en"`` (British English), ``"de"``.

    Returns:
        ``(num_samples,)`` float32 waveform in [-1, 1] at ``sample_rate``, including the
        short silences eSpeak puts around the speech.

    Raises:
        ValueError: empty text, unknown variant or language, or a parameter out of range.
        ImportError: ``espeakng-loader`` is not installed.
        RuntimeError: eSpeak failed (the message carries eSpeak's error output).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text to synthesise must be a non-empty string, got {text!r}")
    if "\0" in text:
        raise ValueError("text to synthesise must not contain NUL characters")
    if variant is not None and variant not in _variant_names():
        raise ValueError(f"unknown eSpeak voice variant '{variant}'; available: {', '.join(_variant_names())}")
    if not language or "+" in language or any(ch.isspace() for ch in language):
        raise ValueError(f"language must be an eSpeak voice name such as 'en-us', got {language!r}")
    _check_int_range("rate_wpm", rate_wpm, RATE_WPM_RANGE)
    _check_int_range("pitch", pitch, PITCH_RANGE)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")

    voice = language if variant is None else f"{language}+{variant}"
    native_rate, pcm = _run_worker({"voice": voice, "text": text, "rate_wpm": rate_wpm, "pitch": pitch})
    waveform = pcm.astype(np.float32) / 32768.0
    if sample_rate != native_rate:
        common = math.gcd(sample_rate, native_rate)
        waveform = resample_poly(waveform, sample_rate // common, native_rate // common)
        # The anti-aliasing filter can overshoot slightly near full scale.
        waveform = np.clip(waveform, -1.0, 1.0)
    return waveform.astype(np.float32)


def _check_int_range(name: str, value, bounds: Tuple[int, int]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _run_worker(request: dict) -> Tuple[int, np.ndarray]:
    """Run one synthesis in a fresh worker process; return ``(native_rate, int16 samples)``."""
    library_path, data_path = _espeak_paths()
    # -I: ignore PYTHON* variables and user site; -S: skip site-packages (stdlib-only worker).
    command = [sys.executable, "-I", "-S", espeak_worker.__file__, library_path, data_path]
    completed = subprocess.run(
        command, input=json.dumps(request).encode("utf-8"), capture_output=True, timeout=_WORKER_TIMEOUT_S
    )
    message = completed.stderr.decode("utf-8", errors="replace").strip()
    if completed.returncode == espeak_worker.EXIT_VOICE_NOT_FOUND:
        raise ValueError(f"unknown eSpeak voice '{request['voice']}': {message}")
    if completed.returncode != 0:
        raise RuntimeError(f"eSpeak NG worker failed (exit status {completed.returncode}): {message}")
    if len(completed.stdout) < 4 or (len(completed.stdout) - 4) % 2:
        raise RuntimeError(f"eSpeak NG worker returned {len(completed.stdout)} bytes, not a rate and 16-bit samples")
    (native_rate,) = np.frombuffer(completed.stdout[:4], dtype="<i4")
    pcm = np.frombuffer(completed.stdout[4:], dtype=np.int16)
    if pcm.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {request['text']!r}")
    return int(native_rate), pcm
