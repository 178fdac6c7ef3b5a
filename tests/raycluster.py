"""A real multi-node Ray cluster on this machine's loopback, for tests and figures.

Each node is a `ray start --block` in its own session with its own temp dir, token
authentication on (a 0600 token file in the cluster's directory) and everything bound
to 127.0.0.1. `stop()` ends only the processes this cluster started: `ray stop` would
also kill any other Ray on the machine (the test session's own local Ray included).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path


@dataclass
class LoopbackCluster:
    root: Path  # short path: Ray's unix sockets live under it (107-byte limit)
    port: int
    dashboard_port: int | None
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_path(self) -> Path:
        return self.root / "auth_token"

    def env(self) -> dict[str, str]:
        """What a client of this cluster needs: token auth and where the token is."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            # The job's `python` must be the one Ray and paretune are installed in.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _start(self, name: str, args: list[str], env_extra: dict[str, str]) -> None:
        temp_dir = self.root / name
        temp_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(self.env(), **env_extra)
        log = open(self.root / f"{name}.log", "w")
        process = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
             "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing else gets our signals
        )
        self.nodes.append(Node(name, process, temp_dir))

    def start_head(self, *, cpus: int, resources: dict[str, float] | None = None, env: dict[str, str] | None = None) -> None:
        args = ["--head", "--port", str(self.port), "--num-cpus", str(cpus),
                "--ray-client-server-port", str(free_port())]
        if self.dashboard_port:
            args += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)]
        else:
            args += ["--include-dashboard", "false"]
        if resources:
            args += ["--resources", json.dumps(resources)]
        self._start("head", args, env or {})

    def start_worker(self, name: str, *, cpus: int, resources: dict[str, float] | None = None, env: dict[str, str] | None = None) -> None:
        args = ["--address", self.address, "--num-cpus", str(cpus)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        self._start(name, args, env or {})

    def wait_for_nodes(self, count: int, timeout: float = 90) -> list[dict]:
        """Block until `count` nodes are alive; returns `ray list nodes`-like dicts."""
        code = (
            "import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
        ) % self.address
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise RuntimeError(f"ray node {node.name} exited: {self.logs(node.name)[-2000:]}")
            done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **self.env()},
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                alive = json.loads(done.stdout.strip().splitlines()[-1])
                if len(alive) >= count:
                    return alive
            last = done.stderr[-1000:]
            time.sleep(1)
        raise RuntimeError(f"cluster did not reach {count} nodes: {last}")

    def logs(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _own_pids(self) -> list[int]:
        """Every live process whose command line names this cluster's directory:
        raylet, GCS, agents and workers (workers can leave the node's process group)."""
        marker = str(self.root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self, timeout: float = 20) -> None:
        # `ray start --block` shuts its node down on SIGINT (Ctrl-C) and ignores
        # SIGTERM; whatever is left after that (a stuck worker) is killed by pid.
        for node in reversed(self.nodes):  # workers first: a lost head makes them retry
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        while self._own_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self._own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def loopback_cluster(*, dashboard: bool = False) -> LoopbackCluster:
    """A cluster directory with a fresh token (mode 0600); nodes are added by the caller."""
    root = Path(tempfile.mkdtemp(prefix="ptc-", dir="/tmp"))
    cluster = LoopbackCluster(root=root, port=free_port(), dashboard_port=free_port() if dashboard else None)
    fd = os.open(cluster.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return cluster
