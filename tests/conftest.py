"""Shared fixtures: one local Ray per test session, tiny fast specs, a CLI runner, a
throwaway PostgreSQL server; and the guard that keeps the resource markers true.

Markers (registered in pyproject.toml): `ray` (starts Ray), `cluster` (a multi-node
Ray cluster on loopback; also `ray`), `postgres` (a PostgreSQL server), `slow` (end to
end). `pytest -m "not ray"` is the quick tier. A test not marked `ray` that starts Ray
fails: in this process `ray.init` and the loopback cluster raise and `ray.is_initialized`
says False, and $PARETUNE_NO_RAY makes a driver subprocess raise before it starts Ray
(`search.driver.launcher.init_ray`). A test using the `ray_local` or `postgres_url` fixture
without its marker fails too, at collection where pytest can see it, else at setup."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# One intra-op thread per test process and per process a test starts (drivers, the
# benchmarks' subprocesses), set before anything imports torch. torch's default is a
# thread per core, spinning between ops: two pytest workers on two cores then fight
# over them (the quick tier, `-n 2`: 209 s with the default, 90 s with one thread). A
# trial sets its own count (resources.cpus_per_trial), so searches run as they would.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from tests.raycluster import free_port  # noqa: E402

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

ROOT = Path(__file__).resolve().parents[1]

# A spec small enough that a trial takes about a second: tiny widths, 2 epochs, few repeats.
TINY_SPEC = {
    "name": "tiny",
    "task": "digits",
    "seed": 0,
    "sampler": "tpe",
    "budget": {"trials": 6, "concurrency": 2, "epochs": 2},
    "measure": {"repeats": 10, "warmup": 2},
    "space": {
        "architecture": {"families": ["mlp", "mobilenet"], "width": [8, 16], "depth": [1, 2]},
        "pruning": {"finetune_epochs": 1},
        "quantization": {"qat_epochs": 1, "calibration_batches": 2},
    },
}


def tiny_spec_dict(**overrides) -> dict:
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def sample_many(spec, n=60, task_kind="image", seed=1, plugins=None) -> list[dict]:
    """`n` configs drawn by a seeded random sampler through the dimension registry."""
    import optuna

    from search.tasks.plugins import suggest_params

    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(suggest_params(trial, spec, task_kind, plugins))
        study.tell(trial, 0.0)
    return configs


@pytest.fixture
def tiny_spec():
    from search.core.spec import from_dict

    return lambda **overrides: from_dict(tiny_spec_dict(**overrides))


# --- the resource markers, kept true ------------------------------------------------------

NO_RAY_ENV = "PARETUNE_NO_RAY"
_current: pytest.Item | None = None  # the test being set up, run or torn down
_no_ray: pytest.MonkeyPatch | None = None


def _require(marker: str, what: str) -> None:
    """Fail the current test unless it is marked `marker`."""
    if _current is not None and _current.get_closest_marker(marker) is None:
        pytest.fail(f"{_current.nodeid} {what} but is not marked @pytest.mark.{marker}", pytrace=False)


def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        fixtures = set(getattr(item, "fixturenames", ()))
        if "cluster" in marks and "ray" not in marks:
            wrong.append(f"{item.nodeid}: marked cluster but not ray")
        if "ray_local" in fixtures and "ray" not in marks:
            wrong.append(f"{item.nodeid}: uses ray_local but is not marked ray")
        if "postgres_url" in fixtures and "postgres" not in marks:
            wrong.append(f"{item.nodeid}: uses postgres_url but is not marked postgres")
    if wrong:
        raise pytest.UsageError("tests without the marker of a resource they use:\n  " + "\n  ".join(wrong))


def _refuse_ray(*args, **kwargs):
    raise RuntimeError(f"{_current.nodeid if _current else 'this test'} starts Ray but is not marked @pytest.mark.ray")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of a test not marked `ray` is set up: no Ray for it."""
    global _current, _no_ray
    _current = item
    if item.get_closest_marker("ray") is None:
        import ray

        from tests import raycluster

        _no_ray = pytest.MonkeyPatch()
        _no_ray.setenv(NO_RAY_ENV, item.nodeid)
        _no_ray.setattr(ray, "init", _refuse_ray)
        _no_ray.setattr(ray, "is_initialized", lambda: False)  # not the session's Ray of an earlier test either
        _no_ray.setattr(raycluster.LoopbackCluster, "_start", _refuse_ray)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    global _current, _no_ray
    if _no_ray is not None:
        _no_ray.undo()  # before the fixtures' teardown: the session's Ray shuts down as usual
        _no_ray = None
    try:
        return (yield)
    finally:
        _current = None


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session: starting Ray costs seconds."""
    _require("ray", "starts Ray (the ray_local fixture)")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def write_toml(path: Path, data: dict) -> Path:
    """Write a test spec with the exporter's TOML writer."""
    from search.core.toml_text import dumps

    path.write_text(dumps(data))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )



def fresh_imports(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported once `code` ran (what a driver
    or a CLI call would load); the test fails where `code` does."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + [
        str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])
    ]:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temp dir, TCP on 127.0.0.1
    only, password auth); skipped, saying why, where no PostgreSQL binaries exist."""
    _require("postgres", "needs PostgreSQL (the postgres_url fixture)")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) installed; .ci/run installs them with CI=true")
    # initdb refuses to run as root: as root, run the server as the `postgres` user.
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="paretune-pg-"))
    password = secrets.token_hex(16)
    (root / "pw").write_text(password)
    if owner is not None:
        for path in (root, root / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    run = lambda *args: subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    done = run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "paretune", "--pwfile", str(root / "pw"),
               "--auth", "scram-sha-256", "--no-sync")
    assert done.returncode == 0, done.stderr
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    done = run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", options, "-l", str(root / "log"), "-w", "start")
    assert done.returncode == 0, done.stderr + (root / "log").read_text(errors="replace")
    try:
        yield f"postgresql://paretune:{password}@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# --- training and accuracy in one call, for tests of single dimensions ------------------


def train(model, task, params, epochs, *, seed=0, lr_scale=1.0, constant_lr=False, augment=None, epoch_hooks=(), pause=None):
    """Train `model` with a fixed recipe in `params` through paretune's own loop."""
    from search.trial.training import fit, recipe_hooks

    hooks = recipe_hooks(params)
    if augment is not None:
        hooks.transforms.append(augment)
    hooks.epoch_hooks.extend(hook.on_epoch_end for hook in epoch_hooks)
    if pause is not None:
        hooks.pause = pause
    return fit(model, task, hooks, epochs, seed=seed, lr_scale=lr_scale, constant_lr=constant_lr)


def acc(model, task, split="val") -> float:
    """Top-1 accuracy on a split of an in-memory task."""
    from objectives import accuracy
    from search.tasks.task import loader

    return accuracy.measure(model, loader(getattr(task, split), 512)).value


def predict(model, X):
    """Predicted classes of the rows of an array."""
    import numpy as np
    import torch

    from objectives import accuracy

    return accuracy.predict(model, [(torch.from_numpy(np.ascontiguousarray(X)), np.zeros(len(X)))])[0]
