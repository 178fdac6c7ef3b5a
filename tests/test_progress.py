"""Live progress: the ETA arithmetic by hand, the plain status lines a CI log gets
(counts, ETA, best, front) read from a real SQLite study, and the terminal status area."""

from __future__ import annotations

import datetime as dt
import io
import re
import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

from search.driver import progress
from search.driver.searcher import INTERRUPTED

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAMES = ["accuracy", "latency_ms"]


def test_finish_time_schedules_trials_behind_the_running_ones():
    # Slots free at 6 s (a trial 4 s into its 10) and now; four more trials of 10 s:
    # 0-10, 6-16, 10-20, 16-26.
    assert progress.finish_time(10.0, [4.0], 4, 2) == pytest.approx(26.0)
    # A trial running past the typical duration frees its slot at once.
    assert progress.finish_time(10.0, [15.0, 15.0], 2, 2) == pytest.approx(10.0)
    # More running trials than slots (another driver's): each still finishes.
    assert progress.finish_time(10.0, [0.0, 0.0, 0.0], 0, 2) == pytest.approx(10.0)


def test_eta_counts_failures_and_uses_the_duration_quartiles():
    # Half the finished trials fail: 2 more COMPLETE need 4 starts; 2 slots, 10 s each.
    median, low, high = progress.eta_seconds([10.0, 10.0], 0.5, 2, [], 2)
    assert median == low == high == pytest.approx(20.0)
    # Quartiles of 4, 8, 12, 16 s are 7, 10 and 13 s; one trial on one slot.
    assert progress.eta_seconds([4.0, 8.0, 12.0, 16.0], 1.0, 1, [], 1) == pytest.approx((10.0, 7.0, 13.0))
    assert progress.eta_seconds([], 1.0, 3, [], 2) is None  # nothing finished: no basis yet
    assert progress.eta_seconds([5.0], 1.0, 0, [1.0], 2) == (0.0, 0.0, 0.0)  # budget met


def test_clock():
    assert [progress.clock(s) for s in (0, 41, 725, 3723, None)] == ["0:00", "0:41", "12:05", "1:02:03", "?"]


def add(study, state, values=None, seconds=10.0, attrs=None):
    trial = create_trial(state=state, values=values, user_attrs=attrs or {})
    trial.datetime_start = trial.datetime_complete - dt.timedelta(seconds=seconds)
    study.add_trial(trial)


@pytest.fixture
def running_study(tmp_path):
    """3 COMPLETE and 1 FAIL of 10 s each, one interrupted trial (not a duration), one running."""
    study = optuna.create_study(study_name="live", storage=f"sqlite:///{tmp_path / 'live.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", NAMES)
    add(study, TrialState.COMPLETE, [0.90, 2.0])
    add(study, TrialState.COMPLETE, [0.95, 3.0])
    add(study, TrialState.COMPLETE, [0.80, 2.5])  # dominated by the first
    add(study, TrialState.FAIL, attrs={"fail_reason": "boom"})
    add(study, TrialState.FAIL, seconds=500.0, attrs={"fail_reason": INTERRUPTED})
    study.ask()  # RUNNING from now
    return study


def test_plain_lines_have_counts_eta_best_and_front(running_study):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=300)
    with progress.SearchProgress(console, budget=8, concurrency=2, objectives=NAMES, every_s=0.3) as shown:
        shown.start(running_study)
        deadline = time.monotonic() + 20
        while out.getvalue().count("progress ") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("progress ")]
    assert len(lines) >= 2, out.getvalue()
    line = lines[-1]
    assert "3/8 COMPLETE, 1 running, 2 failed, 0 pruned" in line
    # 3 of the 4 finished trials (the interrupted one is no basis) ended COMPLETE; 5 more
    # COMPLETE need ceil((5 - 0.75) / 0.75) = 6 starts of 10 s on 2 slots, one of them
    # busy for 10 s more: 40 s.
    assert re.search(r"ETA 0:(39|40)\b", line), line
    assert "best accuracy=0.95 (#1) latency_ms=2 (#0)" in line
    assert "front 2, hypervolume" in line
    assert "\x1b[" not in out.getvalue()  # no terminal codes in a log


def test_told_lines_and_the_terminal_status_area(running_study):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    shown = progress.SearchProgress(console, budget=8, concurrency=2, objectives=NAMES, live=False,
                                    describe=lambda params: "mlp/none/none")
    shown.study = running_study
    shown.told(running_study.trials[1])
    shown.told(running_study.trials[3])
    assert "trial    1 COMPLETE accuracy=0.95 latency_ms=3  mlp/none/none" in out.getvalue()
    assert "trial    3 FAIL boom" in out.getvalue()
    assert shown.told_counts == {"COMPLETE": 1, "FAIL": 1}

    shown.refresh()
    screen = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    screen.print(shown)
    area = screen.export_text()
    assert "3/8 COMPLETE" in area and "1 running" in area and "2 failed" in area
    assert re.search(r"ETA 0:(39|40)\b.*from 4 trial times", area), area
    assert "accuracy 0.95 (#1)" in area and "2 of 3 feasible trials" in area
