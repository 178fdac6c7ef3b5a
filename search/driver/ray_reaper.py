"""Ending what is left of a local Ray whose driver died without shutting it down.

`ray.init()` starts a local Ray as children of the driver. When the driver is killed
(kill -9, the OOM killer), most of Ray follows it, but its DashboardAgent and
RuntimeEnvAgent outlive it, re-parented to init (about 200 MB). `watch()` starts this
file as a small process in its own session (so a kill of the driver's process group
spares it) that waits until the driver or its Ray's servers are gone, then ends
exactly the processes of that Ray session, SIGTERM first, SIGKILL after a grace
period.

A process belongs to the session when it runs Ray's code (its executable is this
Python or a program inside Ray's package) and holds a file of the session directory
open: every Ray process writes its logs there (GCS, raylet, agents, workers). Nothing
is matched by process name, and command lines and environments are not trusted (Ray's
processes rewrite them with setproctitle). Linux only (it reads /proc); elsewhere
`watch` does nothing. Standard library only: it must start fast and never import Ray.
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


def _stat(pid: int) -> list[str] | None:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it is gone."""
    stat = _stat(pid)
    return int(stat[19]) if stat else None


def parent(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[1]) if stat else None


def _holds_file_under(pid: int, directory: str) -> bool:
    try:
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(PROC / str(pid) / "fd" / fd).startswith(directory):
                return True
        except OSError:
            continue
    return False


def _runs_ray(pid: int, ray_dir: str, python: str) -> bool:
    try:
        exe = os.path.realpath(PROC / str(pid) / "exe")
    except OSError:
        return False
    return exe == python or exe.startswith(ray_dir)


def session_processes(session_dir: str, ray_dir: str, python: str) -> dict[int, int]:
    """pid -> start time of every process of the Ray session (see the module doc)."""
    found: dict[int, int] = {}
    me = os.getpid()
    inside = session_dir.rstrip("/") + "/"
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if _runs_ray(pid, ray_dir, python) and _holds_file_under(pid, inside):
            started = start_time(pid)
            if started is not None:
                found[pid] = started
    return found


def _alive(pid: int, started: int) -> bool:
    return start_time(pid) == started


def reap(session_dir: str, ray_dir: str, python: str, exclude: set[int]) -> list[int]:
    """End the session's processes; returns the pids that were still there."""
    targets = {p: s for p, s in session_processes(session_dir, ray_dir, python).items() if p not in exclude}
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


def run(driver_pid: int, session_dir: str, ray_dir: str) -> None:
    driver_started = start_time(driver_pid)
    if driver_started is None:
        return
    python = os.path.realpath(sys.executable)  # the driver's: Ray starts its Python processes with it
    # The session as the driver left ray.init(); once the driver or all of these are
    # gone (a normal ray.shutdown()), whatever of the session is left is an orphan.
    servers = {p: s for p, s in session_processes(session_dir, ray_dir, python).items() if p != driver_pid}
    if not any(parent(p) == driver_pid for p in servers):
        return  # the driver did not start this Ray (it joined one): not ours to end
    while _alive(driver_pid, driver_started) and any(_alive(p, s) for p, s in servers.items()):
        time.sleep(POLL_S)
    reap(session_dir, ray_dir, python, exclude={driver_pid})


def watch(session_dir: str, ray_dir: str) -> subprocess.Popen | None:
    """Start the watcher for this process's local Ray session (`ray_dir`: the
    directory of the `ray` package)."""
    if not PROC.is_dir() or not session_dir:
        return None
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(os.getpid()), session_dir, ray_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2], sys.argv[3])
