"""A ``python3``-like launcher that registers espnet_prune with ESPnet first.

``python -m espnet_prune -m espnet2.bin.asr_train ARGS`` behaves like
``python3 -m espnet2.bin.asr_train ARGS`` with the plugin's classes registered, so
ESPnet's recipes use it unchanged through ``--python "python3 -m espnet_prune"``.
Supported forms: ``-m MODULE ARGS``, ``-c CODE ARGS`` and ``SCRIPT.py ARGS``; value-less
interpreter flags before them (``-u``, ``-B``, ...) are accepted and ignored. Processes
that a ``-m`` program spawns with ``multiprocessing`` (ESPnet's multi-GPU training) get
the plugin registered as well. What modules print while being imported (ESPnet's
Flash-Attention notice, for one) goes to stderr, so the program's stdout is exactly what it
would be under ``python3`` (asr.sh pastes some tools' stdout into score files).

ESPnet tools that the plugin extends run as the plugin's versions (:data:`EXTENDED_TOOLS`):
``-m espnet2.bin.asr_inference`` runs :mod:`espnet_prune.bin.asr_inference`, which takes every
option of ESPnet's and one more (``ctc_greedy``), and without it is ESPnet's tool.

``python -m espnet_prune --check`` checks the environment instead (see
:mod:`espnet_prune.bin.check_env`).
"""

import importlib.util
import runpy
import sys

#: ESPnet module -> the plugin's module run in its place (a superset of its options).
EXTENDED_TOOLS = {"espnet2.bin.asr_inference": "espnet_prune.bin.asr_inference"}

USAGE = "usage: python -m espnet_prune (-m MODULE | -c CODE | SCRIPT) [ARGS ...]  |  python -m espnet_prune --check"


def module_spec(name: str):
    """The spec of module ``name`` for ``-m``, as ``python3 -m`` finds it (a package runs its
    ``__main__``); exits with python3's one-line message where there is none: ``No module named
    no.such.module`` also when a parent package is missing or is a module, and the import error
    when importing a parent package fails for another reason."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            package, spec = name, importlib.util.find_spec(f"{name}.__main__")
            if spec is None:
                sys.exit(f"espnet_prune: No module named {name}.__main__; '{package}' is a package and cannot be "
                         "directly executed")
    except ModuleNotFoundError as error:
        if error.name is not None and name != error.name and not name.startswith(f"{error.name}."):
            # A parent package was found but importing it failed on something else.
            sys.exit(f"espnet_prune: Error while finding module specification for '{name}' "
                     f"({type(error).__name__}: {error})")
        spec = None
    except ImportError as error:
        sys.exit(f"espnet_prune: Error while finding module specification for '{name}' "
                 f"({type(error).__name__}: {error})")
    if spec is None:
        sys.exit(f"espnet_prune: No module named {name}")
    return spec


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Interpreter options that take no value are harmless to skip (e.g. "-u" in cmd.sh).
    while argv and argv[0] in ("-u", "-B", "-O", "-OO", "-s", "-E", "-I"):
        argv.pop(0)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        sys.exit(0 if argv else 2)

    if argv[0] == "--check":
        from espnet_prune.bin.check_env import main as check_env

        sys.exit(check_env(argv[1:]))

    # Bad invocations fail before register() spends seconds importing ESPnet's tasks.
    if argv[0] == "-m" and len(argv) < 2:
        sys.exit("espnet_prune: -m needs a module name\n" + USAGE)
    if argv[0] == "-c" and len(argv) < 2:
        sys.exit("espnet_prune: -c needs code\n" + USAGE)
    if argv[0].startswith("-") and argv[0] not in ("-m", "-c"):
        sys.exit(f"espnet_prune: unsupported interpreter option '{argv[0]}'\n" + USAGE)

    from espnet_prune import register
    from espnet_prune.utils.import_output import send_import_output_to_stderr, stdout_to_stderr

    send_import_output_to_stderr()
    with stdout_to_stderr():
        register()
    if argv[0] == "-m":
        # Keep this launcher as sys.modules["__main__"], named after espnet_prune.spawn_main:
        # processes spawned by the program (ESPnet's DDP workers) import that module first,
        # which registers the plugin there too.
        module = EXTENDED_TOOLS.get(argv[1], argv[1])
        target = module_spec(module)
        sys.modules["__main__"].__spec__ = importlib.util.find_spec("espnet_prune.spawn_main")
        sys.argv = [target.origin] + argv[2:]  # like python3 -m: argv[0] is the module's file
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    elif argv[0] == "-c":
        sys.argv = ["-c"] + argv[2:]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
