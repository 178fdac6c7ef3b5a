"""Ending what is left of a local Ray whose driver died without shutting it down.

`ray.init()` starts a local Ray as children of the driver. When the driver is killed
(kill -9, the OOM killer), most of Ray follows it, but its DashboardAgent and
RuntimeEnvAgent outlive it, re-parented to init (about 200 MB). `watch()` starts this
file as a small process in its own session (so a kill of the driver's process group
spares it) that waits until the driver or its Ray is gone, then ends exactly the
processes of that Ray session, SIGTERM first, SIGKILL after a grace period:

- processes that run a file of Ray's package with the session directory in an option
  (GCS, raylet, dashboard, monitors);
- processes whose environment names the session's node (`RAY_NODE_ID`: the agents);
- processes whose environment names a raylet of the session (`RAY_RAYLET_PID`: the
  workers), started after the driver, so a reused pid never matches.

Nothing is matched by process name. Linux only (it reads /proc); elsewhere `watch`
does nothing. Standard library only: it must start fast and never import Ray.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
POLL_S = 1.0
TERM_GRACE_S = 5.0


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _argv(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def runs_ray_server(argv: list[str], ray_dir: str, session_dir: str) -> bool:
    """A Ray program (its file inside Ray's package) given the session directory in an
    option; a `tail` of one of the session's logs is neither."""
    return any(a.startswith(ray_dir) for a in argv[:3]) and any(a.startswith("--") and session_dir in a for a in argv)


def session_processes(session_dir: str, node_id: str, raylets: set[int], not_before: int, ray_dir: str) -> dict[int, int]:
    """pid -> start time of every process of the Ray session, by the rules above."""
    found: dict[int, int] = {}
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        started = start_time(pid)
        if started is None:
            continue
        if runs_ray_server(_argv(pid), ray_dir, session_dir):
            found[pid] = started
            continue
        env = _environ(pid)
        if node_id and env.get("RAY_NODE_ID") == node_id:
            found[pid] = started
        elif env.get("RAY_RAYLET_PID", "").isdigit() and int(env["RAY_RAYLET_PID"]) in raylets and started >= not_before:
            found[pid] = started
    return found


def _alive(pid: int, started: int) -> bool:
    return start_time(pid) == started


def reap(session_dir: str, node_id: str, raylets: set[int], not_before: int, ray_dir: str, exclude: set[int]) -> list[int]:
    """End the session's processes; returns the pids that were still there."""
    targets = {
        p: s for p, s in session_processes(session_dir, node_id, raylets, not_before, ray_dir).items() if p not in exclude
    }
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in targets.items()):
        time.sleep(0.2)
    for pid, started in targets.items():
        if _alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return sorted(targets)


def run(driver_pid: int, session_dir: str, node_id: str, ray_dir: str) -> None:
    driver_started = start_time(driver_pid)
    if driver_started is None:
        return
    # The session's servers (GCS, raylet, ...); the raylet is whom the workers name in
    # RAY_RAYLET_PID. Once the driver or all of them are gone, the rest are orphans.
    servers = session_processes(session_dir, "", set(), driver_started, ray_dir)
    while _alive(driver_pid, driver_started) and any(_alive(p, s) for p, s in servers.items()):
        time.sleep(POLL_S)
    exclude = {driver_pid} if _alive(driver_pid, driver_started) else set()
    reap(session_dir, node_id, set(servers), driver_started, ray_dir, exclude)


def watch(session_dir: str, node_id: str, ray_dir: str) -> subprocess.Popen | None:
    """Start the watcher for this process's local Ray session (`ray_dir`: the
    directory of the `ray` package)."""
    if not PROC.is_dir() or not session_dir:
        return None
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(os.getpid()), session_dir, node_id, ray_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
