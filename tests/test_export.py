"""Export: the written TOML is a loadable spec whose [params] rebuild the trial's exact
config, and whose [exported] table records where it came from and what it measured."""

from __future__ import annotations

import math

import optuna
import pytest
import tomllib

from search.core.errors import UsageError
from search.core.spec import from_dict, load, to_toml_dict
from search.results import exporter
from search.results import pareto as front
from search.tasks.plugins import suggest_params
from tests.conftest import run_cli, tiny_spec_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)

# (accuracy, latency_ms, energy_mj) of three searched trials: 1 is the knee.
VALUES = [(0.80, 0.2, 1.0), (0.92, 0.5, 2.0), (0.95, 2.0, 9.0)]


def searched_study(storage: str = "sqlite:///:memory:", name: str = "tiny") -> tuple[optuna.Study, dict]:
    """Trials asked through spaces.suggest, as the searcher does: genuine params and distributions."""
    spec = from_dict(tiny_spec_dict(name=name))
    study = optuna.create_study(
        study_name=name, storage=storage, directions=spec.directions, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    study.set_user_attr("objectives", spec.objective_names)
    study.set_user_attr("spec", to_toml_dict(spec))
    configs = {}
    for i, values in enumerate(VALUES):
        trial = study.ask()
        configs[trial.number] = suggest_params(trial, spec, "image")
        for key, value in {
            "seed": 100 + i, "size_kb": 12.5 + i, "params": 3000 + i, "macs": 40000 + i, "energy_source": "estimate",
            "latency_source": "wall-clock", "hostname": "node-a", "cpu_model": 'CPU "x" \\ 9', "latency_p90_ms": 0.3,
        }.items():
            trial.set_user_attr(key, value)
        study.tell(trial, list(values))
    return study, configs


def test_export_writes_a_loadable_spec_with_pinned_params(tmp_path):
    study, configs = searched_study()
    chosen = front.pick(study, "knee")
    assert chosen.number == 1
    path = exporter.export(study, chosen, "postgresql://me:secret@db.example/optuna", tmp_path / "best.toml", pick="knee")

    spec = load(path)  # [params] and [exported] are ignored by the spec loader
    assert spec.name == "tiny" and spec.budget.epochs == 2
    assert spec.space.architecture.width.low == 8 and spec.space.architecture.width.high == 16
    data = tomllib.loads(path.read_text())
    assert data["params"] == chosen.params
    rebuilt = suggest_params(optuna.trial.FixedTrial(data["params"]), spec, "image")
    assert rebuilt == configs[1]

    exported = data["exported"]
    assert exported["study"] == "tiny" and exported["trial"] == 1 and exported["seed"] == 101
    assert exported["storage"] == "postgresql://me:***@db.example/optuna"
    assert "secret" not in path.read_text()
    assert exported["values"] == {"accuracy": 0.92, "latency_ms": 0.5, "energy_mj": 2.0}
    attrs = exported["attrs"]
    assert attrs["size_kb"] == 13.5 and attrs["params"] == 3001 and attrs["macs"] == 40001
    assert attrs["energy_source"] == "estimate" and attrs["latency_source"] == "wall-clock"
    assert attrs["hostname"] == "node-a" and attrs["cpu_model"] == 'CPU "x" \\ 9'
    assert exported["pick"] == "knee" and exported["split"] == "val"


def test_toml_writer_round_trips():
    data = {
        "name": "x",
        "flags": [True, False],
        "numbers": [1, 2.5, -3e-7, 1e300],
        "odd": 'quote " back \\ tab \t newline \n bell \x07 é',
        "special": [math.inf, -math.inf],
        "table": {"a": 1, "nested": {"low": 0.1, "high": 0.9}, "deeper": {"x": {"y": "z"}}},
        "empty": {},
        "key with space": 3,
    }
    text = exporter.dumps(data)
    back = tomllib.loads(text)
    assert back == data
    # Leaf tables two levels down are written inline, as ranges are in a hand-written spec.
    assert "[table.nested]" in text and 'x = {y = "z"}' in text and "[empty]" in text


def test_export_needs_a_recorded_spec():
    study = optuna.create_study(directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0]))
    with pytest.raises(UsageError, match="has no recorded spec"):
        exporter.export(study, study.trials[0], "sqlite:///x.db", "unused.toml")


def test_export_rejects_params_that_do_not_pin_the_space(tmp_path):
    study, _ = searched_study()
    partial = optuna.trial.create_trial(values=[0.99, 0.1, 0.5], params={"family": "mlp"},
                                        distributions={"family": optuna.distributions.CategoricalDistribution(["mlp", "mobilenet"])})
    study.add_trial(partial)
    with pytest.raises(UsageError, match="does not pin every dimension"):
        exporter.export(study, study.trials[-1], "sqlite:///x.db", tmp_path / "bad.toml")
    assert not (tmp_path / "bad.toml").exists()


def test_cli_export_with_pick_and_where(tmp_path):
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    searched_study(url)
    out = tmp_path / "fast.toml"
    result = run_cli("export", "tiny", "--storage", url, "--out", str(out), "--pick", "max:accuracy",
                     "--where", "latency_ms<=1", "--where", "energy_mj<=5", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exported trial 1 (max:accuracy, where latency_ms<=1 and energy_mj<=5)" in result.stdout
    data = tomllib.loads(out.read_text())
    assert data["exported"]["trial"] == 1
    assert data["exported"]["pick"] == "max:accuracy where latency_ms<=1 where energy_mj<=5"
    assert data["exported"]["storage"] == url
    assert load(out).name == "tiny"


def test_export_refuses_to_overwrite_another_study_or_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    first, _ = searched_study(url, name="tiny")
    second, _ = searched_study(url, name="other")
    out = tmp_path / "best.toml"
    exporter.export(first, first.trials[1], url, out)
    exporter.export(first, first.trials[1], url, out)  # the same trial again: refreshed
    written = out.read_text()
    with pytest.raises(UsageError, match=r"^--out .*best\.toml: already holds trial 1 of study 'tiny' \(sqlite:///.*\); "
                                          r"choose another --out, or pass --force"):
        exporter.export(second, second.trials[1], url, out)
    with pytest.raises(UsageError, match="already holds trial 1 of study 'tiny'"):
        exporter.export(first, first.trials[2], url, out)  # another trial of the same study
    assert out.read_text() == written
    exporter.export(second, second.trials[2], url, out, force=True)
    assert tomllib.loads(out.read_text())["exported"]["study"] == "other"

    spec = tmp_path / "mine.toml"
    spec.write_text('name = "mine"\n')
    with pytest.raises(UsageError, match="already holds a file `paretune export` did not write"):
        exporter.export(first, first.trials[1], url, spec)
    assert spec.read_text() == 'name = "mine"\n'


def test_cli_export_defaults_to_study_best_toml_and_refuses_overwrite(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    searched_study(url, name="tiny")
    searched_study(url, name="other")
    result = run_cli("export", "tiny", "--storage", url, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "to tiny-best.toml" in result.stdout and "next: paretune train tiny-best.toml --out tiny-best_model/" in result.stdout
    assert tomllib.loads((tmp_path / "tiny-best.toml").read_text())["exported"]["study"] == "tiny"
    clash = run_cli("export", "other", "--storage", url, "--out", "tiny-best.toml", cwd=tmp_path, timeout=120)
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1, clash.stderr
    assert "already holds trial 1 of study 'tiny'" in clash.stderr
    forced = run_cli("export", "other", "--storage", url, "--out", "tiny-best.toml", "--force", cwd=tmp_path, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads((tmp_path / "tiny-best.toml").read_text())["exported"]["study"] == "other"
