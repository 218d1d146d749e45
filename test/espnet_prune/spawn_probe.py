"""Run through the launcher: reports whether a process started the way ESPnet's DDP starts
its workers (multiprocessing "spawn") sees the plugin's registry entries."""

import multiprocessing
import sys


def registered() -> bool:
    import espnet2.tasks.asr

    return "pruned_ssl" in espnet2.tasks.asr.frontend_choices.classes


def report(queue) -> None:
    queue.put(registered())


def main() -> None:
    # Like ESPnet's worker function, the target lives in an importable module (not "__main__").
    from test.espnet_prune import spawn_probe

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=spawn_probe.report, args=(queue,))
    child.start()
    child_sees_registry = queue.get(timeout=300)
    child.join()
    print(f"parent={registered()} child={child_sees_registry} argv={sys.argv[1:]}")


if __name__ == "__main__":
    main()
