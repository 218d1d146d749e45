"""Output directories that a command owns, and files written without touching anyone else's.

Every espnet_prune command that writes a directory (``bin.export --output_dir``,
``bin.lm_prune``, ``bin.convert``, ``bin.pretrain_ssl``, the demo) claims it first with
:func:`claim_output_dir`:

* a directory that does not exist, or an empty one, becomes the command's: it gets a small
  ownership record (:data:`OWNER_FILE`, naming the command);
* a directory that holds the record of the same command is a rerun's and may be written again;
* any other directory with something in it (another ESPnet experiment, a directory another
  command wrote, a user's files) is refused before anything is written, naming the directory
  and what it holds.

Files go through :func:`replace_file`: the content is written to a temporary file beside the
target and renamed over it, so an existing symlink is never written *through* (ESPnet's
``valid.loss.ave.pth`` is a symlink chain to an epoch checkpoint), and a crash never leaves a
half-written file under the final name. A target that is a symlink is refused.
"""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Union

#: The ownership record a command leaves in a directory it claimed.
OWNER_FILE = ".espnet_prune_owner.json"
#: How many of a refused directory's entries the error names.
SHOWN_ENTRIES = 8


class OutputDirError(ValueError):
    """An output directory or file that a command must not write."""


def _entries(directory: Path) -> List[str]:
    return sorted(entry.name for entry in directory.iterdir())


def owner_of(directory: Path) -> Optional[str]:
    """The command recorded in ``directory``'s :data:`OWNER_FILE`, or ``None`` without one."""
    record = directory / OWNER_FILE
    if not record.is_file() or record.is_symlink():
        return None
    try:
        return str(json.loads(record.read_text(encoding="utf-8"))["command"])
    except (ValueError, KeyError, TypeError):
        return None


def check_output_dir(directory: Union[str, Path], command: str, marker: Optional[str] = None) -> Path:
    """Refuse ``directory`` unless ``command`` may write it; writes nothing.

    Args:
        directory: where the command will write.
        command: the command's name, e.g. ``"espnet_prune.bin.export"``; a directory claimed
            by another command is refused.
        marker: a file name that, present in the directory, already proves the command's
            ownership (the demo's ``settings.json``); the ownership record is used otherwise.

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.

    Raises:
        OutputDirError: the path is a file, or a directory with entries that ``command`` did
            not write (named in the message).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputDirError(f"{command}: output directory {directory} exists and is not a directory")
    if not directory.is_dir():
        return directory
    entries = _entries(directory)
    owner = owner_of(directory)
    if not entries or owner == command or (marker is not None and marker in entries and owner is None):
        return directory
    if owner is not None:
        whose = f"it was written by {owner}"
    elif "config.yaml" in entries or any(name.endswith(".pth") for name in entries):
        whose = "it looks like an ESPnet experiment (config.yaml, model files)"
    else:
        whose = f"{command} did not write it"
    shown = ", ".join(entries[:SHOWN_ENTRIES])
    if len(entries) > SHOWN_ENTRIES:
        shown += f" and {len(entries) - SHOWN_ENTRIES} more"
    raise OutputDirError(f"{command}: refusing to write into {directory}: {whose}; it holds {shown}. "
                         "Nothing was written. Choose a new output directory (or remove this one "
                         "yourself if it is really yours to discard).")


def claim_output_dir(directory: Union[str, Path], command: str, marker: Optional[str] = None) -> Path:
    """:func:`check_output_dir`, then create ``directory`` and record ``command`` as its owner
    (unless ``marker`` stands for the record)."""
    directory = check_output_dir(directory, command, marker)
    directory.mkdir(parents=True, exist_ok=True)
    if marker is None and owner_of(directory) != command:
        with replace_file(directory / OWNER_FILE, "w") as f:
            json.dump({"command": command}, f)
            f.write("\n")
    return directory


def refuse_symlink(path: Union[str, Path]) -> Path:
    """``path``, or :class:`OutputDirError` if it is a symlink (writing it would change the file it
    points to); for files a library writes by name (ONNX export)."""
    path = Path(path)
    if path.is_symlink():
        raise OutputDirError(f"refusing to write {path}: it is a symlink (to {os.readlink(path)}), "
                             "and writing it would change the file it points to")
    return path


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextmanager
def replace_file(path: Union[str, Path], mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    ``path`` itself is replaced, never a file it links to; a ``path`` that is a symlink is
    refused (:class:`OutputDirError`). On an exception the temporary file is removed and
    ``path`` is left as it was.

    Example::

        with replace_file(output_dir / "model.pth") as f:
            torch.save(state, f)
    """
    path = refuse_symlink(path)
    if path.is_dir():
        raise OutputDirError(f"refusing to write {path}: it is a directory")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
