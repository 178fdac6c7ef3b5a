"""A study mirrored into MLflow, where teams already keep their experiments.

- One experiment per study (its name, or `[tracking] experiment`), one parent run for
  the study (the spec as params and `spec.json`; after each driver's search the front
  table, the knee and its trade, hypervolume over trials and the front plot) and one
  nested run per finished trial (params, objective values and the measured attrs as
  metrics, state, prune or fail reason, the node it ran and was measured on).
- Idempotent: `Mirror.sync` logs the finished trials MLflow does not have yet, so every
  driver of a study, a resume and `paretune track` may call it; none logs a trial
  twice. Two drivers that race to the same trial (or to the parent run) may both
  create one; each sync keeps the oldest and deletes the others (and moves the
  children of a deleted parent), so the runs converge to one each.
- Never in the search's way: `Tracker` syncs on its own thread after each trial. A
  tracking server that is down is one notice; the thread retries every RETRY_S and the
  runs catch up when it is back (or at the next launch, or `paretune track`).

mlflow is an optional extra (`pip install -e ".[mlflow]"`): it is imported only when
tracking is on.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.core.errors import UsageError
from search.core.records import MLFLOW_ATTR  # noqa: F401 - the study attr this module's callers set and read
from search.results import pareto as fronts

ROLE_TAG = "paretune.role"  # "study" on the parent run, "trial" on a trial's run
STUDY_TAG = "paretune.study"
TRIAL_TAG = "paretune.trial"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
# While MLflow is down, the tracker tries again this often (seconds; $PARETUNE_TRACKING_RETRY_S).
RETRY_S = float(os.environ.get("PARETUNE_TRACKING_RETRY_S", "10"))
REASON_ATTRS = ("prune_reason", "fail_reason")
NOTE_TAG, NOTE_CHARS = "mlflow.note.content", 8000  # a run's Description in the MLflow UI
# MLflow's limits: 500-char keys; 6000-char param values; 100 params, 100 tags, 1000 metrics per batch.
PARAM_CHARS, TAG_CHARS, BATCH = 6000, 5000, 100


def check_installed() -> None:
    """Tracking asked for without the extra: one line, before the search starts."""
    try:
        import mlflow  # noqa: F401 - heavy optional extra, imported only to check it is there
    except ImportError:
        raise UsageError('tracking.mlflow: mlflow is not installed; pip install -e ".[mlflow]"') from None


def _ms(when) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


def _flat(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested spec tables as MLflow params: `budget.trials` = "40"."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return flat


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def trial_record(trial: FrozenTrial, objective_names: list[str]) -> tuple[dict, dict, dict]:
    """(params, metrics, tags) of a trial's run: numbers the trial measured are metrics,
    words are tags; the objective values win over an attr of the same name."""
    params = {k: str(v)[:PARAM_CHARS] for k, v in trial.params.items()}
    metrics = {k: n for k, v in trial.user_attrs.items() if (n := _number(v)) is not None}
    if trial.values is not None:
        metrics.update(zip(objective_names, (float(v) for v in trial.values)))
    tags = {
        ROLE_TAG: "trial",
        TRIAL_TAG: str(trial.number),
        "paretune.state": trial.state.name,
    }
    for key in REASON_ATTRS:
        if trial.user_attrs.get(key):
            tags[f"paretune.{key}"] = str(trial.user_attrs[key])[:TAG_CHARS]
    attrs = trial.user_attrs
    if attrs.get("hostname"):
        tags["paretune.node"] = f"{attrs['hostname']} ({attrs['node_ip']})" if attrs.get("node_ip") else attrs["hostname"]
    if attrs.get("measure_host"):
        tags["paretune.measured_on"] = attrs["measure_host"]
    for key, value in attrs.items():
        if isinstance(value, str) and value and key not in REASON_ATTRS:
            tags.setdefault(f"paretune.attr.{key}", value[:TAG_CHARS])
    return params, metrics, tags


class Mirror:
    """One study's runs in one MLflow tracking store."""

    def __init__(self, uri: str, study: optuna.Study, experiment: str | None = None):
        from mlflow import MlflowClient  # heavy optional extra: only with tracking on

        self.uri, self.study = uri, study
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_name = experiment or study.study_name
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._known: set[int] | None = None  # trial numbers with a run, as of the last full sync and since

    # --- finding and creating runs ---------------------------------------------------

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                from mlflow.exceptions import MlflowException

                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, tags={STUDY_TAG: self.study.study_name})
                except MlflowException:  # another driver created it first: a name is unique
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _runs(self, role: str, extra: str = "") -> list:
        found, token = [], None
        query = f"tags.`{ROLE_TAG}` = '{role}' and tags.`{STUDY_TAG}` = '{self.study.study_name}'" + extra
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    @staticmethod
    def _oldest_first(runs: list) -> list:
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def parent_id(self) -> str:
        """The study's run: created once; of two that racing drivers created, the older stays."""
        parents = self._oldest_first(self._runs("study"))
        if not parents:
            self._create_parent()
            parents = self._oldest_first(self._runs("study"))
        keep, extra = parents[0], parents[1:]
        for loser in extra:
            self.client.delete_run(loser.info.run_id)
        # Every trial run not under the kept parent moves to it: the children of a parent
        # deleted now, and those a racing driver logged later under the parent it had read
        # before that parent was deleted (its syncs between trials trust what it read).
        for child in self._runs("trial", f" and tags.`{PARENT_TAG}` != '{keep.info.run_id}'"):
            self.client.set_tag(child.info.run_id, PARENT_TAG, keep.info.run_id)
        return keep.info.run_id

    def _create_parent(self) -> None:
        spec = self.study.user_attrs.get("spec") or {}
        run = self.client.create_run(
            self.experiment_id, start_time=_ms(min((t.datetime_start for t in self.study.get_trials(deepcopy=False)
                                                   if t.datetime_start), default=None)) or int(time.time() * 1000),
            run_name=self.study.study_name, tags={ROLE_TAG: "study", STUDY_TAG: self.study.study_name},
        )
        params = list(_flat(spec).items())
        self._batch(run.info.run_id, params=params)
        self.client.log_dict(run.info.run_id, spec, "spec.json")

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> its run id; duplicates (two drivers raced) deleted, the oldest kept."""
        by_number: dict[int, list] = {}
        for run in self._runs("trial"):
            by_number.setdefault(int(run.data.tags[TRIAL_TAG]), []).append(run)
        kept = {}
        for number, runs in by_number.items():
            keep, *extra = self._oldest_first(runs)
            for run in extra:
                self.client.delete_run(run.info.run_id)
            kept[number] = keep.info.run_id
        return kept

    def trial_run_id(self, number: int) -> str:
        """The run of trial `number`, logged first if it is not there yet."""
        runs = self.trial_runs()
        if number not in runs:
            self.sync()
            runs = self.trial_runs()
        return runs[number]

    # --- logging ---------------------------------------------------------------------

    def _batch(self, run_id: str, params=(), metrics=(), tags=()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in params]
        metrics = [m if isinstance(m, Metric) else Metric(m[0], m[1], now, 0) for m in metrics]
        tags = [RunTag(k, v) for k, v in tags]
        for start in range(0, max(len(params), len(metrics), len(tags)), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH], params=params[start:start + BATCH],
                                  tags=tags[start:start + BATCH])

    def sync(self, *, full: bool = True) -> int:
        """Log each finished trial MLflow does not have; returns how many. `full=False`
        (a driver between its own trials) trusts what this mirror read and logged before
        instead of reading every run back: three requests per new trial rather than a
        search of the whole experiment per trial (a full sync at the start, after an
        outage and at the end still finds what other drivers did)."""
        if full or self._known is None:
            self._parent = self.parent_id()
            self._known = set(self.trial_runs())
        names = self.study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(self.study.directions))]
        added = 0
        for trial in self.study.get_trials(deepcopy=False, states=FINISHED):
            if trial.number in self._known:
                continue
            params, metrics, tags = trial_record(trial, names)
            run = self.client.create_run(
                self.experiment_id, start_time=_ms(trial.datetime_start), run_name=f"trial {trial.number}",
                tags={ROLE_TAG: "trial", STUDY_TAG: self.study.study_name, TRIAL_TAG: str(trial.number),
                      PARENT_TAG: self._parent},
            )
            self._batch(run.info.run_id, params=list(params.items()), metrics=list(metrics.items()), tags=list(tags.items()))
            self.client.set_terminated(run.info.run_id, RUN_STATUS[trial.state], end_time=_ms(trial.datetime_complete))
            self._known.add(trial.number)
            added += 1
        return added

    def forget(self) -> None:
        """The next sync reads every run back (a call failed half-way)."""
        self._known = None

    def log_summary(self) -> None:
        """The parent run's front: table, knee and trade, hypervolume over trials, plot."""
        from mlflow.entities import Metric

        from search.results import front_table, plots  # deferred: plots import matplotlib and plotly

        parent = self.parent_id()
        report = fronts.report(self.study)
        front_json = report.to_json(self.study.study_name)
        history = report.history()  # a hypervolume per trial: computed once, used twice
        metrics = [(f"trials_{state.name.lower()}", float(sum(t.state == state for t in report.trials)))
                   for state in FINISHED] + [("front_size", float(len(report.front)))]
        tags = []
        if report.reference:
            metrics.append(("front_hypervolume", report.hypervolume))
            # Hypervolume after each trial, from where the last summary left off (MLflow keeps
            # every logged step; a step is not rewritten when the reference point moves).
            done = {m.step for m in self.client.get_metric_history(parent, "hypervolume")}
            now = int(time.time() * 1000)
            metrics += [Metric("hypervolume", hv, now, number) for number, hv in history if number not in done]
        knee = report.knee
        if knee is not None:
            words = front_json["knee_trade"]
            tags += [("paretune.knee", f"trial {knee.number}"), ("paretune.knee_trade", (words or "")[:TAG_CHARS])]
            metrics += [(f"knee_{n}", float(v)) for n, v in zip(report.objectives.names, knee.values)]
        table = front_table.markdown(report)
        if len(table) <= NOTE_CHARS:  # the run's Description in the MLflow UI
            tags.append((NOTE_TAG, table))
        self._batch(parent, metrics=metrics, tags=tags)
        self.client.log_dict(parent, front_json, "front.json")
        self.client.log_text(parent, table, "front.md")
        if history:
            rows = "trial,hypervolume\n" + "".join(f"{n},{hv}\n" for n, hv in history)
            self.client.log_text(parent, rows, "hypervolume.csv")
        if len(report.front) and len(report.objectives.names) >= 2:
            with tempfile.TemporaryDirectory() as scratch:
                self.client.log_artifact(parent, str(plots.plot(report, Path(scratch) / "front.png")))
        # Finished as of its last trial (a resume logs to it again; MLflow allows that).
        last = max((t.datetime_complete for t in report.trials if t.datetime_complete), default=None)
        self.client.set_terminated(parent, "FINISHED", end_time=_ms(last))

    def log_files(self, number: int, files: list[Path], artifact_path: str) -> str:
        """Attach files to trial `number`'s run; returns the run id."""
        run_id = self.trial_run_id(number)
        for path in files:
            self.client.log_artifact(run_id, str(path), artifact_path)
        return run_id

    def register(self, number: int, run_id: str, artifact_path: str, name: str, tags: dict[str, str]) -> int:
        """A new version of registered model `name` from the run's `artifact_path`; its version number."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={STUDY_TAG: self.study.study_name})
        except MlflowException:
            pass  # registered before: a new version of it
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        version = self.client.create_model_version(name, source, run_id=run_id, tags={**tags, TRIAL_TAG: str(number)},
                                                   await_creation_for=0)  # files: nothing to wait for, and no log line
        return int(version.version)


# What MLflow's client errors come down to, in a user's words (its text is a long URL and
# urllib3's retry chain).
CAUSES = (("Connection refused", "connection refused"), ("timed out", "timed out"),
          ("Name or service not known", "unknown host"), ("Temporary failure in name resolution", "unknown host"),
          ("Connection reset", "connection reset"), ("RemoteDisconnected", "connection closed"))


def cause(exc: BaseException) -> str:
    """Why an MLflow call failed, in a few words (`CAUSES`); else the error's first line."""
    text = str(exc).strip()
    for needle, words in CAUSES:
        if needle in text:
            return words
    lines = text.splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def client_settings() -> None:
    """MLflow's HTTP client retries a refused connection for minutes by default: the
    tracker has its own retry loop, so one attempt and a short timeout are enough.
    And a run's end prints two "View run" lines to stdout per run: the search's
    output is paretune's own (the end of `launch` says where the runs are). A user's
    own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class Tracker:
    """A driver's MLflow mirror on its own thread: a sync after each told trial, every
    RETRY_S while MLflow is down, and a last sync with the front at `stop`."""

    def __init__(self, uri: str, study: optuna.Study, *, experiment: str | None = None,
                 say: Callable[[str], None] = print):
        client_settings()
        self.uri, self.say = uri, say
        self.mirror = Mirror(uri, study, experiment)
        self.logged = 0
        self.down_since: float | None = None
        self._wake, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paretune-mlflow", daemon=True)

    def start(self) -> "Tracker":
        self._thread.start()
        return self

    def told(self, trial: FrozenTrial | None = None) -> None:
        self._wake.set()

    def _sync(self, full: bool = False) -> bool:
        try:
            added = self.mirror.sync(full=full or self.down_since is not None)
        except Exception as exc:  # noqa: BLE001 - tracking never breaks the search
            self.mirror.forget()  # what went through before the failure is read back next time
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.say(f"MLflow at {self.uri} unreachable ({cause(exc)}): the search goes on; "
                         f"its runs catch up when MLflow is back")
            return False
        self.logged += added
        if self.down_since is not None:
            self.say(f"MLflow at {self.uri} is back: {added} run(s) caught up")
            self.down_since = None
        return True

    def _loop(self) -> None:
        while not self._done.is_set():
            self._sync()
            self._wake.wait(RETRY_S)
            self._wake.clear()

    def stop(self, timeout: float = 60.0) -> str:
        """Stop the thread, sync the rest and log the front; returns a line for the user."""
        self._done.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._sync(full=True):
            return (f"MLflow at {self.uri} still unreachable: trial runs of this study are not all logged yet; "
                    f"the next launch of the study or `paretune track {self.mirror.study.study_name}` logs them")
        try:
            self.mirror.log_summary()
        except Exception as exc:  # noqa: BLE001 - the trial runs are in; the summary is redone next time
            return f"MLflow: trial runs logged, the study's front not ({cause(exc)})"
        return (f"MLflow: experiment {self.mirror.experiment_name!r} at {self.uri}: the study's run and "
                f"{len(self.mirror.trial_runs())} trial runs ({self.logged} logged by this driver)")


def log_export(uri: str, study: optuna.Study, number: int, path: Path, experiment: str | None = None) -> str:
    """`paretune export`: the exported config in trial `number`'s run (under export/); its run id."""
    client_settings()
    return Mirror(uri, study, experiment).log_files(number, [path], "export")


def log_trained(uri: str, study: optuna.Study, number: int, files: list[Path], *, model_name: str,
                tags: dict[str, str], experiment: str | None = None) -> tuple[str, int]:
    """`paretune train`: what it ships (model, state dicts, card, config) in trial
    `number`'s run under model/, registered as a new version of `model_name` with
    `tags` (the trial's front values, the retrained test accuracy); (run id, version)."""
    client_settings()
    mirror = Mirror(uri, study, experiment)
    run_id = mirror.log_files(number, files, "model")
    return run_id, mirror.register(number, run_id, "model", model_name, tags)
