"""One search driver as its own process, for the many-drivers tests and figures:

    python -m tests.drivers --storage URL --name NAME --trials N --concurrency C \
        --seconds S --log FILE [--address HOST:PORT] [--mlflow URI]

It is `search.driver.launcher.launch` (what `paretune launch` runs: lease, heartbeat, the
storage's budget, reconciliation) on the nasbench201 task, with trials that take
`--seconds` and then report the table's values for their params. Each trial appends
`{"driver", "number", "values"}` to `--log` when its result exists, before the driver
gets it, so a test can check that every result a live driver received is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

OBJECTIVES = {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"}


def timed_lookup(seconds: float, log: str, driver: int):
    """A trainable (the `target` hook of search.driver.launcher): sleep, look the params up in
    the NAS-Bench-201 table, log, report. Nested, so it ships to the workers by value."""
    names = list(OBJECTIVES)

    def work(config, task=None, spec=None, shared=None, plugins=None):
        import time

        from ray import tune

        from search.tasks import tabular_bench

        time.sleep(seconds)
        metrics = tabular_bench.lookup(config["params"])
        with open(log, "a") as handle:
            handle.write(json.dumps({"driver": driver, "number": config["number"], "values": [float(metrics[n]) for n in names]}) + "\n")
        tune.report(metrics)

    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--address")
    parser.add_argument("--mlflow", help="MLflow tracking URI: [tracking] mlflow")
    args = parser.parse_args(argv)
    if not args.address:
        from search.driver.cluster import local_only

        local_only()
    from search.core.spec import from_dict
    from search.driver.launcher import launch

    spec = from_dict({
        "name": args.name, "task": "nasbench201", "sampler": "tpe", "objectives": OBJECTIVES,
        "budget": {"trials": args.trials, "concurrency": args.concurrency, "max_retries": 0},
        **({"tracking": {"mlflow": args.mlflow}} if args.mlflow else {}),
    })
    summary = launch(
        spec, storage_url=args.storage, address=args.address,
        target=timed_lookup(args.seconds, args.log, os.getpid()),
        on_reconciled=lambda trial, reason: print(f"reconciled trial {trial.number}: {reason}", flush=True),
    )
    record = {k: v for k, v in summary.__dict__.items() if k != "storage_url"}  # it may hold a password
    print(json.dumps({**record, "pid": os.getpid()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
