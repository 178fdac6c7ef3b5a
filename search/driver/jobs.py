"""Searches as Ray Jobs: `paretune submit` runs the search's driver on the cluster's
head node, so it outlives the laptop that submitted it.

The job's runtime_env carries everything the head needs: a working_dir with the spec
(rewritten with the budget overrides; a task file copied beside it) and `py_modules`
with this checkout's packages; the storage URL travels as the job's PARETUNE_STORAGE
(not in the command line or the metadata, which `ray job list` shows to every token
holder). The entrypoint is `python -m search launch spec.toml --address $RAY_ADDRESS`
(Ray sets RAY_ADDRESS for a job's driver to its own GCS address). Each job's metadata
names its study (`paretune_study`), so `paretune status NAME --address URL` lists them.

Token authentication: JobSubmissionClient sends the token Ray finds (RAY_AUTH_TOKEN,
the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) when RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search.core.errors import UsageError
from search.core.spec import StudySpec, TaskFile, is_file_reference, to_toml_dict
from search.core.toml_text import dumps
from search.driver.cluster import code_runtime_env

STUDY_KEY = "paretune_study"
SPEC_FILE = "spec.toml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class JobRow:
    job_id: str
    status: str
    start_time: float | None
    end_time: float | None
    message: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def client(address: str):
    """A JobSubmissionClient for the head's dashboard URL; an unreachable or refusing
    server is a UsageError naming the address."""
    if not address.startswith(("http://", "https://")):
        raise UsageError(f"--address {address}: expected the Ray dashboard URL, http://HEAD:8265")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection, auth and version errors vary
        raise UsageError(f"--address {address}: cannot reach the Ray job server ({_first_line(exc)})") from None


def check_storage(url: str | None) -> str:
    """The job runs in a temporary directory on the head: a relative file path would
    land there and vanish with it."""
    if not url:
        raise UsageError("--storage: required for submit (the head must reach it): postgresql://..., sqlite:////abs/path.db or journal:///abs/path.log")
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix) and not url[len(prefix):].startswith("/"):
            raise UsageError(f"--storage {url}: use an absolute path ({prefix}/abs/path); the job's working directory is temporary")
    if "://" not in url:
        raise UsageError(f"--storage {url}: not a storage URL (use postgresql://..., sqlite:////abs/path.db, journal:///abs/path.log)")
    return url


def _stage_reference(text: str, directory: Path, key: str) -> str:
    """A `file.py:name` reference: the file goes into the job's working_dir, the
    reference is rewritten to it; module references stay as they are."""
    if not is_file_reference(text):
        return text
    where, _, name = text.rpartition(":")
    source = Path(where)
    if not source.is_file():
        raise UsageError(f"{key}: {source}: no such file")
    shutil.copy2(source, directory / source.name)
    return f"{source.name}:{name}"


def stage(spec: StudySpec, directory: Path) -> Path:
    """Write what the job's working_dir holds: the spec and, if any, its task file and
    the user's code files (model factory, training loop, task factory, dimensions). An
    image folder is not copied: the head must reach it at the same absolute path."""
    data = to_toml_dict(spec)
    if isinstance(spec.task, TaskFile) and spec.task.path is not None:
        source = Path(spec.task.path)
        if not source.is_file():
            raise UsageError(f"task.path {source}: no such file")
        shutil.copy2(source, directory / source.name)
        data["task"] = {**data["task"], "path": source.name}
    if isinstance(spec.task, TaskFile) and spec.task.factory is not None:
        data["task"] = {**data["task"], "factory": _stage_reference(spec.task.factory, directory, "task.factory")}
    if spec.model_factory is not None:
        data["model"] = {"factory": _stage_reference(spec.model_factory, directory, "model.factory")}
    if spec.weights is not None:
        weights = spec.weights
        if is_file_reference(weights) or ":" not in weights:  # a file travels with the job
            where, sep, name = weights.rpartition(":") if ":" in weights else (weights, "", "")
            if not Path(where).is_file():
                raise UsageError(f"model.weights {where}: no such file")
            shutil.copy2(where, directory / Path(where).name)
            weights = Path(where).name + (f"{sep}{name}" if sep else "")
        data["model"] = {**data.get("model", {}), "weights": weights}
    if spec.train.loop is not None:
        data["train"] = {"loop": _stage_reference(spec.train.loop, directory, "train.loop")}
    if spec.space.custom.dimensions:
        data["space"]["custom"] = {
            "dimensions": [_stage_reference(d, directory, "space.custom.dimensions") for d in spec.space.custom.dimensions]
        }
    path = directory / SPEC_FILE
    path.write_text(dumps(data))
    return path


JOB_STOP_WAIT_S = 60


def submit(spec: StudySpec, address: str, storage_url: str | None) -> str:
    """Submit the search; returns the job id."""
    url = check_storage(storage_url)
    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="paretune-job-") as staging:
        stage(spec, Path(staging))
        runtime_env = {
            **code_runtime_env(),
            "working_dir": staging,
            # `ray job stop` sends SIGTERM, which the search takes as Ctrl-C (search.driver.stop_signals);
            # Ray's default 3 s before SIGKILL is too short to store the running trials FAIL.
            "env_vars": {"PARETUNE_STORAGE": url, "RAY_USAGE_STATS_ENABLED": "0",
                         "RAY_JOB_STOP_WAIT_TIME_S": str(JOB_STOP_WAIT_S)},
        }
        try:
            return jobs.submit_job(
                entrypoint=f'python -m search launch {SPEC_FILE} --address "$RAY_ADDRESS"',
                runtime_env=runtime_env,
                metadata={STUDY_KEY: spec.name},
            )
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"--address {address}: job submission refused ({_first_line(exc)})") from None


def wait(address: str, job_id: str, echo: Callable[[str], None], poll_s: float = 2.0) -> str:
    """Print the job's log as it grows until the job ends; returns its final status."""
    jobs = client(address)
    printed = 0
    while True:
        status = str(jobs.get_job_status(job_id))
        logs = jobs.get_job_logs(job_id)
        if len(logs) > printed:
            echo(logs[printed:].rstrip("\n"))
            printed = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def jobs_for(address: str, study: str) -> list[JobRow]:
    """The jobs whose metadata names `study`, oldest first."""
    rows = []
    for job in client(address).list_jobs():
        if (job.metadata or {}).get(STUDY_KEY) != study:
            continue
        rows.append(JobRow(
            job_id=job.submission_id or job.job_id or "?",
            status=str(job.status),
            start_time=job.start_time / 1000 if job.start_time else None,
            end_time=job.end_time / 1000 if job.end_time else None,
            message=(job.message or "").strip().splitlines()[0][:200] if job.message else "",
        ))
    return sorted(rows, key=lambda r: r.start_time or 0)


def job_message(address: str, job_id: str) -> str:
    info = client(address).get_job_info(job_id)
    return (info.message or "").strip()
