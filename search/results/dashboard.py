"""What optuna-dashboard shows of paretune beyond the trials themselves.

- Files attached to their trial through an Optuna artifact store beside the storage
  (`artifact_dir`): the config `paretune export` writes, and the model, state dicts and
  model card `paretune train` ships. The dashboard's trial page lists them for download
  (`paretune dashboard` serves it with that store).
- The study's note (the dashboard's own notes, `optuna_dashboard.save_note`): the front
  table, the knee and its trade, and the command that exports it; rewritten after each
  search and export.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from search.core import optuna_internals
from search.core.records import ARTIFACT_PREFIX  # how Optuna keys an artifact's metadata among system attrs
from search.core.storage import add_finished_trial_system_attr
from search.results import front_table
from search.results import pareto as fronts


def artifact_dir(storage_url: str) -> Path:
    """A file storage's artifacts lie beside it (`study.db` -> `study.db.artifacts/`);
    a database server's under $PARETUNE_HOME/artifacts/<hash of the URL>."""
    if storage_url.startswith("sqlite:///"):
        database = make_url(storage_url).database
        if database and database != ":memory:":
            return Path(f"{database}.artifacts")
    if "://" not in storage_url:  # a journal file
        return Path(f"{storage_url}.artifacts")
    home = Path(os.environ.get("PARETUNE_HOME") or Path.home() / ".paretune")
    return home / "artifacts" / hashlib.sha256(storage_url.encode()).hexdigest()[:12]


def artifact_store(storage_url: str) -> optuna.artifacts.FileSystemArtifactStore:
    path = artifact_dir(storage_url)
    path.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(path))


def attach(study: optuna.Study, number: int, files: list[Path], storage_url: str) -> str:
    """Upload `files` and attach them to trial `number` (its page in optuna-dashboard);
    where the storage cannot add to a finished trial (a journal file), to the study,
    named `trial-N-<file>`. Returns where they went, in words."""
    import mimetypes
    import uuid

    store = artifact_store(storage_url)
    storage, study_id = optuna_internals.storage_of(study), optuna_internals.study_id(study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    on_trial, on_study = [], []
    for path in map(Path, files):
        artifact_id = str(uuid.uuid4())
        with open(path, "rb") as handle:
            store.write(artifact_id, handle)
        mimetype, encoding = mimetypes.guess_type(path.name)
        if path.suffix == ".toml":
            mimetype = "text/plain"  # the dashboard shows it instead of offering a download only
        meta = {"artifact_id": artifact_id, "filename": path.name, "mimetype": mimetype or "application/octet-stream",
                "encoding": encoding}
        if add_finished_trial_system_attr(storage, trial_id, ARTIFACT_PREFIX + artifact_id, json.dumps(meta)):
            on_trial.append(path.name)
        else:
            meta["filename"] = f"trial-{number}-{path.name}"
            storage.set_study_system_attr(study_id, ARTIFACT_PREFIX + artifact_id, json.dumps(meta))
            on_study.append(meta["filename"])
    return "; ".join(
        ([f"{', '.join(on_trial)} attached to trial {number}"] if on_trial else [])
        + ([f"{', '.join(on_study)} attached to the study (this storage cannot add to a finished trial)"] if on_study else []))


def attached(study: optuna.Study, number: int) -> list[dict]:
    """The artifacts attached to trial `number` (read fresh from the storage)."""
    storage = optuna_internals.storage_of(study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(optuna_internals.study_id(study), number)
    attrs = storage.get_trial_system_attrs(trial_id)
    return [json.loads(v) for k, v in attrs.items() if k.startswith(ARTIFACT_PREFIX)]


def note_text(study: optuna.Study, storage_flag: str = "") -> str:
    """The study note: the front table with the knee starred, its trade, and how to export it."""
    report = fronts.report(study)
    body = [f"# {study.study_name}: the Pareto front", "", front_table.markdown(report)]
    if report.front:
        body += ["", "Export the knee and retrain it:", "",
                 f"    {front_table.export_hint(study.study_name, storage_flag)}",
                 f"    paretune train {study.study_name}-best.toml --out {study.study_name}-model/"]
    return "\n".join(body) + "\n"


@functools.cache  # loaded once per process, however many searches or exports write a note
def _save_note():
    """`optuna_dashboard.save_note`, without importing the dashboard's web app.

    The package's `__init__` imports its server, whose parameter-importance view imports
    scikit-learn's forests: 1.2 CPU-s at the end of a lookup-table search, 0.35 s of a
    digits one (which already has scikit-learn's core). The note's own module needs only
    optuna, so it is loaded by itself; where it cannot be (another optuna-dashboard
    layout), the package is imported as usual."""
    import importlib.util
    import sys

    if "optuna_dashboard" in sys.modules:  # already paid for (`paretune dashboard`, tests)
        return sys.modules["optuna_dashboard"].save_note
    try:
        package = importlib.util.find_spec("optuna_dashboard")
        source = Path(next(iter(package.submodule_search_locations))) / "_note.py"
        spec = importlib.util.spec_from_file_location("paretune._optuna_dashboard_note", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.save_note
    except Exception:  # noqa: BLE001 - any other layout: the public import
        import optuna_dashboard

        return optuna_dashboard.save_note


def write_note(study: optuna.Study, storage_flag: str = "") -> bool:
    """Replace the study's note; False where it could not be (nothing finished yet, the storage unreachable)."""
    import warnings

    try:
        text = note_text(study, storage_flag)
        save_note = _save_note()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # save_note is marked experimental
            save_note(study, text)
    except Exception:  # noqa: BLE001 - a note is a convenience (the next search rewrites it); a storage down now must not fail the search
        return False
    return True
