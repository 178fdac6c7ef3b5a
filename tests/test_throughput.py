"""What keeps a trial cheap and its time accounted for, piece by piece (no Ray): the
per-phase timeline, outcomes written in one transaction, validation passes only where a
rung needs them, the next trial asked ahead, and SIGTERM/SIGHUP turned into Ctrl-C."""

from __future__ import annotations

import datetime as dt
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.core import storage as storages
from search.core.spec import from_dict
from search.driver import stop_signals
from search.driver.searcher import AskTellSearcher
from search.trial import timing
from tests.conftest import tiny_spec_dict

# --- search.trial.timing ----------------------------------------------------------------


def test_a_wait_is_its_own_phase_and_not_counted_in_the_phase_it_interrupts():
    with timing.record() as timeline:
        with timing.phase("train"):
            time.sleep(0.05)
            with timing.waiting("wait"):
                time.sleep(0.1)
            time.sleep(0.05)
    assert timeline.seconds["wait"] == pytest.approx(0.1, abs=0.03)
    assert timeline.seconds["train"] == pytest.approx(0.1, abs=0.03)  # 0.2 s in all, less the wait


def test_phases_outside_a_record_cost_nothing_and_record_nothing():
    with timing.phase("train"), timing.waiting("wait"):
        pass
    with timing.record() as timeline:
        pass
    assert timeline.as_dict() == {}


def test_breakdown_adds_up_to_the_stored_duration():
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    t0 = start.timestamp()
    marks = {"sampled": t0 + 0.05, "handed": t0 + 0.25, "worker_start": t0 + 0.30, "worker_end": t0 + 1.30,
             "result": t0 + 1.32}
    trial = optuna.trial.create_trial(
        values=[1.0], user_attrs={timing.ATTR: {"phases": {"train": 0.7, "measure": 0.2, "wait": 0.05}, "marks": marks}}
    )
    trial.datetime_start, trial.datetime_complete = start, start + dt.timedelta(seconds=1.35)
    parts = timing.breakdown(trial)
    assert list(parts) == list(timing.PHASES)
    assert sum(parts.values()) == pytest.approx(1.35)
    assert parts["sample"] == pytest.approx(0.05) and parts["queued"] == pytest.approx(0.2)
    assert parts["dispatch"] == pytest.approx(0.05) and parts["return"] == pytest.approx(0.02)
    assert parts["store"] == pytest.approx(0.03) and parts["other"] == pytest.approx(0.05)
    # A trial stored without the worker's marks (stopped by a scheduler, an older study) has none.
    del marks["worker_start"]
    assert timing.breakdown(trial) is None


def test_the_eta_counts_a_trial_from_its_slot_not_from_its_ask_ahead():
    from search.driver.progress import busy_seconds

    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    t0 = start.timestamp()
    marks = {"sampled": t0 + 0.05, "handed": t0 + 3.05, "worker_start": t0 + 3.1, "worker_end": t0 + 5.0,
             "result": t0 + 5.01}
    asked_ahead = optuna.trial.create_trial(values=[1.0], user_attrs={timing.ATTR: {"phases": {}, "marks": marks}})
    plain = optuna.trial.create_trial(values=[1.0])
    for trial in (asked_ahead, plain):
        trial.datetime_start, trial.datetime_complete = start, start + dt.timedelta(seconds=5.05)
    assert busy_seconds(asked_ahead) == pytest.approx(2.05)  # 3 s of waiting for a slot left out
    assert busy_seconds(plain) == pytest.approx(5.05)


# --- outcomes in one transaction ------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_user_attrs_land_together_and_a_finished_trial_refuses_them(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'a.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'a.log'}"
    study = optuna.create_study(storage=storages.open_storage(url), directions=["maximize"])
    trial = study.ask()
    attrs = {f"metric_{i}": i * 0.5 for i in range(40)} | {"nested": {"phases": {"train": 1.0}}}
    storages.set_user_attrs(study._storage, trial._trial_id, attrs)
    assert study._storage.get_trial(trial._trial_id).user_attrs == attrs
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storages.set_user_attrs(study._storage, trial._trial_id, {"late": 1})


def test_one_transaction_is_one_commit_on_sqlite(tmp_path):
    from sqlalchemy import event

    storage = storages.open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(storage=storage, directions=["maximize"])
    trial = study.ask()
    commits = []
    event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    storages.set_user_attrs(study._storage, trial._trial_id, {f"k{i}": i for i in range(30)})
    assert len(commits) == 1


# --- validation passes only where a rung needs them -----------------------------------------


def test_reports_and_validation_passes_only_at_the_wanted_epochs(tiny_spec, monkeypatch):
    from search.tasks.data import load_task
    from search.trial import training
    from spaces import architecture

    spec = tiny_spec()
    task = load_task(spec)
    passes = []
    monkeypatch.setattr(training, "evaluate", lambda model, data: passes.append(1) or 0.5)
    for wanted, expected in (((), []), ((2, 4), [1, 3]), (None, [0, 1, 2, 3])):
        passes.clear()
        reported = []
        model = architecture.build({"family": "mlp", "width": 8, "depth": 1, "batch_norm": False}, task.input_shape, task.n_classes)
        hooks = training.recipe_hooks({"optimizer": "adam", "lr": 0.01, "schedule": "constant", "batch_size": 256})
        training.fit(model, task, hooks, 4, report=lambda epoch, value: reported.append(epoch), report_epochs=wanted)
        assert reported == expected
        assert len(passes) == len(expected)  # no validation pass that nothing reads


def test_a_trial_reports_at_the_rungs_of_mo_asha_and_nowhere_else(tiny_spec):
    from search.trial.runner import report_epochs

    assert report_epochs(tiny_spec(budget={"epochs": 30, "early_stopping": "none"})) == ()
    rungs = report_epochs(tiny_spec(budget={"epochs": 30, "early_stopping": "moasha", "grace_epochs": 1,
                                            "reduction_factor": 3}))
    assert rungs == (1, 3, 9, 27)
    # "auto" also hears the last epoch: the trained accuracy its rungs are trusted on.
    assert report_epochs(tiny_spec(budget={"epochs": 30, "early_stopping": "auto"})) == (1, 3, 9, 27, 30)


# --- the next trial asked ahead, outcomes stored behind --------------------------------------------


def pipelined_searcher(budget: int) -> AskTellSearcher:
    spec = from_dict(tiny_spec_dict(name="ahead"))
    study = optuna.create_study(directions=spec.directions)
    return AskTellSearcher(study, spec, "image", budget=budget, max_failed=budget, pipelined=True)


def running(searcher) -> list:
    return searcher.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


RESULT = {"accuracy": 0.9, "latency_ms": 1.0, "energy_mj": 2.0}


def test_the_next_trial_is_asked_while_the_others_run_and_handed_out_at_once():
    searcher = pipelined_searcher(budget=10)
    first = searcher.suggest("a")
    searcher._ahead.result(timeout=30)  # the background ask
    assert [t.number for t in running(searcher)] == [0, 1]  # trial 1 asked ahead, before any slot freed
    started = time.perf_counter()
    second = searcher.suggest("b")
    assert time.perf_counter() - started < 0.05  # no sampling on the way
    assert (first["number"], second["number"]) == (0, 1)
    searcher.on_trial_complete("a", dict(RESULT))
    searcher.on_trial_complete("b", dict(RESULT))
    assert searcher.close() == 1  # the one asked ahead after trial 1 is failed, never left RUNNING
    assert not running(searcher)
    assert [t.state for t in searcher.study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    marks = searcher.study.trials[1].user_attrs[timing.ATTR]["marks"]
    assert marks["sampled"] <= marks["handed"] <= marks["result"]


def test_asking_ahead_never_asks_past_the_budget():
    searcher = pipelined_searcher(budget=3)
    ids = []
    for step in range(3):
        ids.append(f"t{step}")
        assert searcher.suggest(ids[-1]) is not None
        if searcher._ahead is not None:
            searcher._ahead.result(timeout=30)
    assert len(searcher.study.trials) == 3  # 3 handed out, none asked ahead past the budget
    assert searcher.suggest("t3") is None  # all 3 running: wait
    for trial_id in ids:
        searcher.on_trial_complete(trial_id, dict(RESULT))
    searcher._drain_writes()
    assert searcher.suggest("t4") == searcher.FINISHED
    assert searcher.close() == 0 and searcher.complete == 3


def test_no_trial_is_asked_ahead_that_a_stop_could_leave_unrun():
    spec = from_dict(tiny_spec_dict(name="stops"))
    study = optuna.create_study(directions=spec.directions)
    searcher = AskTellSearcher(study, spec, "image", budget=10, max_failed=2, pipelined=True)
    searcher.suggest("a"), searcher.suggest("b")  # 2 in flight could fail both: the search would stop
    assert searcher._ahead is None and len(study.trials) == 2
    assert searcher.close() == 2


def test_a_failed_ask_ahead_is_raised_where_the_trial_is_wanted(monkeypatch):
    searcher = pipelined_searcher(budget=5)
    searcher.suggest("a")
    searcher._ahead.result(timeout=30)
    searcher._ahead = None  # drop the one asked; the next ask ahead fails
    monkeypatch.setattr(searcher, "_ask_point", lambda *a: (_ for _ in ()).throw(RuntimeError("sampler broke")))
    searcher._ask_ahead()
    with pytest.raises(RuntimeError, match="sampler broke"):
        searcher.suggest("b")


def test_outcomes_are_stored_behind_the_event_loop_in_order(monkeypatch):
    from search.driver import tell

    searcher = pipelined_searcher(budget=10)
    slow_record = tell.record

    def record(*args, **kwargs):
        time.sleep(0.3)
        return slow_record(*args, **kwargs)

    monkeypatch.setattr(tell, "record", record)
    told = []
    searcher.on_told = lambda trial: told.append(trial.number)
    searcher.suggest("a"), searcher.suggest("b")
    started = time.perf_counter()
    searcher.on_trial_complete("a", dict(RESULT))
    searcher.on_trial_complete("b", {**RESULT, "accuracy": 0.8})
    assert time.perf_counter() - started < 0.2  # the loop went on; the writes are behind it
    assert "a" in searcher.live  # RUNNING in the storage until stored: nothing lost on a stop now
    searcher.close()
    assert told == [0, 1]
    assert [t.values[0] for t in searcher.study.trials[:2]] == [0.9, 0.8]


def test_a_failed_write_surfaces_at_the_next_call(monkeypatch):
    from search.driver import tell

    searcher = pipelined_searcher(budget=10)
    searcher.suggest("a")
    monkeypatch.setattr(tell, "record", lambda *a, **k: (_ for _ in ()).throw(ValueError("storage bug")))
    searcher.on_trial_complete("a", dict(RESULT))
    for write in list(searcher._writes):
        write.exception(timeout=30)
    with pytest.raises(ValueError, match="storage bug"):
        searcher.suggest("b")


# --- SIGTERM and SIGHUP act as Ctrl-C ---------------------------------------------------------


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler while the test runs (an earlier Tune run in this
    process may have left its own in place)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_raises_what_ctrl_c_raises_and_sets_the_exit_code(signum, code, python_ctrl_c):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt):
        with stop_signals.caught():
            signal.raise_signal(signum)
            time.sleep(1)  # the handler runs between bytecodes
    assert stop_signals.received() == signum and stop_signals.exit_code() == code
    assert signal.getsignal(signum) == before  # restored on the way out


def test_nested_blocks_put_the_handlers_back_after_something_replaced_them():
    with stop_signals.caught():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what ray.init does with its own handler
        with stop_signals.caught():
            assert signal.getsignal(signal.SIGTERM) is stop_signals._handler
        assert signal.getsignal(signal.SIGTERM) is stop_signals._handler
    assert stop_signals.exit_code() == 130  # nothing received: Ctrl-C's code


def test_no_stop_signal_means_ctrl_c_exit_code():
    with stop_signals.caught():
        pass
    assert stop_signals.received() is None and stop_signals.exit_code() == 130

