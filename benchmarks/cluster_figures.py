"""Figures for docs/cluster.md, measured on this machine: trials per node, and wall
time of the same search on 1 node vs 2 nodes (each node `ray start --num-cpus 1`,
concurrency 2, loopback, token auth): on one node the two trials queue for its one CPU
slot, on two they run side by side. (Latency spread with and without concurrent work
is the stability table of `python -m benchmarks`.)

Run: .venv/bin/python benchmarks/cluster_figures.py [--trials 8] [--epochs 4]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def search_wall(nodes: int, trials: int, epochs: int) -> tuple[float, collections.Counter]:
    import optuna

    from tests.conftest import run_cli, tiny_spec_dict, write_toml
    from tests.raycluster import loopback_cluster

    cluster = loopback_cluster()
    work = Path(tempfile.mkdtemp(prefix="paretune-fig-"))
    try:
        cluster.start_head(cpus=1)
        for i in range(1, nodes):
            cluster.start_worker(f"node{i}", cpus=1)
        cluster.wait_for_nodes(nodes)
        spec = write_toml(work / "s.toml", tiny_spec_dict(name="fig", budget={"trials": trials, "concurrency": 2, "epochs": epochs}))
        url = f"sqlite:///{work / 's.db'}"
        started = time.perf_counter()
        done = run_cli("launch", str(spec), "--address", cluster.address, "--storage", url, env=cluster.env())
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
        trials_done = optuna.load_study(study_name="fig", storage=url).get_trials()
        return wall, collections.Counter(t.user_attrs["node_id"][:8] for t in trials_done)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    one, _ = search_wall(1, args.trials, args.epochs)
    two, per_node = search_wall(2, args.trials, args.epochs)
    print(f"search of {args.trials} tiny trials ({args.epochs} epochs), concurrency 2, nodes of 1 CPU each:")
    print(f"  1 node: {one:.1f} s   2 nodes: {two:.1f} s   speedup {one / two:.2f}x")
    print(f"  trials per node (2 nodes): {dict(per_node)}")


if __name__ == "__main__":
    main()
