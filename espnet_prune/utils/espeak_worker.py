"""Child-process half of :mod:`espnet_prune.utils.espeak`: one eSpeak NG synthesis per process.

eSpeak NG keeps its synthesiser state (pitch/flutter phase, wave generator buffers, ...) in
process-global C statics that neither a new ``espeak_Synth`` nor ``espeak_Terminate`` +
``espeak_Initialize`` puts back: the same sentence synthesised twice in one process gives
different samples (and even different lengths). The first synthesis in a fresh process is
reproducible, so :func:`espnet_prune.utils.espeak.synthesize` runs every request in a new
process running this file. It imports only the standard library, so the parent can start it
as ``python -I -S espeak_worker.py`` in about 20 ms.

Protocol (argv, stdin, stdout, exit status):

- ``argv[1:] = [library_path, data_path]``: the eSpeak NG shared library and its
  ``espeak-ng-data`` directory;
- stdin: one JSON object ``{"voice": "en-us+m3", "text": "...", "rate_wpm": 175, "pitch": 50}``;
- stdout: the native sample rate as a 4-byte little-endian int, then the samples as 16-bit
  signed integers in native byte order (the parent runs on the same machine);
- exit status 0 on success, :data:`EXIT_VOICE_NOT_FOUND` when eSpeak does not know the voice,
  :data:`EXIT_SYNTHESIS_FAILED` for any other failure; the reason is written to stderr.
"""

import ctypes
import json
import struct
import sys
from typing import List

EXIT_SYNTHESIS_FAILED = 1
EXIT_VOICE_NOT_FOUND = 3

# Constants of eSpeak NG's C API (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when data is missing
_EE_OK = 0
_EE_NOT_FOUND = 2
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

# int callback(short *wav, int numsamples, espeak_EVENT *events); 0 = go on, 1 = abort.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SynthesisError(RuntimeError):
    """eSpeak NG failed; ``exit_status`` is what the worker process exits with."""

    def __init__(self, message: str, exit_status: int = EXIT_SYNTHESIS_FAILED):
        super().__init__(message)
        self.exit_status = exit_status


def _bind(library_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(library_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    return lib


def synthesize_pcm(library_path: str, data_path: str, voice: str, text: str, rate_wpm: int, pitch: int):
    """Synthesise ``text`` once with a freshly initialised eSpeak NG.

    Call this at most once per process (see the module docstring).

    Args:
        library_path: path of ``libespeak-ng.so``.
        data_path: path of the ``espeak-ng-data`` directory.
        voice: eSpeak voice name, optionally with a variant: ``"en-us"``, ``"en-us+m3"``.
        text: UTF-8 text, spoken literally (no SSML, no ``[[phoneme]]`` input).
        rate_wpm: speaking rate in words per minute (eSpeak accepts 80..450).
        pitch: base pitch, 0..100 (50 is the voice's normal pitch).

    Returns:
        ``(sample_rate, pcm)``: eSpeak's native sample rate in Hz (22050) and the speech as
        bytes of 16-bit signed samples in native byte order.

    Raises:
        SynthesisError: eSpeak could not start, does not know ``voice``, or failed to speak.
    """
    lib = _bind(library_path)
    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
    if sample_rate <= 0:
        raise SynthesisError(f"espeak_Initialize failed (returned {sample_rate}) with data path {data_path}")

    chunks: List[bytes] = []

    def collect(wav, num_samples, events):
        if wav and num_samples > 0:
            chunks.append(ctypes.string_at(wav, num_samples * ctypes.sizeof(ctypes.c_short)))
        return 0

    callback = _SynthCallback(collect)  # kept referenced until synthesis is over
    lib.espeak_SetSynthCallback(callback)

    status = lib.espeak_SetVoiceByName(voice.encode())
    if status == _EE_NOT_FOUND:
        raise SynthesisError(f"eSpeak NG has no voice named '{voice}'", EXIT_VOICE_NOT_FOUND)
    if status != _EE_OK:
        raise SynthesisError(f"espeak_SetVoiceByName('{voice}') failed with status {status}")
    for parameter, value in ((_ESPEAK_RATE, rate_wpm), (_ESPEAK_PITCH, pitch)):
        status = lib.espeak_SetParameter(parameter, value, 0)
        if status != _EE_OK:
            raise SynthesisError(f"espeak_SetParameter({parameter}, {value}) failed with status {status}")
    lib.espeak_ng_SetRandSeed(0)  # breath/noise sources draw from eSpeak's own generator

    encoded = text.encode("utf-8") + b"\0"
    status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if status != _EE_OK:
        raise SynthesisError(f"espeak_Synth failed with status {status}")
    status = lib.espeak_Synchronize()
    if status != _EE_OK:
        raise SynthesisError(f"espeak_Synchronize failed with status {status}")
    return sample_rate, b"".join(chunks)


def main(argv: List[str]) -> int:
    """Run one request as described in the module docstring; return the exit status."""
    if len(argv) != 2:
        sys.stderr.write("usage: espeak_worker.py LIBRARY_PATH DATA_PATH < request.json\n")
        return EXIT_SYNTHESIS_FAILED
    library_path, data_path = argv
    request = json.load(sys.stdin)
    try:
        sample_rate, pcm = synthesize_pcm(
            library_path, data_path, request["voice"], request["text"], request["rate_wpm"], request["pitch"]
        )
    except SynthesisError as error:
        sys.stderr.write(f"{error}\n")
        return error.exit_status
    sys.stdout.buffer.write(struct.pack("<i", sample_rate))
    sys.stdout.buffer.write(pcm)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
