"""The step scheduler: order, lanes, priorities, markers, failures."""

import threading
import time

import pytest

from espnet_prune.demo.settings import DemoError
from espnet_prune.demo.steps import Step, run_steps
from test.espnet_prune.demo.recorder import Recorder


def test_steps_run_after_their_dependencies_and_at_most_lanes_at_a_time():
    events, lock = [], threading.Lock()
    running = [0]
    peak = [0]

    def work(name):
        def action():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                events.append(("start", name))
            time.sleep(0.05)
            with lock:
                running[0] -= 1
                events.append(("end", name))
            return f"{name} ok"
        return action

    steps = [Step("a", "1", work("a")), Step("b", "2", work("b"), after=("a",)),
             Step("c", "2", work("c"), after=("a",)), Step("d", "3", work("d"), after=("b", "c")),
             Step("e", "9", work("e"))]
    recorder = Recorder()
    run_steps(steps, lanes=2, progress=recorder)
    order = [name for kind, name in events if kind == "end"]
    assert set(order) == set("abcde") and peak[0] == 2
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert events.index(("end", before)) < events.index(("start", after))
    assert any("stage 3      d: done in" in line and "-- d ok" in line for line in recorder.lines)


def test_lower_priority_numbers_start_first():
    order = []
    steps = [Step("lm", "6", lambda: order.append("lm") or "", priority=1),
             Step("asr", "10", lambda: order.append("asr") or "", priority=0)]
    run_steps(steps, lanes=1, progress=Recorder())
    assert order == ["asr", "lm"]


def test_markers_make_a_rerun_skip_finished_steps(tmp_path):
    calls = []
    marker = tmp_path / "exp" / ".done_x"
    steps = [Step("x", "11", lambda: calls.append("x") or "trained", marker=marker)]
    run_steps(steps, lanes=2, progress=Recorder())
    assert marker.read_text() == "trained\n"
    recorder = Recorder()
    run_steps(steps, lanes=2, progress=recorder)
    assert calls == ["x"] and "done before, skipped" in recorder.lines[0]


def test_a_skipped_step_readies_steps_listed_before_it(tmp_path):
    marker = tmp_path / ".done_lm"
    marker.write_text("trained\n")
    ran = []
    steps = [Step("decode_with_lm", "12", lambda: ran.append("decode") or "", after=("lm",)),
             Step("lm", "7", lambda: ran.append("lm") or "", marker=marker, priority=1)]
    run_steps(steps, lanes=2, progress=Recorder())
    assert ran == ["decode"]


def test_a_failure_stops_what_depends_on_it_and_is_reported(tmp_path):
    ran = []

    def fail():
        raise DemoError("exit status 1 of asr_train; last lines of train.log: boom")

    steps = [Step("bad", "11", fail, marker=tmp_path / ".done_bad"),
             Step("after_bad", "12", lambda: ran.append(1) or "", after=("bad",)),
             Step("other", "6", lambda: time.sleep(0.1) or ran.append(2) or "")]
    recorder = Recorder()
    with pytest.raises(DemoError, match="bad: exit status 1 of asr_train.*boom"):
        run_steps(steps, lanes=2, progress=recorder)
    assert ran == [2] and not (tmp_path / ".done_bad").exists()
    assert any("bad: FAILED" in line for line in recorder.lines)


def test_unknown_dependencies_and_cycles_are_errors():
    with pytest.raises(DemoError, match="unknown step"):
        run_steps([Step("a", "1", lambda: "", after=("nope",))], lanes=1, progress=Recorder())
    cycle = [Step("a", "1", lambda: "", after=("b",)), Step("b", "1", lambda: "", after=("a",))]
    with pytest.raises(DemoError, match="cycle"):
        run_steps(cycle, lanes=1, progress=Recorder())
