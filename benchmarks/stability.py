"""Latency measurement stability: the same model measured again and again, alone and
beside a competing process on the same node.

One measurement is what a trial does: `objectives.latency.measure` (warm-up, then
the median of `repeats` timed forward passes, batch 1). Each setup takes
`measurements` pairs: one while another process works (trains a digits CNN, or
measures one too), one while that process is paused — interleaved, so the machine's
own drifts (on a shared VM, the same loop alone jumps between two speeds ~2x apart)
hit both series alike. It reports each series' coefficient of variation (CV) and the
median of the paired loaded/alone ratios (the median shift).

Setups:
- paretune's isolation: 1 torch thread while timing, under the per-node measurement
  lock; the competitor is a trial as paretune runs it (1 thread; when it measures,
  it takes the lock too).
- no isolation: torch's default threads (all cores), no lock, on either side.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import Table, cv

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"family": "cnn", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}


def settings(quick: bool) -> dict:
    # Without isolation, 2 threads on a busy 2-core node make one timed pass take up to
    # tens of ms: fewer repeats there keep the full run near its time budget, and
    # --quick leaves that setup out.
    if quick:
        return {"measurements": 6, "repeats": 50, "setups": (True,), "unisolated_repeats": 0}
    return {"measurements": 20, "repeats": 100, "setups": (True, False), "unisolated_repeats": 50}


@contextlib.contextmanager
def competitor(work: str, isolated: bool):
    """Another process on this node doing `work` until the block ends."""
    args = [sys.executable, "-m", "benchmarks.background", work, "--threads", "1" if isolated else "0"]
    if isolated:
        args.append("--lock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = process.stdout.readline()  # blocks until its loop runs
        if line.strip() != "ready":
            raise RuntimeError(f"background {work} did not start (exit {process.poll()})")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tell(process: subprocess.Popen, command: str, answer: str) -> None:
    process.stdin.write(command + "\n")
    process.stdin.flush()
    if process.stdout.readline().strip() != answer:
        raise RuntimeError(f"background process did not answer {command!r} (exit {process.poll()})")


def measure_once(model, input_shape, isolated: bool, repeats: int) -> float:
    from objectives import latency

    threads = 1 if isolated else torch.get_num_threads()
    with latency.exclusive() if isolated else contextlib.nullcontext():
        return latency.measure(model, input_shape, threads=threads, warmup=20, repeats=repeats).value


def measure_pairs(model, input_shape, isolated: bool, count: int, repeats: int, process) -> tuple[list[float], list[float]]:
    """`count` (alone, loaded) pairs: the competitor paused, then running again."""
    alone, loaded = [], []
    for _ in range(count):
        _tell(process, "pause", "paused")
        alone.append(measure_once(model, input_shape, isolated, repeats))
        _tell(process, "resume", "resumed")
        time.sleep(0.05)  # let it get back to work
        loaded.append(measure_once(model, input_shape, isolated, repeats))
    return alone, loaded


def noise_floor(count: int) -> tuple[float, float, float]:
    """The machine's own jitter: a pure-Python loop (no torch, no threads, no memory
    traffic) timed like a measurement. Returns its CV and its fastest/slowest median."""
    def spin() -> int:
        total = 0
        for i in range(5000):
            total += i * i
        return total

    medians = []
    for _ in range(count):
        timings = []
        for _ in range(50):
            start = time.perf_counter_ns()
            spin()
            timings.append(time.perf_counter_ns() - start)
        medians.append(statistics.median(timings) / 1e6)
    return cv(medians), min(medians), max(medians)


def run(quick: bool = False) -> list[Table]:
    from spaces import architecture

    size = settings(quick)
    count, repeats = size["measurements"], size["repeats"]
    torch.manual_seed(0)
    input_shape = (1, 8, 8)
    model = architecture.build(ARCH, input_shape, 10).eval()
    default_threads = torch.get_num_threads()
    floor_cv, floor_fast, floor_slow = noise_floor(count)
    rows = []
    for isolated in size["setups"]:
        setup = "paretune: 1 thread + measurement lock" if isolated else f"none: {default_threads} threads, no lock"
        passes = repeats if isolated else size["unisolated_repeats"]
        for work in ("train", "measure"):
            with competitor(work, isolated) as process:
                alone, loaded = measure_pairs(model, input_shape, isolated, count, passes, process)
            ratios = [after / before for before, after in zip(alone, loaded)]
            rows.append([
                setup,
                f"1 process {'training' if work == 'train' else 'measuring'}",
                statistics.median(alone),
                100 * cv(alone),
                statistics.median(loaded),
                100 * cv(loaded),
                100 * (statistics.median(ratios) - 1),
            ])
    return [
        Table(
            "stability",
            "Latency measurement stability (digits CNN, batch 1)",
            ["isolation", "competitor", "median ms alone", "CV % alone", "median ms loaded", "CV % loaded",
             "median shift % (paired)"],
            rows,
            [
                f"model: residual CNN {ARCH} on 8×8 digits, untrained (latency does not depend on the weights); "
                f"{count} measurements per column, each the median of {repeats} timed passes after 20 warm-up"
                + (f" ({size['unisolated_repeats']} without isolation)." if size["unisolated_repeats"] else
                   "; --quick runs paretune's isolation only."),
                "alone and loaded measurements alternate; the competitor is a separate process "
                "(python -m benchmarks.background), paused between units of work for each 'alone' measurement; "
                "median shift = median over pairs of loaded/alone - 1; a measuring competitor pauses 20 ms between "
                "its measurements, as a trial does other work between them.",
                "goal: CV <= 5%, median shift <= 5% with paretune's isolation.",
                f"machine noise floor: a pure-Python loop timed the same way, nothing else running, has CV "
                f"{100 * floor_cv:.1f}% (medians {floor_fast:.3f}-{floor_slow:.3f} ms); no isolation inside the "
                "machine can bring a measurement's CV below that.",
                "isolation: measurements hold the per-node lock, and a training trial on the node waits for it "
                "between batches (objectives.latency.wait_for_measurements); other users of the machine are not "
                "controlled.",
            ],
        )
    ]
