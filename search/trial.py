"""One trial: build → train → prune (+ fine-tune) → quantize → measure.

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
from search import hardware
from search.data import TaskData
from search.spec import StudySpec
from search.train import calibration_batches, train
from spaces import architecture, pruning, quantization


@dataclass
class PipelineResult:
    model: nn.Module  # the deployable model (int8 where quantized)
    float_model: nn.Module  # the same model before quantization
    metrics: dict


def int8_share(mode: str, macs: dict[str, int]) -> dict[str, int]:
    """MACs by precision: static/QAT run conv and linear in int8, dynamic only linear."""
    if mode in ("static", "qat"):
        return {"int8": macs["conv"] + macs["linear"], "fp32": macs["attention"]}
    if mode == "dynamic":
        return {"int8": macs["linear"], "fp32": macs["conv"] + macs["attention"]}
    return {"fp32": sum(macs.values())}


def build_and_compress(params: dict, task: TaskData, spec: StudySpec, seed: int, on_epoch=None) -> tuple[nn.Module, nn.Module, dict]:
    torch.manual_seed(seed)
    example = torch.from_numpy(task.X_train[:2])
    model = architecture.build(params, task.input_shape, task.n_classes, params.get("dropout", 0.0))
    kind = params.get("prune_kind", "none")
    hooks = (pruning.GradualPruner(model, params["prune_ratio"], spec.budget.epochs),) if kind == "gradual" else ()
    started = time.perf_counter()
    train(model, task, params, spec.budget.epochs, seed=seed, on_epoch=on_epoch, epoch_hooks=hooks)
    model = pruning.apply(model, params, example)
    if kind in ("unstructured", "structured"):
        train(model, task, params, spec.space.pruning.finetune_epochs, seed=seed + 1, lr_scale=0.1, constant_lr=True)
    model = pruning.finalize(model).eval()
    macs = complexity.count_macs(model, example)
    float_params, _ = complexity.count_params(model)
    mode = params.get("quant_mode", "none")

    def qat_fine_tune(prepared: nn.Module) -> None:
        train(prepared, task, params, spec.space.quantization.qat_epochs, seed=seed + 2, lr_scale=0.1, constant_lr=True)

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
    return deployable, float_model, info


def measure(model: nn.Module, task: TaskData, spec: StudySpec, info: dict, split: str = "val") -> dict:
    X, y = (task.X_val, task.y_val) if split == "val" else (task.X_test, task.y_test)
    settings = spec.measure
    total_params, nonzero_params = complexity.count_params(model)
    size = complexity.size_kb(model)
    example = torch.rand(settings.batch_size, *task.input_shape)
    started = time.perf_counter()
    with latency.exclusive(), latency.torch_threads(settings.threads):
        speed = latency.measure(
            model,
            task.input_shape,
            threads=settings.threads,
            batch_size=settings.batch_size,
            warmup=settings.warmup,
            repeats=settings.repeats,
        )

        def run_once() -> None:
            with torch.inference_mode():
                model(example)

        power = energy.measure(
            run_once,
            latency_ms=speed.value,
            macs_by_precision={k: v * settings.batch_size for k, v in info["macs_by_precision"].items()},
            weight_bytes=size * 1024,
            static_power_w=settings.static_power_w,
            powercap_root=settings.powercap_root,
        )
    return {
        "accuracy": accuracy.measure(model, X, y).value,
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


def run_pipeline(params: dict, task: TaskData, spec: StudySpec, seed: int, on_epoch=None, split: str = "val") -> PipelineResult:
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    model, float_model, info = build_and_compress(params, task, spec, seed, on_epoch)
    metrics = measure(model, task, spec, info, split)
    metrics.update(hardware.describe())
    return PipelineResult(model, float_model, metrics)


def trainable(config: dict, task: TaskData, spec: StudySpec) -> None:
    """Ray Tune function trainable. `config` = {"params", "seed", "number"} from the searcher."""
    from ray import tune

    def report_epoch(epoch: int, val_accuracy: float) -> None:
        tune.report({"epoch": epoch + 1, "val_accuracy": val_accuracy})

    try:
        result = run_pipeline(config["params"], task, spec, config["seed"], on_epoch=report_epoch)
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        tune.report({"fail_reason": reason, "traceback": traceback.format_exc()[-2000:]})
        return
    tune.report({**result.metrics, "done": True})
