"""Latency measurement stability: the same model measured again and again, alone and
beside a competing process on the same node.

One measurement is what a trial does: `objectives.latency.measure` (warm-up, then
the median of `repeats` timed forward passes, batch 1). Each setup takes
`measurements` of them alone, then as many while another process works (trains a
digits CNN, or measures one too), and reports their coefficient of variation (CV) and
how far the median moved under load.

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
        return {"measurements": 10, "repeats": 50, "setups": (True,), "unisolated_repeats": 0}
    return {"measurements": 20, "repeats": 100, "setups": (True, False), "unisolated_repeats": 50}


@contextlib.contextmanager
def competitor(work: str, isolated: bool):
    """Another process on this node doing `work` until the block ends."""
    args = [sys.executable, "-m", "benchmarks.background", work, "--threads", "1" if isolated else "0"]
    if isolated:
        args.append("--lock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # blocks until its loop runs
        if line.strip() != "ready":
            raise RuntimeError(f"background {work} did not start (exit {process.poll()})")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_series(model, input_shape, isolated: bool, count: int, repeats: int) -> list[float]:
    from objectives import latency

    threads = 1 if isolated else torch.get_num_threads()
    values = []
    for _ in range(count):
        guard = latency.exclusive() if isolated else contextlib.nullcontext()
        with guard:
            values.append(latency.measure(model, input_shape, threads=threads, warmup=20, repeats=repeats).value)
    return values


def run(quick: bool = False) -> list[Table]:
    from spaces import architecture

    size = settings(quick)
    count, repeats = size["measurements"], size["repeats"]
    torch.manual_seed(0)
    input_shape = (1, 8, 8)
    model = architecture.build(ARCH, input_shape, 10).eval()
    default_threads = torch.get_num_threads()
    rows = []
    for isolated in size["setups"]:
        setup = "paretune: 1 thread + measurement lock" if isolated else f"none: {default_threads} threads, no lock"
        passes = repeats if isolated else size["unisolated_repeats"]
        for work in ("train", "measure"):
            # Alone right before loaded: the machine's other load drifts over minutes.
            alone = measure_series(model, input_shape, isolated, count, passes)
            with competitor(work, isolated):
                loaded = measure_series(model, input_shape, isolated, count, passes)
            rows.append([
                setup,
                f"1 process {'training' if work == 'train' else 'measuring'}",
                statistics.median(alone),
                100 * cv(alone),
                statistics.median(loaded),
                100 * cv(loaded),
                100 * (statistics.median(loaded) / statistics.median(alone) - 1),
            ])
    return [
        Table(
            "stability",
            "Latency measurement stability (digits CNN, batch 1)",
            ["isolation", "competitor", "median ms alone", "CV % alone", "median ms loaded", "CV % loaded",
             "median shift %"],
            rows,
            [
                f"model: residual CNN {ARCH} on 8×8 digits, untrained (latency does not depend on the weights); "
                f"{count} measurements per column, each the median of {repeats} timed passes after 20 warm-up"
                + (f" ({size['unisolated_repeats']} without isolation)." if size["unisolated_repeats"] else
                   "; --quick runs paretune's isolation only."),
                "each row measures alone right before it measures loaded; the competitor is a separate process "
                "(python -m benchmarks.background) started before and stopped after the loaded series; a measuring "
                "competitor pauses 20 ms between its measurements, as a trial does other work between them.",
                "goal: CV <= 5%, median shift <= 5% with paretune's isolation.",
                "the lock serialises measurements only: it does not stop a training process, so contention with "
                "training shows up even with isolation; other users of the machine are not controlled either.",
            ],
        )
    ]
