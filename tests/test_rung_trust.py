"""early_stopping = "auto": the full-fidelity bracket and trusted rungs (search.driver.rung_trust),
and the MO-ASHA scheduler guarded by them, on scripted learning curves in a real Optuna
storage (no Ray: the scheduler is driven the way Tune drives it)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from search.core.spec import from_dict
from search.driver import rung_trust
from search.driver.moasha import MOASHAScheduler
from tests.conftest import tiny_spec_dict

OBJECTIVES = {"accuracy": "maximize", "size_kb": "minimize"}


def spec(mode: str):
    data = tiny_spec_dict(name="curves", objectives=OBJECTIVES)
    data["budget"] = {"trials": 40, "epochs": 9, "early_stopping": mode, "grace_epochs": 1, "reduction_factor": 3}
    return from_dict(data)


def test_the_full_bracket_is_a_quarter_of_trials_and_the_same_for_everyone():
    chosen = [n for n in range(2000) if rung_trust.full_bracket(n)]
    assert 0.21 < len(chosen) / 2000 < 0.29
    assert chosen == [n for n in range(2000) if rung_trust.full_bracket(n)]  # no state: every driver agrees
    # Variants leave gaps in the numbering (4 per training: 0, 4, 8, ...): still a quarter.
    assert 0.19 < sum(rung_trust.full_bracket(n) for n in range(0, 8000, 4)) / 2000 < 0.31


def test_trust_needs_agreement_and_enough_trials():
    ramp = [0.1 * i for i in range(12)]
    assert rung_trust.Trust(1, rung_trust.kendall_tau(ramp, ramp), 12).trusted
    inverted = rung_trust.Trust(1, rung_trust.kendall_tau(ramp, ramp[::-1]), 12)
    assert inverted.tau == pytest.approx(-1.0) and not inverted.trusted
    few = rung_trust.Trust(1, rung_trust.kendall_tau(ramp[:5], ramp[:5]), 5)
    assert few.tau == pytest.approx(1.0) and not few.trusted  # perfect, but on 5 trials
    # τ − its standard error must reach the floor: 0.6 over 10 trials does not, over 60 it does.
    assert not rung_trust.Trust(1, 0.6, 10).trusted and rung_trust.Trust(1, 0.6, 60).trusted
    assert math.isnan(rung_trust.kendall_tau([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))  # a flat rung ranks nothing
    assert rung_trust.Trust(2, 0.31, 9).describe() == "rung 2: τ = 0.31 over 9 trials, not trusted yet"
    assert rung_trust.Trust(1, 0.95, 12).describe() == "rung 1: τ = 0.95 over 12 trials, trusted"


# --- the scheduler on scripted curves ---------------------------------------------------


class Searcher:
    """What the scheduler asks of an AskTellSearcher, over a real study."""

    def __init__(self, study: optuna.Study):
        self.study = study
        self.live: dict[str, optuna.Trial] = {}
        self.stops: dict[str, str] = {}

    def start(self, tune_id: str) -> optuna.Trial:
        self.live[tune_id] = self.study.ask()
        return self.live[tune_id]

    def pending_attrs(self, tune_id: str) -> dict:
        return {}

    def remember(self, tune_id: str, attrs: dict, write_now: bool = False) -> None:
        for key, value in attrs.items():
            self.live[tune_id].set_user_attr(key, value)

    def stop_as(self, tune_id: str, reason: str, pruned: bool) -> None:
        self.stops[tune_id] = reason
        self.study.tell(self.live[tune_id], state=TrialState.PRUNED if pruned else TrialState.FAIL)


def finished(study: optuna.Study, early: float, final: float, size: float = 10.0) -> None:
    """A COMPLETE trial that recorded `early` accuracy at rung 1 and ended at `final`."""
    trial = study.ask()
    trial.set_user_attr("rung_1", {"epoch": 1, "values": {"accuracy": early, "size_kb": size}, "promoted": True})
    study.tell(trial, [final, size])


def judge(scheduler, searcher, tune_id: str, accuracy: float, size: float = 10.0) -> str:
    result = {"epoch": 1, "val_accuracy": accuracy, "pretrain_size_kb": size}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=tune_id), result)


def judged_number(study: optuna.Study, full: bool) -> None:
    """Burn trial numbers until the next one is (or is not) in the full bracket."""
    while rung_trust.full_bracket(len(study.trials)) != full:
        study.tell(study.ask(), state=TrialState.FAIL)  # a FAIL trial takes the number and ranks nowhere


def curves(tmp_path, ranking: str) -> optuna.Study:
    """Ten finished trials whose rung-1 accuracy ranks as the end does ("same") or the
    other way round ("inverted"), all of one size."""
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 'c.db'}")
    for i in range(10):
        early = 0.2 + 0.05 * i
        final = 0.5 + 0.04 * (i if ranking == "same" else 9 - i)
        finished(study, early, final)
    return study


def test_an_inverted_rung_is_not_trusted_and_stops_nothing(tmp_path):
    study = curves(tmp_path, "inverted")
    searcher = Searcher(study)
    scheduler = MOASHAScheduler(searcher, spec("auto"), guarded=True)
    judged_number(study, full=False)
    live = searcher.start("worst")
    # The worst accuracy at the rung, same size: MO-ASHA would stop it ...
    assert MOASHAScheduler(Searcher(study), spec("moasha")).rungs == [1, 3]
    assert judge(scheduler, searcher, "worst", 0.05) == TrialScheduler.CONTINUE
    record = study.trials[live.number].user_attrs["rung_1"]
    assert record["promoted"] is True and record["exempt"] == "rung not trusted"
    assert record["tau"] == pytest.approx(-1.0) and record["n"] == 10 and record["trusted"] is False
    assert record["ahead"] >= record["keep"]  # ... as the record says, and was overruled
    assert not searcher.stops


def test_a_trusted_rung_stops_what_moasha_would(tmp_path):
    study = curves(tmp_path, "same")
    guarded, plain = Searcher(study), Searcher(study)
    judged_number(study, full=False)
    a = guarded.start("a")
    verdict = judge(MOASHAScheduler(guarded, spec("auto"), guarded=True), guarded, "a", 0.05)
    judged_number(study, full=False)
    plain.start("b")
    assert verdict == judge(MOASHAScheduler(plain, spec("moasha")), plain, "b", 0.05) == TrialScheduler.STOP
    record = study.trials[a.number].user_attrs["rung_1"]
    assert record["promoted"] is False and record["trusted"] is True and record["tau"] == pytest.approx(1.0)
    assert study.trials[a.number].state == TrialState.PRUNED
    assert "rung trusted at τ = 1.00 over 10 trials" in guarded.stops["a"]
    # And a good trial at a trusted rung goes on, as under MO-ASHA.
    judged_number(study, full=False)
    guarded.start("good")
    assert judge(MOASHAScheduler(guarded, spec("auto"), guarded=True), guarded, "good", 0.9) == TrialScheduler.CONTINUE


def test_the_full_bracket_and_the_baseline_are_never_stopped(tmp_path):
    study = curves(tmp_path, "same")
    searcher = Searcher(study)
    scheduler = MOASHAScheduler(searcher, spec("auto"), guarded=True)
    judged_number(study, full=True)
    live = searcher.start("full")
    assert judge(scheduler, searcher, "full", 0.01) == TrialScheduler.CONTINUE
    assert study.trials[live.number].user_attrs["rung_1"]["exempt"] == "full bracket"
    judged_number(study, full=False)
    base = searcher.start("baseline")
    base.set_user_attr("baseline", True)
    assert judge(scheduler, searcher, "baseline", 0.01) == TrialScheduler.CONTINUE
    assert study.trials[base.number].user_attrs["rung_1"]["exempt"] == "baseline"
    assert not searcher.stops


def test_decisions_read_back_after_a_resume_are_the_same(tmp_path):
    study = curves(tmp_path, "same")
    first = Searcher(study)
    judged_number(study, full=False)
    first.start("x")
    judge(MOASHAScheduler(first, spec("auto"), guarded=True), first, "x", 0.05)
    stored = {t.number: dict(t.user_attrs) for t in study.trials}
    # A new driver (a resume after a kill -9) opens the same storage: the same records,
    # the same trust, and the same verdict on the same vector.
    reopened = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'c.db'}")
    assert {t.number: dict(t.user_attrs) for t in reopened.trials} == stored
    before = rung_trust.summary(study.trials, ["accuracy", "size_kb"])
    after = rung_trust.summary(reopened.trials, ["accuracy", "size_kb"])
    assert before == after and after[0].trusted
    second = Searcher(reopened)
    judged_number(reopened, full=False)
    second.start("y")
    assert judge(MOASHAScheduler(second, spec("auto"), guarded=True), second, "y", 0.05) == TrialScheduler.STOP


def test_auto_falls_back_to_none_where_nothing_can_be_judged():
    assert spec("auto").stopping == "auto"
    no_accuracy = tiny_spec_dict(name="x", objectives={"latency_ms": "minimize", "size_kb": "minimize"})
    no_accuracy["budget"] = {"early_stopping": "auto"}
    assert from_dict(no_accuracy).stopping == "none"
    one_epoch = tiny_spec_dict(name="x")
    one_epoch["budget"] = {"early_stopping": "auto", "epochs": 1}  # no rung below the last epoch
    assert from_dict(one_epoch).stopping == "none"


# --- a real search ----------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_an_auto_search_judges_only_at_trusted_rungs(ray_local, tmp_path):
    from search.driver import pruned
    from search.driver.launcher import launch
    from search.results import pareto

    data = tiny_spec_dict(name="auto", objectives=OBJECTIVES)
    data["space"]["architecture"] = {"families": ["mlp"], "width": [8, 32], "depth": [1, 2]}
    data["space"]["pruning"] = {"kinds": ["none"]}
    data["space"]["quantization"] = {"modes": ["none"]}
    data["budget"] = {"trials": 14, "concurrency": 2, "epochs": 4, "early_stopping": "auto", "grace_epochs": 1,
                      "reduction_factor": 3}
    url = f"sqlite:///{tmp_path / 'a.db'}"
    summary = launch(from_dict(data), storage_url=url)
    study = optuna.load_study(study_name="auto", storage=url)
    trials = study.get_trials()
    trained = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert summary.complete == 14 and not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in trained:  # every trial that trained recorded rung 1, and why it went on or stopped
        record = trial.user_attrs["rung_1"]
        assert set(record["values"]) == set(OBJECTIVES)
        if trial.state == TrialState.PRUNED:  # at the rung it was stopped at: trusted, not exempt
            epoch = trial.user_attrs[pruned.EPOCH_ATTR]
            stopped_at = trial.user_attrs[f"rung_{epoch}"]
            assert stopped_at["promoted"] is False and stopped_at["trusted"] is True and "exempt" not in stopped_at
            assert trial.user_attrs[pruned.REASON_ATTR].startswith(f"dominated at rung epoch {epoch}: ")
            assert not rung_trust.full_bracket(trial.number) and not trial.user_attrs.get("baseline")
        elif record.get("exempt") == "full bracket":
            assert rung_trust.full_bracket(trial.number)
    # Until MIN_TRIALS trials had finished, no rung could be trusted: the first trials all ran to the end.
    first = sorted(trained, key=lambda t: t.number)[: rung_trust.MIN_TRIALS]
    assert all(t.state == TrialState.COMPLETE for t in first)
    assert not {t.number for t in trials if t.state == TrialState.PRUNED} & {t.number for t in pareto.study_front(study)}
    rungs = rung_trust.summary(trials, study.metric_names)
    assert [t.epoch for t in rungs] == [1, 3] and rungs[0].n >= 14 - 1
