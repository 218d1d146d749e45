"""A generic step scheduler: steps with dependencies, run side by side in lanes, skipped when done.

:class:`Step` is a unit of work with the steps it needs and a marker file; :func:`run_steps`
runs them in dependency order, up to ``lanes`` at a time, lower ``priority`` first, skipping a
step whose marker exists and writing the marker when it succeeds; :class:`Progress` prints
timed progress lines. Nothing here knows about ESPnet or the demo's stages.
"""

import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from espnet_prune.demo.settings import DemoError

#: ``priority`` of the LM's steps (statistics, training, perplexity, pruning): one serial chain of
#: ~9 min that must not wait for the fine-tunings, which are many and fill every lane; started
#: first, it runs in one lane beside them (measured: at priority 1, behind the fine-tunings, the
#: default demo's LM training had not started at minute 11).
SERIAL_PRIORITY = -1


@dataclass
class Step:
    """A unit of work: ``action()`` returns a one-line summary for the progress log.

    ``stage`` is the asr.sh stage number it belongs to (or a name for the demo's own steps);
    ``after`` names the steps it needs; ``marker`` is written when it succeeds and, when it
    exists already, makes a rerun skip the step. Of the steps ready to run, those of lower
    ``priority`` start first (:data:`SERIAL_PRIORITY`).
    """

    name: str
    stage: str
    action: Callable[[], str]
    after: Tuple[str, ...] = ()
    marker: Optional[Path] = None
    priority: int = 0


class Progress:
    """Progress lines ``[mm:ss] stage N  name: ...`` on ``stream``, safe from several threads."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        with self._lock:
            self.stream.write(f"[{minutes:3d}:{seconds:02d}] {text}\n")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def run_steps(steps: Sequence[Step], lanes: int, progress: Progress) -> None:
    """Run ``steps`` in dependency order, up to ``lanes`` at a time, in list order within a priority.

    Raises:
        DemoError: a step failed (after the running ones finish), or ``after`` names an unknown
            step or forms a cycle.
    """
    by_name = {step.name: step for step in steps}
    for step in steps:
        unknown = [name for name in step.after if name not in by_name]
        if unknown:
            raise DemoError(f"step '{step.name}' runs after unknown step(s) {unknown}")
    pending = list(steps)
    done: set = set()
    running: Dict[Future, Tuple[Step, float]] = {}
    failures: List[str] = []

    def label(step: Step) -> str:
        return f"stage {step.stage:<6} {step.name}"

    def start_ready(pool: ThreadPoolExecutor) -> None:
        """Skip finished steps and start ready ones while lanes are free (a skip can ready others)."""
        progressed = True
        while progressed and not failures:
            progressed = False
            for step in sorted(pending, key=lambda step: step.priority):
                if len(running) >= lanes:
                    return
                if not all(name in done for name in step.after):
                    continue
                pending.remove(step)
                progressed = True
                if step.marker is not None and step.marker.exists():
                    progress.say(f"{label(step)}: done before, skipped ({step.marker.parent})")
                    done.add(step.name)
                    continue
                progress.say(f"{label(step)}: started")
                running[pool.submit(step.action)] = (step, time.monotonic())

    with ThreadPoolExecutor(max_workers=lanes) as pool:
        while pending or running:
            start_ready(pool)
            if not running:
                if pending and not failures:
                    raise DemoError(f"steps {[step.name for step in pending]} wait for each other (a cycle)")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                step, started = running.pop(future)
                took = format_seconds(time.monotonic() - started)
                error = future.exception()
                if error is not None:
                    progress.say(f"{label(step)}: FAILED after {took}")
                    failures.append(f"{step.name}: {error}")
                    continue
                summary = future.result()
                if step.marker is not None:
                    step.marker.parent.mkdir(parents=True, exist_ok=True)
                    step.marker.write_text(summary + "\n", encoding="utf-8")
                done.add(step.name)
                progress.say(f"{label(step)}: done in {took}" + (f" -- {summary}" if summary else ""))
    if failures:
        raise DemoError("\n\n".join(failures))
