"""``python -m espnet_prune --check``: does this Python environment run espnet_prune?

Loads every piece the plugin and ESPnet's recipe stages need (torchaudio's compiled
extension, ESPnet's ASR/SLU/LM tasks, s3prl, kaldiio, the eSpeak NG library, ...), prints one
line per piece with its installed version, and compares the versions with the tested lock
(``espnet_prune/constraints.txt``). It exits 1 when a required piece does not load, naming
the package and the fix; optional pieces are reported as such and never fail the check.

Output (stdout), one line per piece, then a summary line::

    ok        torch             2.12.1
    FAIL      torchaudio        2.11.1  OSError: ... (fix: pip install torchaudio==2.11.0 ...)
    missing   onnxruntime       -       optional: ONNX export (pip install onnxruntime)
"""

import argparse
import ctypes
import importlib
import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from espnet_prune.utils.import_output import stdout_to_stderr

#: The lock: every package of the tested environment, pinned (``make lock`` writes it).
CONSTRAINTS_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"


def read_constraints(path: Path = CONSTRAINTS_FILE) -> Dict[str, str]:
    """``{normalised distribution name: version}`` of the ``name==version`` lines of ``path``."""
    pins: Dict[str, str] = {}
    if not path.is_file():
        return pins
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalise(name)] = version.split(";", 1)[0].strip()
    return pins


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _load_torchaudio_extension() -> str:
    import torchaudio._extension as extension

    if not extension._IS_TORCHAUDIO_EXT_AVAILABLE:
        raise ImportError("torchaudio was built without its compiled extension (libtorchaudio)")
    return "compiled extension loaded"


def _load_espnet_tasks() -> str:
    for task in ("asr", "slu", "lm"):
        importlib.import_module(f"espnet2.tasks.{task}")
    return "espnet2.tasks.asr, slu, lm import"


def _load_s3prl() -> str:
    importlib.import_module("s3prl.nn")
    return "s3prl.nn imports"


def _load_espeak() -> str:
    import espeakng_loader

    ctypes.CDLL(espeakng_loader.get_library_path())
    variants = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return f"libespeak-ng loaded, {len(list(variants.iterdir()))} voice variants"


def _import(module: str) -> Callable[[], str]:
    def load() -> str:
        importlib.import_module(module)
        return ""

    return load


def _find_sclite() -> str:
    candidates = [shutil.which("sclite")]
    if os.environ.get("ESPNET_ROOT"):
        candidates.append(str(Path(os.environ["ESPNET_ROOT"]) / "tools" / "sctk" / "bin" / "sclite"))
    candidates.append("/usr/lib/sctk/bin/sclite")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("sclite is not on PATH, in $ESPNET_ROOT/tools/sctk/bin or in /usr/lib/sctk/bin")


@dataclass(frozen=True)
class Piece:
    """One thing the environment must (or may) provide."""

    name: str  #: what the line is called
    distribution: Optional[str]  #: pip distribution whose version is shown (None: not a pip package)
    load: Callable[[], str]  #: loads it; returns a detail, raises when it does not load
    required: bool
    needed_for: str  #: shown when an optional piece is missing
    fix: str = ""  #: how to install it when it is missing


PIECES: List[Piece] = [
    Piece("torch", "torch", _import("torch"), True, "everything"),
    Piece("torchaudio", "torchaudio", _load_torchaudio_extension, True, "ESPnet's audio front ends"),
    Piece("espnet", "espnet", _load_espnet_tasks, True, "everything"),
    Piece("s3prl", "espnet-s3prl", _load_s3prl, True, "ESPnet's s3prl frontend",
          "pip uninstall -y s3prl; pip install espnet-s3prl"),
    Piece("kaldiio", "kaldiio", _import("kaldiio"), True, "Kaldi data directories"),
    Piece("eSpeak NG", "espeakng-loader", _load_espeak, True, "offline speech for the demo and tests"),
    Piece("resampy", "resampy", _import("resampy"), True, "ESPnet recipe stage 3 (format_wav_scp.py)"),
    Piece("pandas", "pandas", _import("pandas"), True, "slu.sh stage 13 (score_intent.py)"),
    Piece("espnet_model_zoo", "espnet_model_zoo", _import("espnet_model_zoo.downloader"), True,
          "Speech2Text.from_pretrained(<packed zip>)"),
    Piece("transformers", "transformers", _import("transformers"), False,
          "loading Hugging Face checkpoints and the equivalence tests", "pip install transformers"),
    Piece("onnxruntime", "onnxruntime", _import("onnxruntime"), False,
          "export --onnx and the ONNX frontend", "pip install 'espnet_prune[deploy]'"),
    Piece("onnx", "onnx", _import("onnx"), False, "export --onnx", "pip install 'espnet_prune[deploy]'"),
    Piece("sclite", None, _find_sclite, False, "asr.sh/slu.sh stage 13 scoring",
          "apt-get install sctk (puts sclite in /usr/lib/sctk/bin), or ESPnet's tools/installers/install_sctk.sh"),
]


def _version(distribution: Optional[str]) -> str:
    if distribution is None:
        return "-"
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _fix(piece: Piece, installed: str, pins: Dict[str, str], torch_version: str) -> str:
    tested = pins.get(_normalise(piece.distribution)) if piece.distribution else None
    if piece.name == "torchaudio" and tested and installed != tested:
        return (f"torchaudio {installed} does not load with torch {torch_version}: "
                f"install torchaudio=={tested} (the tested version; pip install -c {CONSTRAINTS_FILE} ...)")
    if tested and installed != tested:
        return f"install {piece.distribution}=={tested}, the tested version (pip install -c {CONSTRAINTS_FILE} ...)"
    if piece.fix:
        return piece.fix
    if piece.distribution:
        return f"pip install {piece.distribution}" + (f"=={tested}" if tested else "")
    return ""


def check(pieces: Optional[List[Piece]] = None, pins: Optional[Dict[str, str]] = None, out=None) -> int:
    """Load every piece (default :data:`PIECES`), print one line each and a summary on ``out``
    (default stdout); returns the number of required pieces that failed."""
    pieces = PIECES if pieces is None else pieces
    pins = read_constraints() if pins is None else pins
    out = sys.stdout if out is None else out
    torch_version = _version("torch")
    problems: List[str] = []
    for piece in pieces:
        installed = _version(piece.distribution)
        try:
            with stdout_to_stderr():
                detail = piece.load()
        except Exception as error:  # noqa: BLE001 - any failure to load is what we report
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            fix = _fix(piece, installed, pins, torch_version)
            if piece.required:
                status = "FAIL"
                problems.append(f"{piece.name}: {fix or message}")
                detail = f"{message} (fix: {fix})" if fix else message
            else:
                status = "missing"
                detail = f"optional, for {piece.needed_for}: {message}" + (f" (install: {fix})" if fix else "")
        else:
            status = "ok"
            tested = pins.get(_normalise(piece.distribution)) if piece.distribution else None
            if tested and tested != installed:
                detail = f"{detail}; tested with {tested}".lstrip("; ")
        print(f"{status:9s} {piece.name:16s} {installed:12s} {detail}".rstrip(), file=out, flush=True)
    if problems:
        print(f"espnet_prune --check: {len(problems)} problem(s): " + "; ".join(problems), file=out)
    else:
        print(f"espnet_prune --check: ok (Python {sys.version.split()[0]}, {sys.executable})", file=out)
    return len(problems)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_prune --check", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def main(argv=None) -> int:
    get_parser().parse_args(argv)
    return 1 if check() else 0


if __name__ == "__main__":
    sys.exit(main())
