"""Connecting the search to Ray: a local Ray, or an existing cluster.

- Local (no address): Ray 2.60 turns token authentication on for a Ray that
  `ray.init` starts; paretune makes sure the token file it falls back to
  (~/.ray/auth_token) is created mode 0600 rather than world-readable, and
  `local_only()` keeps that Ray's servers on 127.0.0.1 (set before Ray is imported).
- Existing cluster (`auto`, HOST:PORT, ray://HOST:10001): the search's own code
  travels to the workers in the job's `runtime_env` (`py_modules` = the packages
  search, spaces, objectives), so worker nodes need Ray, torch and the other
  dependencies but not paretune itself, and always run the driver's version of it.
  Inside a Ray Job (`paretune submit`) the job's runtime_env already carries it.
- A cluster that refuses this driver's token: `ray.init` would retry for ~30 s,
  printing Ray's InvalidAuthToken warning each time, and end with "Failed to connect".
  A GCS client fails at once on it instead (`check_token`), so the launch stops in
  about a second with one line naming where the token came from (Ray's order:
  RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token).
- A local Ray is watched by `search.driver.ray_reaper`: if the driver dies without shutting
  it down (kill -9), the processes of its Ray session are ended too.
- A local Ray's processes run in a process group of their own (`own_process_group`):
  a SIGTERM or SIGHUP sent to the driver's group (`timeout`, a closed terminal)
  reaches the driver, which stops the search and shuts that Ray down itself, rather
  than killing Ray under a search that still needs it to stop its trials
  (search.driver.stop_signals).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from search.core.errors import UsageError
from search.driver import ray_reaper

# Ray reads these when it is imported; on Linux, "cluster support off" makes a Ray
# started by ray.init use 127.0.0.1 as its node address and bind its servers there.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
TOKEN_PATH = Path.home() / ".ray" / "auth_token"


def local_only() -> None:
    """Call before `import ray` in a process that will start its own local Ray."""
    for key, value in LOCAL_ONLY_ENV.items():
        os.environ.setdefault(key, value)


def ensure_private_token(path: Path = TOKEN_PATH) -> None:
    """Write the default token file ourselves (0600) before Ray writes it world-readable."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))  # the same form as Ray's own tokens


def code_runtime_env() -> dict:
    """The runtime_env that ships this checkout's packages to every worker."""
    # find_spec locates each package without importing it (spaces would import torch).
    folders = [importlib.util.find_spec(name).submodule_search_locations[0] for name in ("search", "spaces", "objectives")]
    return {"py_modules": [Path(folder).as_posix() for folder in folders]}


def token_source() -> str:
    """Where Ray takes this process's token from, in Ray's own order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(TOKEN_PATH)


def refused_token_hint(source: str, token_mode: bool) -> str:
    """What to do about a token the cluster refused (or none sent): where to put the right one."""
    if not token_mode:
        return ("the cluster wants a token and none was sent (RAY_AUTH_MODE is not token): "
                "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file")
    if source == "RAY_AUTH_TOKEN":
        return ("the cluster refused the token in RAY_AUTH_TOKEN: set it to the cluster's token, "
                "or unset it and set RAY_AUTH_TOKEN_PATH to the cluster's token file")
    return (f"the cluster refused the token in {source}: set RAY_AUTH_TOKEN_PATH to the cluster's token file, "
            f"or copy it to {TOKEN_PATH}")


@contextlib.contextmanager
def _stderr_dropped() -> Iterator[None]:
    """Ray's C++ client writes its warnings straight to file descriptor 2."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_token(address: str) -> None:
    """A HOST:PORT cluster must accept this driver's token: a GCS client built with it
    fails at once (AuthenticationError) where `ray.init` retries for ~30 s. Any other
    failure is left to `ray.init` to report."""
    if address == "auto" or "://" in address:
        return
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray._raylet import GcsClient

    try:
        with _stderr_dropped():
            GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        raise UsageError(f"--address {address}: {refused_token_hint(token_source(), is_token_auth_enabled())}") from None
    except Exception:  # noqa: BLE001 - not a token problem: ray.init says what it is
        return


def in_ray_job() -> bool:
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    return RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ


def init(address: str | None) -> bool:
    """Connect to `address` or start a local Ray; returns True if this call started
    (or connected) it, i.e. the caller shuts it down."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING", configure_logging=True)
    if not address:
        ensure_private_token()
        with own_process_group():
            ray.init(**kwargs)
        watch_local_ray()
        return True
    runtime_env = None if in_ray_job() else code_runtime_env()
    check_token(address)
    try:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--address {address}: cannot join the Ray cluster ({first[:300]})") from None
    return True


@contextlib.contextmanager
def own_process_group():
    """While the block runs, the processes Ray starts (GCS, raylet, its agents; the
    raylet's workers follow it) begin a process group of their own. Ray already blocks
    SIGINT in them, so that Ctrl-C reaches the driver alone; this does the same for the
    signals sent to a whole process group. A group, not a session: the kernel's
    autogroup scheduler shares the CPU between sessions equally, and a session of
    their own would let Ray's processes take CPU from the driver's sampler (measured:
    a TPE ask took 4× its CPU time in wall clock, half the trials got done). Without
    Ray's process class (another Ray version) the block runs unchanged."""
    from ray._private import services

    original = getattr(services, "ConsolePopen", None)
    if original is None or not issubclass(original, subprocess.Popen) or os.name != "posix":
        yield
        return

    class InOwnGroup(original):
        def __init__(self, *args, **kwargs):
            then = kwargs.get("preexec_fn")

            def preexec_fn() -> None:
                os.setpgid(0, 0)
                if then is not None:
                    then()

            kwargs["preexec_fn"] = preexec_fn
            super().__init__(*args, **kwargs)

    services.ConsolePopen = InOwnGroup
    try:
        yield
    finally:
        services.ConsolePopen = original


def watch_local_ray() -> None:
    """Make sure the local Ray this driver started does not outlive it (search.driver.ray_reaper)."""
    import ray

    node = ray._private.worker._global_node
    # Only a Ray this process started (ray.init may instead join one named by
    # $RAY_ADDRESS: that one is not ours to end).
    if node is not None and node.head:
        ray_reaper.watch(node.get_session_dir_path(), os.path.realpath(os.path.dirname(ray.__file__)))


def check_resource(name: str | None) -> None:
    """`resources.measure_on` must name a custom resource some node carries."""
    if not name:
        return
    import ray

    carrying = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(name, 0) >= 1]
    if not carrying:
        known = sorted({k for n in ray.nodes() if n.get("Alive") for k in n.get("Resources", {})
                        if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")
                        and not k.startswith("accelerator_type:")})
        raise UsageError(
            f"resources.measure_on: no node in the Ray cluster has the resource {name!r} "
            f"(custom resources: {', '.join(known) or 'none'}); start a node with --resources '{{\"{name}\": 1}}'"
        )
