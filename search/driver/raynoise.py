"""Ray's messages that do not apply to a paretune search, filtered while one runs.

- "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to
  opt out": logged on every local `ray.init`. paretune keeps token auth on and writes
  the token file 0600 itself (`search.driver.cluster`); the README's security notes say so.
- "Stop signal received (e.g. via SIGINT/Ctrl+C) ... try to checkpoint the experiment
  state": Tune's checkpoint is not used (the Optuna storage is the record), so the
  line is replaced by `on_stop`, which says what paretune does instead.
- "Experiment has been interrupted ... Resume experiment with: Tuner.restore(...)":
  a resume goes through `paretune launch` (the CLI prints the command), never Tuner.restore.
- "Last sync command failed with the following error: <traceback>" and "The latest sync
  operation failed": Tune copying its own experiment state into its scratch directory
  (seen under heavy load with several drivers on one machine). paretune never reads
  that state (the Optuna storage is the record), so such a failure loses nothing.
- "Trial task failed for trial ...: <traceback>": a trial's worker died (killed, or its
  node lost); `search.driver.node_loss` says so in one line, and a trial out of retries is
  stored FAIL with its reason.
- "(raylet) Raylet is terminated ... Last 20 lines of the Raylet logs: ..." and
  "(raylet) The node with node id: ... has been marked dead": a node lost, published to
  every driver and printed by the driver's error listener whatever `log_to_driver`
  says. `search.driver.node_loss` says which node and trial, and where that node's logs are.

The filters sit on the loggers that emit these records (Ray's own module loggers), and
on the function Ray's error listener prints with (ray._private.worker.print_to_stdstream);
they are removed on exit: nothing changes at import time and every other Ray message stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TUNE_LOGGER = "ray.tune.tune"
TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
SYNC_LOGGER = "ray.train._internal.syncer"

TOKEN_AUTH_ENABLED = "Token authentication is enabled for this Ray cluster"
STOP_SIGNAL = "Stop signal received"
RESTORE_HINT = "Experiment has been interrupted, but the most recent state was saved"
SYNC_FAILED = ("Last sync command failed", "The latest sync operation failed")
TRIAL_TASK_FAILED = "Trial task failed for trial"
NODE_LOST = ("Raylet is terminated", "The node with node id:")


class _Drop(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...], on_match: Callable[[str], None] | None = None):
        super().__init__()
        self.prefixes, self.on_match = prefixes, on_match

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        matched = next((p for p in self.prefixes if message.startswith(p)), None)
        if matched is None:
            return True
        if self.on_match is not None:
            self.on_match(matched)
        return False


@contextmanager
def _errors_without(prefixes: tuple[str, ...]) -> Iterator[None]:
    """Ray's error listener (the `(raylet) ...` lines) skips the errors that begin with `prefixes`."""
    from ray._private import worker

    original = worker.print_to_stdstream

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        if not any(str(line).startswith(prefixes) for line in data.get("lines", [])):
            original(data, ignore_prefix)

    worker.print_to_stdstream = print_to_stdstream
    try:
        yield
    finally:
        worker.print_to_stdstream = original


@contextmanager
def quiet(on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Filter the messages above while the block runs; `on_stop` is called where Tune
    would announce that Ctrl-C stops the run."""
    filters = [
        (logging.getLogger(TOKEN_AUTH_LOGGER), _Drop((TOKEN_AUTH_ENABLED,))),
        (logging.getLogger(SYNC_LOGGER), _Drop(SYNC_FAILED)),
        (logging.getLogger(TUNE_CONTROLLER_LOGGER), _Drop((TRIAL_TASK_FAILED,))),
        (
            logging.getLogger(TUNE_LOGGER),
            _Drop((STOP_SIGNAL, RESTORE_HINT), lambda p: on_stop() if p == STOP_SIGNAL and on_stop else None),
        ),
    ]
    for logger, log_filter in filters:
        logger.addFilter(log_filter)
    try:
        with _errors_without(NODE_LOST):
            yield
    finally:
        for logger, log_filter in filters:
            logger.removeFilter(log_filter)
