"""Warm starts: an exported config's [params] (or --enqueue FILE) become the first trial
of a search, checked against the spec before Ray starts; an exported spec searches a
new study instead of resuming the one it came from."""

from __future__ import annotations

import optuna
import pytest
import tomllib

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.driver import warmstart
from search.results import exporter
from tests.conftest import run_cli, tiny_spec_dict, write_toml
from tests.test_export import searched_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def exported_params():
    study, _ = searched_study()
    return dict(study.trials[1].params)


def seed(params: dict) -> warmstart.Seed:
    return warmstart.Seed(params, "best.toml (trial 1 of study 'tiny')", "tiny", 1)


def test_params_that_fit_the_spec_are_taken_whole(exported_params):
    checked = warmstart.check(seed(exported_params), from_dict(tiny_spec_dict()), "image")
    assert checked.params == exported_params and checked.sampled == [] and checked.ignored == []


@pytest.mark.parametrize(
    "change,message",
    [
        ({"family": "transformer"}, "family = 'transformer' is outside this spec's space (choices: 'mlp', 'mobilenet')"),
        ({"width": 64}, "width = 64 is outside this spec's space (range [8, 16])"),
        ({"lr": 0.5}, "lr = 0.5 is outside this spec's space (range [0.0003, 0.03])"),
        ({"batch_norm": 0}, "batch_norm = 0 is outside this spec's space (choices: True, False)"),  # 0 is not False
        ({"width": 12.5}, "width = 12.5 is outside this spec's space (range [8, 16])"),
    ],
)
def test_values_outside_the_space_are_one_line_errors(exported_params, change, message):
    with pytest.raises(UsageError) as error:
        warmstart.check(seed({**exported_params, **change}), from_dict(tiny_spec_dict()), "image")
    assert str(error.value) == f"best.toml (trial 1 of study 'tiny'): [params] {message}"


def test_missing_params_are_sampled_and_unknown_ones_left_out(exported_params):
    params = {k: v for k, v in exported_params.items() if k != "lr"} | {"kd_alpha": 0.5}
    checked = warmstart.check(seed(params), from_dict(tiny_spec_dict()), "image")
    assert checked.sampled == ["lr"] and checked.ignored == ["kd_alpha"]
    assert "kd_alpha" not in checked.params and checked.params["family"] == exported_params["family"]


def test_enqueue_only_into_a_new_study_for_the_specs_own_params(exported_params):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    spec = from_dict(tiny_spec_dict())
    own = warmstart.check(warmstart.Seed(exported_params, "best.toml", only_if_new=True), spec, "image")
    extra = warmstart.check(warmstart.Seed(exported_params, "known.toml"), spec, "image")
    assert warmstart.enqueue(study, [own, extra], study_is_new=False) == [extra]
    (waiting,) = study.get_trials()
    assert waiting.state == optuna.trial.TrialState.WAITING and waiting.user_attrs == {"enqueued_from": "known.toml"}
    from search.tasks.plugins import suggest_params

    trial = study.ask()  # the searcher's next ask takes it; its suggestions return the pinned values
    suggest_params(trial, spec, "image")
    assert trial.params == exported_params
    assert warmstart.warm_study_name("digits", seed(exported_params)) == "digits-warm-t1"


def test_bad_enqueue_file_stops_before_ray_and_storage(tmp_path, exported_params):
    spec = write_toml(tmp_path / "tiny.toml", tiny_spec_dict())
    bad = tmp_path / "bad.toml"
    bad.write_text(exporter.dumps({"params": {**exported_params, "family": "transformer"}}))
    result = run_cli("launch", str(spec), "--enqueue", str(bad), "--storage", f"sqlite:///{tmp_path / 'w.db'}", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[params] family = 'transformer' is outside this spec's space" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "w.db").exists()
    plain = tmp_path / "plain.toml"
    plain.write_text('name = "x"\n')
    result = run_cli("launch", str(spec), "--enqueue", str(plain), timeout=120)
    assert result.returncode == 2 and "no [params] table" in result.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_launching_an_exported_config_runs_it_first_in_a_new_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    original, _ = searched_study(url, name="tiny")
    best = exporter.export(original, original.trials[1], url, tmp_path / "tiny-best.toml")
    pinned = tomllib.loads(best.read_text())["params"]

    first = run_cli("launch", str(best), "--trials", "2", "--storage", url, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "is an exported config (trial 1 of study 'tiny'): searching a new study tiny-warm-t1" in first.stdout
    # The new study's baseline runs first (trial 0), the exported config right after it.
    assert f"warm start: trial 1 runs the params of {best} (trial 1 of study 'tiny')" in first.stdout
    warm = optuna.load_study(study_name="tiny-warm-t1", storage=url)
    base, trial = warm.get_trials()
    assert base.user_attrs["baseline"] and base.state.name == "COMPLETE"
    assert trial.number == 1 and trial.params == pinned and trial.state.name == "COMPLETE"
    assert trial.user_attrs["enqueued_from"] == f"{best} (trial 1 of study 'tiny')"
    assert len(optuna.load_study(study_name="tiny", storage=url).get_trials()) == 3  # the original: untouched

    again = run_cli("launch", str(best), "--trials", "3", "--storage", url, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[params] not enqueued again: study tiny-warm-t1 exists" in again.stdout
    trials = optuna.load_study(study_name="tiny-warm-t1", storage=url).get_trials()
    assert len(trials) == 3 and "enqueued_from" not in trials[2].user_attrs

    spec = write_toml(tmp_path / "tiny.toml", tiny_spec_dict())
    seeded = run_cli("launch", str(spec), "--name", "seeded", "--enqueue", str(best), "--trials", "2", "--storage", url,
                     timeout=600)
    assert seeded.returncode == 0, seeded.stdout[-3000:] + seeded.stderr[-3000:]
    assert optuna.load_study(study_name="seeded", storage=url).get_trials()[1].params == pinned  # after the baseline
