"""A competing process for the stability benchmark: trains (or measures) a digits
model in a loop until it is terminated.

    python -m benchmarks.background train --threads 1
    python -m benchmarks.background measure --threads 1 --lock

It prints "ready" when its imports are done and its loop starts, so the benchmark
times under load only once the load is there. Between two units of work (an epoch, a
measurement) it obeys "pause" / "resume" lines on stdin, answering "paused" /
"resumed": the benchmark interleaves measurements alone and loaded, so slow drifts of
the machine hit both alike.
"""

from __future__ import annotations

import argparse
import select
import sys
import time

ARCH = {"family": "cnn", "width": 32, "depth": 2, "kernel": 3, "batch_norm": True}
RECIPE = {"optimizer": "adam", "lr": 3e-3, "schedule": "constant", "batch_size": 64, "weight_decay": 1e-4, "label_smoothing": 0.0}


def obey_pause() -> None:
    """Between units of work: on "pause", stop until "resume" (idle, holding no lock)."""
    while select.select([sys.stdin], [], [], 0)[0]:
        command = sys.stdin.readline().strip()
        if not command:  # stdin closed: the benchmark is gone
            sys.exit(0)
        if command == "pause":
            print("paused", flush=True)
            while (command := sys.stdin.readline().strip()) != "resume":
                if not command:
                    sys.exit(0)
            print("resumed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", choices=["train", "measure"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default (all cores)")
    parser.add_argument("--lock", action="store_true", help="measure holding paretune's per-node lock")
    args = parser.parse_args()

    import contextlib

    import torch

    from objectives import latency
    from search.core.spec import from_dict
    from search.tasks.data import load_task
    from search.trial.training import train_recipe
    from spaces import architecture

    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task(from_dict({"name": "background", "task": "digits"}))
    model = architecture.build(ARCH, task.input_shape, task.n_classes)
    print("ready", flush=True)  # imports done: from here on it only works
    while True:
        obey_pause()
        if args.work == "train":
            train_recipe(model, task, {**ARCH, **RECIPE}, 1)
        else:
            guard = latency.exclusive() if args.lock else contextlib.nullcontext()
            with guard:
                latency.measure(model, task.input_shape, threads=args.threads or torch.get_num_threads(), repeats=100)
            # flock is not fair: re-taking it at once would starve the benchmark's own
            # measurements; a trial, too, does other work between two measurements.
            time.sleep(0.02)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
