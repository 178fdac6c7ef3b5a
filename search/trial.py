"""One trial: build → train (augmented, distilled where the trial says so) → prune
(+ fine-tune) → quantize → bring to its runtime → measure.

`run_pipeline` is plain Python (tests and `paretune train` call it directly);
`trainable` wraps it for Ray Tune: it reports validation accuracy each epoch and the
final metrics once, and turns an exception inside the trial into a reported failure
(stored as FAIL with its reason) so one bad trial never stops the search.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

import torch
from torch import nn

from objectives import accuracy, complexity, energy, latency
from search import hardware, placement
from search.data import TaskData
from search.spec import StudySpec
from search.train import calibration_batches, train
from spaces import architecture, augmentation, distillation, pruning, quantization, runtime


@dataclass
class PipelineResult:
    model: nn.Module  # the deployable model (int8 where quantized)
    float_model: nn.Module  # the same model before quantization
    metrics: dict
    # What latency, energy and accuracy were measured on: the model on the trial's
    # runtime (TorchScript module, ONNX Runtime session); `model` itself for eager.
    runner: nn.Module | None = None


def int8_share(mode: str, macs: dict[str, int]) -> dict[str, int]:
    """MACs by precision: static/QAT run conv and linear in int8, dynamic only linear."""
    if mode in ("static", "qat"):
        return {"int8": macs["conv"] + macs["linear"], "fp32": macs["attention"]}
    if mode == "dynamic":
        return {"int8": macs["linear"], "fp32": macs["conv"] + macs["attention"]}
    return {"fp32": sum(macs.values())}


def build_and_compress(
    params: dict, task: TaskData, spec: StudySpec, seed: int, on_epoch=None, *, teacher: dict | None = None
) -> tuple[nn.Module, nn.Module, dict]:
    """`teacher` is `distillation.prepare_teacher`'s dict; a distilling trial without
    one trains the same teacher in this process (once)."""
    torch.manual_seed(seed)
    example = torch.from_numpy(task.X_train[:2])
    teacher_model, teacher_source = distillation.teacher_for(params, spec, task, teacher)
    augment = augmentation.make(params, spec.space.augmentation, task.kind, seed)
    extras = {"teacher": teacher_model, "augment": augment}
    torch.manual_seed(seed)  # the same initial weights whether or not a teacher was trained just now
    started = time.perf_counter()
    model = architecture.build(params, task.input_shape, task.n_classes, params.get("dropout", 0.0))
    kind = params.get("prune_kind", "none")
    hooks = (pruning.GradualPruner(model, params["prune_ratio"], spec.budget.epochs),) if kind == "gradual" else ()
    train(model, task, params, spec.budget.epochs, seed=seed, on_epoch=on_epoch, epoch_hooks=hooks, **extras)
    model = pruning.apply(model, params, example)
    if kind in ("unstructured", "structured"):
        train(model, task, params, spec.space.pruning.finetune_epochs, seed=seed + 1, lr_scale=0.1, constant_lr=True, **extras)
    model = pruning.finalize(model).eval()
    macs = complexity.count_macs(model, example)
    float_params, _ = complexity.count_params(model)
    mode = params.get("quant_mode", "none")

    def qat_fine_tune(prepared: nn.Module) -> None:
        train(prepared, task, params, spec.space.quantization.qat_epochs, seed=seed + 2, lr_scale=0.1, constant_lr=True, **extras)

    float_model = model
    if mode != "none":
        import copy

        float_model = copy.deepcopy(model)
    deployable = quantization.apply(
        model,
        mode,
        example,
        calibration=calibration_batches(task, spec.space.quantization.calibration_batches, seed=seed),
        fine_tune=qat_fine_tune,
    )
    info = {
        "macs": int(sum(macs.values())),
        "macs_by_precision": int8_share(mode, macs),
        "float_params": float_params,
        "train_seconds": time.perf_counter() - started,
    }
    if teacher_model is not None:
        info["teacher_source"] = teacher_source  # "study": prepared once by the launcher; "process": trained here
    return deployable, float_model, info


def to_runtime(params: dict, model: nn.Module, float_model: nn.Module, task: TaskData, spec: StudySpec, seed: int) -> nn.Module:
    """The deployable model on the trial's runtime (spaces.runtime); raises
    RuntimeUnavailable, which fails the trial, when it cannot be brought there."""
    if params.get("runtime", "eager") == "eager":
        return model
    settings = spec.space.runtime
    calibration = calibration_batches(task, spec.space.quantization.calibration_batches, seed=seed)
    return runtime.apply(
        params,
        model,
        float_model,
        torch.from_numpy(task.X_train[:2]),
        threads=spec.measure.threads,
        calibration=calibration,
        opset=settings.opset,
        optimize=settings.torchscript_optimize,
    )


def measure(
    model: nn.Module, task: TaskData, spec: StudySpec, info: dict, split: str = "val", *, runner: nn.Module | None = None
) -> dict:
    """Objectives of the deployable `model`; latency, energy and accuracy run on
    `runner` (the model on its runtime) where given. Parameter counts come from the
    torch model; the size is the runtime's own artifact where it has one (ONNX)."""
    X, y = (task.X_val, task.y_val) if split == "val" else (task.X_test, task.y_test)
    settings = spec.measure
    runner = model if runner is None else runner
    total_params, nonzero_params = complexity.count_params(model)
    artifact = runtime.artifact_kb(runner)
    size = complexity.size_kb(model) if artifact is None else artifact
    example = torch.rand(settings.batch_size, *task.input_shape)
    started = time.perf_counter()
    with latency.exclusive(), latency.torch_threads(settings.threads):
        speed = latency.measure(
            runner,
            task.input_shape,
            threads=settings.threads,
            batch_size=settings.batch_size,
            warmup=settings.warmup,
            repeats=settings.repeats,
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
        )
    metrics = {
        "accuracy": accuracy.measure(runner, X, y).value,
        "latency_ms": speed.value,
        "latency_p90_ms": speed.detail["p90_ms"],
        "energy_mj": power.value,
        "energy_source": power.source,
        "size_kb": size,
        "params": info["float_params"],
        "nonzero_params": nonzero_params,
        "sparsity": 1 - nonzero_params / max(total_params, 1),
        "macs": info["macs"],
        "quantized": quantization.is_quantized(model),
        "latency_source": speed.source,
        "measure_threads": settings.threads,
        "measure_batch_size": settings.batch_size,
        "train_seconds": info["train_seconds"],
        "measure_seconds": time.perf_counter() - started,
        "split": split,
    }
    if "teacher_source" in info:
        metrics["teacher_source"] = info["teacher_source"]
    return metrics


def run_pipeline(
    params: dict,
    task: TaskData,
    spec: StudySpec,
    seed: int,
    on_epoch=None,
    split: str = "val",
    *,
    teacher: dict | None = None,
) -> PipelineResult:
    """`teacher`: the study's teacher from `spaces.distillation.prepare_teacher(spec,
    task)`, shipped once to the workers; only distilling trials use it."""
    if task.kind == "table":  # a tabular benchmark: the recorded metrics are the result
        from search import tabular_bench

        return PipelineResult(None, None, tabular_bench.lookup(params))
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    model, float_model, info = build_and_compress(params, task, spec, seed, on_epoch, teacher=teacher)
    runner = to_runtime(params, model, float_model, task, spec, seed)
    # On this node, or on one carrying `resources.measure_on` (search.placement).
    metrics = placement.measure(model, runner, task, spec, info, split)
    metrics["runtime"] = params.get("runtime", "eager")
    metrics.update(hardware.describe())
    return PipelineResult(model, float_model, metrics, runner)


def trainable(config: dict, task: TaskData, spec: StudySpec, teacher: dict | None = None) -> None:
    """Ray Tune function trainable. `config` = {"params", "seed", "number"} from the searcher;
    `teacher` = `spaces.distillation.prepare_teacher(spec, task)` (None: no distillation),
    passed like `task` through `tune.with_parameters` so it sits once in the object store."""
    from ray import tune

    def report_epoch(epoch: int, val_accuracy: float) -> None:
        tune.report({"epoch": epoch + 1, "val_accuracy": val_accuracy})

    try:
        result = run_pipeline(config["params"], task, spec, config["seed"], on_epoch=report_epoch, teacher=teacher)
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        tune.report({"fail_reason": reason, "traceback": traceback.format_exc()[-2000:]})
        return
    tune.report({**result.metrics, "done": True})
