"""Where a trial's time goes, phase by phase, from the sampler's ask to the storage's tell.

A trial's work records its phases on the calling thread's `Timeline` (`record()` starts
one; `phase(name)` and `waiting(name)` are no-ops without it, so `paretune train` and
the preflight pay nothing). A wait (the node's measurement lock held by another trial,
the search's event loop taking a per-epoch report) is its own phase and is not counted
in the phase it interrupts, so "train" is time spent training.

The searcher adds the driver's side as wall-clock timestamps, and the whole record is
stored with the trial (user attr `timing`). `breakdown(trial)` turns it into seconds
per phase that add up to the trial's duration in the storage (`datetime_start` at the
ask to `datetime_complete` at the tell):

    sample    ask -> params chosen (the sampler, the seed and claim writes)
    queued    params chosen -> handed to Tune (a trial asked ahead waits for a free slot)
    dispatch  handed to Tune -> the trial's function starts on its worker (Tune, Ray)
    check, build, train, compress, deploy, measure
              the trial's own work (check: its measurement before training, if any)
    wait      blocked on the node's measurement lock (search.trial.pipeline, objectives.latency)
    report    blocked in per-epoch reports (a rung needs them; the driver answers)
    return    the trial's last result -> the searcher has it (Ray, the event loop)
    store     the searcher has it -> the outcome is told to the storage
    other     what none of the above covers (the worker's own overhead)

Timestamps from the driver and the worker are compared directly: on a cluster that
needs clocks in step (as the leases do, search.driver.lease).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from search.core.records import TIMING_ATTR

ATTR = TIMING_ATTR
WORK_PHASES = ("check", "build", "train", "compress", "deploy", "measure", "wait", "report")
PHASES = ("sample", "queued", "dispatch", *WORK_PHASES, "return", "store", "other")

_local = threading.local()


class Timeline:
    """Seconds per phase of one trial's work on this thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._waited = 0.0  # every wait so far; a phase subtracts those inside it

    @contextlib.contextmanager
    def phase(self, name: str):
        start, waited = time.perf_counter(), self._waited
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start - (self._waited - waited)

    @contextlib.contextmanager
    def waiting(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] += elapsed
            self._waited += elapsed

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in self.seconds.items()}


@contextlib.contextmanager
def record():
    """A fresh Timeline for this thread's trial; yields it."""
    previous = getattr(_local, "timeline", None)
    _local.timeline = timeline = Timeline()
    try:
        yield timeline
    finally:
        _local.timeline = previous


def phase(name: str):
    timeline = getattr(_local, "timeline", None)
    return timeline.phase(name) if timeline is not None else contextlib.nullcontext()


def waiting(name: str):
    timeline = getattr(_local, "timeline", None)
    return timeline.waiting(name) if timeline is not None else contextlib.nullcontext()


def waited(name: str, call: Callable[[], object]) -> Callable[[], None]:
    """`call` as a wait named `name` (a hook called between batches)."""

    @functools.wraps(call)  # inspect.unwrap(timed) is `call`
    def timed() -> None:
        with waiting(name):
            call()

    return timed


def breakdown(trial) -> dict[str, float] | None:
    """Seconds per phase (PHASES) of a finished FrozenTrial, adding up to its duration;
    None for a trial stored without a timing record (or without both timestamps)."""
    record_ = trial.user_attrs.get(ATTR)
    if not isinstance(record_, dict) or trial.datetime_start is None or trial.datetime_complete is None:
        return None
    marks = record_.get("marks", {})
    start, end = trial.datetime_start.timestamp(), trial.datetime_complete.timestamp()
    if not all(isinstance(marks.get(key), (int, float)) for key in ("sampled", "handed", "worker_start", "worker_end", "result")):
        return None
    work = {name: float(record_.get("phases", {}).get(name, 0.0)) for name in WORK_PHASES}
    out = {
        "sample": marks["sampled"] - start,
        "queued": marks["handed"] - marks["sampled"],
        "dispatch": marks["worker_start"] - marks["handed"],
        **work,
        "return": marks["result"] - marks["worker_end"],
        "store": end - marks["result"],
        "other": (marks["worker_end"] - marks["worker_start"]) - sum(work.values()),
    }
    return out
