"""The benchmark's quick mode runs end to end: every table is produced, written, and
every figure in it is finite. Timings are printed, never asserted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import run as runner


def test_unknown_benchmark_is_a_usage_error(capsys):
    assert runner.main(["--only", "speed"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


# Figures counted within a wall-clock window (trials done in 10 or 20 s): on a machine
# shared with other tests they measure the neighbours, and a way may finish no trial in
# its window. They run in the `solo` tier, alone on the machine (scripts/test.sh).
WINDOWED = ("early_stopping", "variants", "throughput")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("windowed", [pytest.param(False, id="fixed-work"), pytest.param(True, id="windowed", marks=pytest.mark.solo)])
def test_quick_mode_produces_every_table_with_finite_figures(windowed, ray_local, tmp_path):
    # peers has its own smoke tests (tests/test_peers.py: two trials per tool)
    names = [n for n in runner.NAMES if n != "peers" and (n in WINDOWED) == windowed]
    tables = runner.run(names, quick=True, out=tmp_path, command="python -m benchmarks --quick")
    assert list(dict.fromkeys(t.name for t in tables)) == names
    if "compression" in names:  # it also times every runtime and precision at batch 1, with the machine's peak
        titles = [t.title for t in tables if t.name == "compression"]
        assert any(t.startswith("Batch-1 latency per runtime and precision") for t in titles), titles
        assert any(t.startswith("Machine peak") for t in titles), titles
    for table in tables:
        assert table.rows and all(len(row) == len(table.columns) for row in table.rows), table.name
        numbers = table.numbers()
        assert numbers and all(math.isfinite(v) for v in numbers), table.name
    written = json.loads((tmp_path / "results.json").read_text())
    assert [t["name"] for t in written["tables"]] == [t.name for t in tables]
    markdown = (tmp_path / "results.md").read_text()
    assert all(f"### {t.title}" in markdown for t in tables)


def early_stopping_runs():
    from benchmarks.early_stopping import Run

    names, directions = ["accuracy", "latency_ms"], ["maximize", "minimize"]

    def run(method, done):  # minimization values: accuracy negated
        return Run("t", method, 0, 0.0, 100.0, 100.0, names, directions, done=[(t, np.array(v)) for t, v in done])

    # A slow, inaccurate trial sets the linear latency axis; 0.02 ms vs 0.01 ms at the same accuracy is 2× slower.
    return [run("full fidelity", [(10, [-0.5, 1.0]), (20, [-0.95, 0.02])]), run("MO-ASHA", [(10, [-0.95, 0.01])])]


def test_early_stopping_yardstick_on_log_costs_sees_what_the_linear_scale_hides():
    from benchmarks.early_stopping import Yardstick

    slower, faster = early_stopping_runs()
    linear, logged = Yardstick([slower, faster], log_costs=False), Yardstick([slower, faster], log_costs=True)
    assert linear.share_at(slower, 100) > 0.98  # 2× slower looks like nearly the whole front
    assert logged.share_at(slower, 100) < 0.9
    assert logged.time_to(faster, 0.95) == 10 and logged.time_to(slower, 0.9) is None
    assert linear.time_to(slower, 0.95) == 20


def test_early_stopping_tables_rebuild_from_the_raw_log_lines(tmp_path):
    import dataclasses

    from benchmarks import early_stopping

    runs = early_stopping_runs()
    log = tmp_path / "log.txt"
    log.write_text("noise\n" + "".join(
        "early_stopping raw " + json.dumps(dataclasses.asdict(r), default=early_stopping._plain) + "\n" for r in runs
    ))
    rebuilt, direct = early_stopping.from_log(log), early_stopping.tables(runs)
    assert [t.rows for t in rebuilt] == [t.rows for t in direct]
    first = {row[0]: row for row in rebuilt[0].rows}  # log-scaled costs first
    assert first["MO-ASHA"][3] == 10.0 and first["full fidelity"][3] == "> 100"
    assert first["MO-ASHA"][7] == "> 10.0"  # full fidelity never got to 90%: a lower bound on the speed-up
