"""The benchmark's quick mode runs end to end: every table is produced, written, and
every figure in it is finite. Timings are printed, never asserted."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import run as runner


def test_unknown_benchmark_is_a_usage_error(capsys):
    assert runner.main(["--only", "speed"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_mode_produces_every_table_with_finite_figures(ray_local, tmp_path):
    tables = runner.run(list(runner.NAMES), quick=True, out=tmp_path, command="python -m benchmarks --quick")
    assert list(dict.fromkeys(t.name for t in tables)) == list(runner.NAMES)
    # The compression benchmark also times every runtime and precision at batch 1, with the machine's peak.
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
