"""A stand-in for :class:`espnet_prune.demo.steps.Progress` that keeps its lines (for the demo's tests)."""

import time


class Recorder:
    """Progress that keeps its lines."""

    def __init__(self):
        self.lines = []
        self.stream = self
        self.start = time.monotonic()

    def say(self, text):
        self.lines.append(text)

    def elapsed(self):
        return time.monotonic() - self.start
