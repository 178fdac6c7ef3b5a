"""Where a trial's objectives are measured.

Latency and energy belong to the machine that will deploy the model, not to whichever
node trained it. With `resources.measure_on = "edge"` the trial ships its model (see
`search.trial.portable`) to a Ray task that needs one unit of the custom resource `edge`, so
Ray runs it only on nodes started with `--resources '{"edge": 1}'`; a node with one
unit measures one model at a time (Ray's resource accounting), and the per-node file
lock in `objectives.latency` keeps measurements on one machine from overlapping
whatever the units. The task asks for no CPU: a trial waiting for its measurement
holds its own CPU, and a measurement that needed one could wait forever for the CPUs
that waiting trials hold.

Without `measure_on`, or outside Ray (`paretune train`), the model is measured in the
calling process. Either way the metrics name the node that measured (`measured_on`,
its Ray node id; `measure_host`; `measure_cpu_model`).
"""

from __future__ import annotations

import functools

from torch import nn

from search.core.spec import StudySpec
from search.tasks.task import Task
from search.trial import hardware, portable
from search.trial.measurement import measure as measure_here
from search.trial.metrics import TrialMetrics


def here() -> dict:
    node = hardware.describe()
    return {
        "measured_on": node["node_id"] or node["hostname"],
        "measure_host": f"{node['hostname']} ({node['node_ip']})",
        "measure_cpu_model": node["cpu_model"],
        "measure_cpu_flags": node["cpu_flags"],
    }


def _measure_shipped(
    model_bytes: bytes, runner_bytes: bytes | None, task: Task, spec: StudySpec, info: dict, split: str, score: bool = True
) -> TrialMetrics:
    model = portable.loads(model_bytes)
    runner = portable.loads(runner_bytes) if runner_bytes is not None else model
    return measure_here(model, task, spec, info, split, runner=runner, score=score).update(**here())


@functools.cache
def _remote():
    import ray

    return ray.remote(_measure_shipped)


def measure(
    model: nn.Module, runner: nn.Module, task: Task, spec: StudySpec, info: dict, split: str = "val", *, score: bool = True
) -> TrialMetrics:
    """`score=False`: latency, energy, size and counts only (search.trial.measurement.measure)."""
    resource = spec.resources.measure_on
    if resource:
        import ray

        if ray.is_initialized():
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            remote = _remote().options(
                num_cpus=0,
                resources={resource: 1},
                name=f"paretune-measure[{resource}]",
                # Out of the trial's placement group (Tune has its tasks inherit it):
                # that group holds CPUs on the trial's node only.
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
            )
            shipped_runner = None if runner is model else portable.dumps(runner)
            return ray.get(remote.remote(portable.dumps(model), shipped_runner, task, spec, info, split, score))
    return measure_here(model, task, spec, info, split, runner=runner, score=score).update(**here())
