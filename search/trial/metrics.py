"""What a trial reports: one typed record, from which the searcher, export, retrain
and the CLI read their keys (no string lists kept in several places).

The record travels through Ray Tune as a flat dict (`TrialMetrics.to_result`); the
searcher stores every key of it as an Optuna user attr beside the objective values
(`stored_attrs`). A user task's own metrics (`Task.metrics`) ride along under their
own names, listed in `task_metrics`. The facts each search dimension records about
the deployed model (`spaces.Dimension.record`, declared in its `facts`) ride along
the same way under their own names, kept in `facts`: they read as attributes of the
record and follow their declared `export`/`card` flags in `keys`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Field groups: "objective" (can be an objective), "measure" (how the values were
# obtained), "node" (where). `export`: copied into an exported config's attrs;
# `card`: shown in the model card beside the objectives.


def _field(group: str, *, export: bool = True, card: bool = False, default: Any = dataclasses.MISSING):
    metadata = {"group": group, "export": export, "card": card}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrialMetrics:
    """The measured values of one trial's deployable model (val split during the
    search, test split in `paretune train`)."""

    accuracy: float = _field("objective", card=True)
    latency_ms: float = _field("objective", card=True)
    energy_mj: float = _field("objective", card=True)
    size_kb: float = _field("objective", card=True)
    params: int = _field("objective", card=True)
    macs: int = _field("objective", card=True)
    latency_p90_ms: float = _field("measure", card=True)
    nonzero_params: int = _field("measure", card=True)
    sparsity: float = _field("measure", card=True)
    energy_source: str = _field("measure", card=True)  # "rapl", "nvml" or "estimate"
    latency_source: str = _field("measure", card=True)
    measure_device: str = _field("measure", card=True)
    measure_threads: int = _field("measure")
    measure_batch_size: int = _field("measure")
    train_seconds: float = _field("measure", export=False)
    measure_seconds: float = _field("measure", export=False)
    split: str = _field("measure", export=False)
    train_device: str = _field("measure", default="cpu")
    # Achieved compute: MACs of the float model × batch size / latency, in GMAC/s
    # (benchmarks/compression.py measures the machine's peak beside it).
    gmac_per_s: float = _field("measure", card=True, default=0.0)
    hostname: str = _field("node", default="")
    node_ip: str = _field("node", export=False, default="")
    node_id: str = _field("node", export=False, default="")
    cpu_model: str = _field("node", default="")
    cpu_flags: str = _field("node", default="")
    cpu_count: int | None = _field("node", default=None)
    torch_version: str = _field("node", default="")
    quantized_engine: str = _field("node", default="")
    measured_on: str = _field("node", export=False, default="")
    measure_host: str = _field("node", export=False, default="")
    measure_cpu_model: str = _field("node", export=False, default="")
    measure_cpu_flags: str = _field("node", export=False, default="")
    gpu_model: str | None = _field("node", default=None)
    task_metrics: dict[str, float] = field(default_factory=dict, metadata={"group": "task", "export": True, "card": True})
    # What the dimensions record, by name (`spaces.Dimension.record`).
    facts: dict[str, Any] = field(default_factory=dict, metadata={"group": "facts", "export": True, "card": True})

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are no field: a dimension's recorded fact.
        facts = self.__dict__.get("facts") or {}
        if name in facts:
            return facts[name]
        raise AttributeError(f"{type(self).__name__} has no field or recorded fact {name!r}")

    def to_result(self) -> dict:
        """The flat dict a trial reports (task metrics and recorded facts under their own names)."""
        result = {k: v for k, v in dataclasses.asdict(self).items() if k not in _NESTED and v is not None}
        result.update({k: v for k, v in self.facts.items() if v is not None})
        result.update(self.task_metrics)
        result["task_metric_names"] = sorted(self.task_metrics)
        result[FACT_NAMES] = sorted(self.facts)
        return result

    def update(self, **values) -> "TrialMetrics":
        """A copy with `values`: fields by name, anything else as a recorded fact."""
        names = {f.name for f in dataclasses.fields(self)}
        facts = {k: v for k, v in values.items() if k not in names}
        fields = {k: v for k, v in values.items() if k in names}
        if facts:
            fields["facts"] = {**self.facts, **fields.get("facts", {}), **facts}
        return dataclasses.replace(self, **fields)


_NESTED = ("task_metrics", "facts")


def keys(*, group: str | None = None, export: bool | None = None, card: bool | None = None) -> tuple[str, ...]:
    """Field names of TrialMetrics, then the facts the built-in dimensions record
    (group "measure"), filtered by their metadata."""
    out = []
    for f in dataclasses.fields(TrialMetrics):
        if f.name in _NESTED:
            continue
        meta = f.metadata
        if (group is None or meta["group"] == group) and (export is None or meta["export"] == export) and (
            card is None or meta["card"] == card
        ):
            out.append(f.name)
    if group in (None, "measure"):
        import spaces  # deferred: every dimension's config model (0.17 s); a stored record is read without it

        out += [name for name, fact in spaces.facts().items()
                if (export is None or fact.export == export) and (card is None or fact.card == card)]
    return tuple(out)


# The names of the facts a trial's dimensions recorded (user dimensions' included).
FACT_NAMES = "fact_names"
OBJECTIVE_KEYS = keys(group="objective")
NODE_KEYS = keys(group="node")
HARDWARE_KEYS = ("hostname", "cpu_model", "cpu_flags", "gpu_model", "cpu_count", "torch_version", "quantized_engine",
                 "measure_device", "measure_threads", "measure_batch_size")


def stored_attrs(result: dict | None) -> dict:
    """The keys of a reported result that the searcher keeps as user attrs."""
    if not result:
        return {}
    names = set(keys()) | set(result.get("task_metric_names") or ()) | set(result.get(FACT_NAMES) or ())
    return {k: v for k, v in result.items() if k in names and v is not None}
