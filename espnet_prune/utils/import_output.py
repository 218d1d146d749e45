"""Keep the launcher's stdout for the program it runs: import-time prints go to stderr.

Some modules print when they are imported; ESPnet's Transformer attention module prints
``Failed to import Flash Attention, using ESPnet default: ...`` to stdout. ``asr.sh`` and
``slu.sh`` paste the stdout of some tools into files (stage 13 pipes
``espnet2.bin.tokenize_text --output -`` into ``ref.trn``/``hyp.trn``), so one such line
shifts every utterance id there.

The redirection works on file descriptor 1, not on ``sys.stdout``: ESPnet binds
``sys.stdout`` at import time (``AbsTask.print_config(cls, file=sys.stdout)``), so replacing
the Python object during imports would send the program's own output to stderr later.
:func:`stdout_to_stderr` points fd 1 at stderr for a block (flushing Python's buffer on
entry and exit, so earlier output stays on stdout, in order); :func:`send_import_output_to_stderr`
wraps every ``import`` statement of the process in it, except imports of modules that are
already loaded. (A program that prints from one thread while another thread imports a new
module would see that print on stderr; ESPnet's tools print from one thread.)
"""

import builtins
import contextlib
import os
import sys

_original_import = builtins.__import__


@contextlib.contextmanager
def stdout_to_stderr():
    """Inside the block, everything written to file descriptor 1 goes to stderr."""
    stream = sys.stdout
    if stream is None:
        yield
        return
    stream.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        stream.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _already_loaded(name: str, fromlist, level: int) -> bool:
    if level or name not in sys.modules:
        return False
    module = sys.modules[name]
    return not fromlist or all(item == "*" or hasattr(module, item) for item in fromlist)


def _import_with_stdout_on_stderr(name, globals=None, locals=None, fromlist=(), level=0):
    if _already_loaded(name, fromlist, level):
        return _original_import(name, globals, locals, fromlist, level)
    with stdout_to_stderr():
        return _original_import(name, globals, locals, fromlist, level)


def send_import_output_to_stderr() -> None:
    """From now on, what modules print while being imported goes to stderr (idempotent)."""
    builtins.__import__ = _import_with_stdout_on_stderr
