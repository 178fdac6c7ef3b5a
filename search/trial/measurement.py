"""Measuring a deployed model: latency and energy on the measurement device, size,
parameter and MAC counts, accuracy on a split and the task's own metrics, into one
TrialMetrics record. Runs where the trial runs, or on the node `resources.measure_on`
names (search.trial.placement ships the model there and calls `measure`).
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from objectives import accuracy, complexity, energy, latency
from search.core.spec import StudySpec
from search.tasks.task import Task, loader, workers_for
from search.trial import timing
from search.trial.metrics import TrialMetrics


def measure_device(spec: StudySpec) -> torch.device:
    return torch.device("cuda") if spec.measure.device == "cuda" else torch.device("cpu")


def macs_by_precision(macs: dict[str, int], kinds: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """MACs split by the precision they run in: `kinds` maps a lower precision to the
    layer kinds that run in it (a compress step records it as
    `ctx.info["precision_kinds"]`); the rest runs in fp32."""
    lowered = {precision: sum(macs.get(k, 0) for k in layer_kinds) for precision, layer_kinds in kinds.items()}
    out = {"fp32": sum(macs.values()) - sum(lowered.values())}
    out.update({precision: count for precision, count in lowered.items() if count})
    return out


def task_metrics(task: Task, runner: nn.Module, batches) -> dict[str, float]:
    """The task's own metrics of the deployed model (empty without `Task.metrics`)."""
    if task.metrics is None:
        return {}
    values = task.metrics(runner, batches)
    if not isinstance(values, dict):
        raise TypeError(f"Task.metrics returned {type(values).__name__}, not a dict of numbers")
    return {str(k): float(v) for k, v in values.items()}


def measure(
    model: nn.Module, task: Task, spec: StudySpec, info: dict, split: str = "val", *, runner: nn.Module | None = None,
    score: bool = True,
) -> TrialMetrics:
    """Objectives of the deployable `model`; latency, energy and accuracy run on
    `runner` (the model as deployed) where given. Parameter counts come from the
    torch model; the size is the runner's own where it is its own artifact (it has a
    `size_kb()`, e.g. an exported graph), the torch model's otherwise.
    `score=False` skips accuracy and the task's metrics (NaN, none): an untrained
    model's (search.trial.feasibility)."""
    settings = spec.measure
    runner = model if runner is None else runner
    dataset = task.val if split == "val" else task.test
    total_params, nonzero_params = complexity.count_params(model)
    own_size = getattr(runner, "size_kb", None)
    size = float(own_size()) if callable(own_size) else complexity.size_kb(model)
    device = str(measure_device(spec))
    example = torch.rand(settings.batch_size, *task.input_shape, device=device)
    started = time.perf_counter()
    with contextlib.ExitStack() as held:
        with timing.waiting("wait"):  # another trial's measurement on this node
            held.enter_context(latency.exclusive())
        held.enter_context(latency.torch_threads(settings.threads))
        speed = latency.measure(
            runner,
            task.input_shape,
            threads=settings.threads,
            batch_size=settings.batch_size,
            warmup=settings.warmup,
            repeats=settings.repeats,
            device=device,
        )

        def run_once() -> None:
            with torch.inference_mode():
                runner(example)

        power = energy.measure(
            run_once,
            latency_ms=speed.value,
            macs_by_precision={k: v * settings.batch_size for k, v in info["macs_by_precision"].items()},
            weight_bytes=size * 1024,
            static_power_w=settings.static_power_w,
            powercap_root=settings.powercap_root,
            device=device,
        )
    batches = loader(dataset, 512, workers=workers_for(task, spec)) if score else None
    gmac_per_s = info["macs"] * settings.batch_size / (speed.value * 1e6) if speed.value > 0 else 0.0
    return TrialMetrics(
        accuracy=accuracy.measure(runner, batches).value if score else float("nan"),
        latency_ms=speed.value,
        latency_p90_ms=speed.detail["p90_ms"],
        energy_mj=power.value,
        energy_source=power.source,
        size_kb=size,
        params=info["float_params"],
        nonzero_params=nonzero_params,
        sparsity=1 - nonzero_params / max(total_params, 1),
        macs=info["macs"],
        latency_source=speed.source,
        measure_device=device,
        measure_threads=settings.threads,
        measure_batch_size=settings.batch_size,
        gmac_per_s=gmac_per_s,
        train_seconds=info.get("train_seconds", 0.0),
        measure_seconds=time.perf_counter() - started,
        split=split,
        task_metrics=task_metrics(task, runner, batches) if score else {},
    )
