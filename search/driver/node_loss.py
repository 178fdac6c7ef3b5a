"""A worker node lost mid-search, said in one line.

When a node dies (its raylet killed, the machine gone), Tune runs the trials it held
again on the nodes left (FailureConfig(max_failures=budget.max_retries)). Ray's own
account reaches the driver's terminal raw: each agent of the dead node publishes
"Raylet is terminated ... Last 20 lines of the Raylet logs", the GCS later "The node
... has been marked dead", and the driver's error listener
(ray._private.worker.listen_error_messages) prints them prefixed `(raylet)`, whatever
`log_to_driver` says; Tune adds a traceback per trial. search.driver.raynoise filters both
out; `NodeLoss` (a Tune callback) says instead, when a trial's worker dies, whether its
node's raylet still answers (a TCP connect: the GCS takes ~15 s to mark a dead node),
and if not `node HOST lost: trial N re-runs elsewhere; its Ray logs: DIR` (DIR on that
node, where the text Ray would have printed is); if it does, `trial N: its worker died;
it re-runs`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import ray
from ray import tune

# How long the raylet of a trial's node may take to accept a connection before the
# node counts as lost.
CONNECT_TIMEOUT_S = 2.0


def lost_line(host: str, number: int, logs: str, retried: bool) -> str:
    """What the user reads when trial `number`'s node is gone."""
    then = "re-runs elsewhere" if retried else "had no retries left (budget.max_retries): stored FAIL"
    return f"node {host} lost: trial {number} {then}; its Ray logs: {logs}"


def _answers(host: str, port: int) -> bool:
    """A raylet that accepts a connection is alive, whatever the GCS has not noticed yet."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def lost_node(actor_id: str | None) -> dict | None:
    """The node (an entry of `ray.nodes()`) the actor ran on, if that node is gone:
    marked dead, or its raylet no longer answers. For a trial whose actor never
    started (placed on the node as it died), the first node the GCS still counts alive
    whose raylet does not answer."""
    placed = (ray._private.state.actors(actor_id) or {}) if actor_id else {}
    node_id = placed.get("Address", {}).get("NodeID")
    nodes = ray.nodes()
    if node_id:
        candidates = [n for n in nodes if n["NodeID"] == node_id]
        if candidates and not candidates[0]["Alive"]:
            return candidates[0]
    else:
        candidates = [n for n in nodes if n["Alive"]]
    return next((n for n in candidates if not _answers(n["NodeManagerAddress"], n["NodeManagerPort"])), None)


class NodeLoss(tune.Callback):
    """Calls `say(line)` for each trial whose worker died: with its node (`lost_line`),
    or alone and run again."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.actors: dict[str, str] = {}  # Tune trial id -> the id of the actor running it

    def __getstate__(self) -> dict:
        # Tune pickles its run config, callbacks included, for its own restore (never
        # used: resume goes through the Optuna storage); `say` may hold a terminal.
        return {k: v for k, v in self.__dict__.items() if k != "say"}

    def on_trial_start(self, iteration, trials, trial, **info):
        actor = trial.temporary_state.ray_actor
        if actor is not None:
            self.actors[trial.trial_id] = actor._actor_id.hex()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.actors.pop(trial.trial_id, None)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._tell(trial, retried=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._tell(trial, retried=False)

    def _tell(self, trial, retried: bool) -> None:
        node = lost_node(self.actors.pop(trial.trial_id, None))
        number = trial.config["number"]
        if node is not None:
            # The node's session directory holds its sockets and its logs.
            logs = Path(node["RayletSocketName"]).parent.parent / "logs"
            self.say(lost_line(node["NodeManagerAddress"], number, str(logs), retried))
        elif retried:  # (with no retries left, its FAIL and reason are what the user reads)
            self.say(f"trial {number}: its worker died; it re-runs")

