"""Spec validation: good specs load; each kind of bad input is one line naming the
field or file, exit code 2 from the CLI, no traceback, nothing written."""

from __future__ import annotations

import pytest

from search.core.errors import UsageError
from search.core.spec import load
from tests.conftest import ROOT, run_cli, tiny_spec_dict, write_toml


def test_digits_spec_loads_with_defaults():
    spec = load(ROOT / "studies" / "digits.toml")
    assert spec.name == "digits"
    assert spec.objective_names == ["accuracy", "latency_ms", "energy_mj"]
    assert spec.directions == ["maximize", "minimize", "minimize"]
    assert spec.space.pruning.ratio.low == 0.1 and spec.space.pruning.ratio.high == 0.8
    assert spec.space.schedule.lr.log is True


def test_constraints_parse_and_measure_violation(tmp_path):
    path = write_toml(tmp_path / "c.toml", tiny_spec_dict(constraints=["latency_ms <= 2.0", "accuracy >= 0.9"]))
    spec = load(path)
    latency, acc = spec.constraints
    assert latency.violation({"latency_ms": 2.5}) == pytest.approx(0.5)
    assert latency.violation({"latency_ms": 1.0}) == pytest.approx(-1.0)
    assert acc.violation({"accuracy": 0.8}) == pytest.approx(0.1)


def test_relative_task_path_resolves_against_spec_dir(tmp_path):
    (tmp_path / "data").mkdir()
    path = write_toml(tmp_path / "s.toml", tiny_spec_dict(task={"path": "data/x.npz"}))
    assert load(path).task.path == tmp_path / "data" / "x.npz"


BAD_SPECS = [
    ("malformed TOML", None, "invalid TOML"),
    ("unknown top-level field", {"budjet": {"trials": 3}}, "budjet: unknown field"),
    ("unknown dimension", {"space": {"architecture": {}, "pruning": {}, "quantization": {}, "distilation": {}}}, "space.distilation"),
    ("unknown choice", {"space": {"quantization": {"modes": ["none", "int4"]}}}, "space.quantization.modes"),
    ("low > high", {"space": {"pruning": {"ratio": [0.9, 0.1]}}}, "low <= high"),
    ("log with low <= 0", {"space": {"schedule": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}}, "space.schedule.lr"),
    ("empty choices", {"space": {"architecture": {"families": []}}}, "space.architecture.families"),
    ("step 0", {"space": {"architecture": {"depth": {"low": 1, "high": 3, "step": 0}}}}, "step > 0"),
    ("unknown sampler", {"sampler": "cmaes2"}, "sampler"),
    ("unknown objective", {"objectives": {"accuracy": "maximize", "flops": "minimize"}}, "objectives"),
    ("bad direction", {"objectives": {"accuracy": "maximise"}}, "objectives.accuracy"),
    ("wrong type", {"budget": {"trials": "many"}}, "budget.trials"),
    ("zero trials", {"budget": {"trials": 0}}, "budget.trials"),
    ("bad constraint", {"constraints": ["latency_ms < 2"]}, "constraints"),
    ("unknown task", {"task": "mnist"}, "task"),
    ("bad name", {"name": "has space"}, "name"),
    ("pruning ratio over 0.95", {"space": {"pruning": {"ratio": [0.1, 0.99]}}}, "space.pruning.ratio"),
]


@pytest.mark.parametrize("label,override,expected", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_naming_the_field(tmp_path, label, override, expected):
    path = tmp_path / "bad.toml"
    if override is None:
        path.write_text('name = "x"\n[budget\ntrials = 3\n')
    else:
        data = tiny_spec_dict()
        for key, value in override.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and key in ("budget", "space") else value
        write_toml(path, data)
    with pytest.raises(UsageError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert str(path) in message


def test_missing_spec_file_names_it(tmp_path):
    with pytest.raises(UsageError, match="no such spec file"):
        load(tmp_path / "nope.toml")


def test_cli_bad_spec_exits_2_without_traceback_and_writes_nothing(tmp_path):
    data = tiny_spec_dict()
    data["space"]["pruning"]["ratio"] = [0.9, 0.1]
    path = write_toml(tmp_path / "bad.toml", data)
    db = tmp_path / "out.db"
    result = run_cli("launch", str(path), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "space.pruning.ratio" in lines[0]
    assert not db.exists()


def test_cli_missing_dataset_file_exits_2_naming_the_file(tmp_path):
    path = write_toml(tmp_path / "s.toml", tiny_spec_dict(task={"path": "missing.npz"}))
    result = run_cli("launch", str(path), "--storage", f"sqlite:///{tmp_path / 'o.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.npz" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.db").exists()
