"""Compression on digits: each pruning and quantization mode against the fp32,
unpruned model of the same architecture, trained the same way.

Every row is one `search.trial.run_pipeline` call with a fixed params dict (same
architecture, recipe and seed; only `prune_*` / `quant_mode` differ), accuracy on the
test split. The last rows are a model picked by a search and its own fp32 baseline:
the knee of a small digits search in the full run; in --quick a fixed representative
config (structured 50% + static int8) stands in, and the table says which.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Table, ray_session

ARCH = {"family": "cnn", "width": 32, "depth": 2, "kernel": 3, "batch_norm": True}
RECIPE = {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4,
          "dropout": 0.0, "label_smoothing": 0.0}
BASELINE = {**ARCH, **RECIPE, "prune_kind": "none", "quant_mode": "none"}
VARIANTS = {
    "unstructured 30%": {"prune_kind": "unstructured", "prune_ratio": 0.3},
    "unstructured 50%": {"prune_kind": "unstructured", "prune_ratio": 0.5},
    "structured 30%": {"prune_kind": "structured", "prune_ratio": 0.3},
    "structured 50%": {"prune_kind": "structured", "prune_ratio": 0.5},
    "dynamic int8": {"quant_mode": "dynamic"},
    "static int8": {"quant_mode": "static"},
    "QAT int8": {"quant_mode": "qat"},
}
REPRESENTATIVE = {"prune_kind": "structured", "prune_ratio": 0.5, "quant_mode": "static"}


def settings(quick: bool) -> dict:
    if quick:
        return {"epochs": 4, "repeats": 30, "batch_repeats": 10, "search_trials": 0}
    return {"epochs": 15, "repeats": 100, "batch_repeats": 30, "search_trials": 12}


def spec_for(size: dict, name: str = "compression"):
    from search.spec import from_dict

    return from_dict(
        {
            "name": name,
            "task": "digits",
            "budget": {"trials": max(size["search_trials"], 1), "concurrency": 2, "epochs": size["epochs"]},
            "measure": {"repeats": size["repeats"]},
        }
    )


def evaluate(params: dict, task, spec, batch_repeats: int) -> dict:
    """One pipeline run: its metrics on the test split plus batch-64 latency."""
    from objectives import latency
    from search.trial import run_pipeline

    result = run_pipeline(params, task, spec, seed=spec.seed, split="test")
    with latency.exclusive():
        batch = latency.measure(result.runner, task.input_shape, threads=spec.measure.threads, batch_size=64,
                                warmup=5, repeats=batch_repeats)
    return {**result.metrics.to_result(), "latency_b64_ms": batch.value}


def knee_of_search(size: dict, task) -> tuple[dict, str]:
    """A small digits search through `launch`; its knee's config (trial params → config)."""
    import optuna

    from search import pareto as front
    from search.launcher import launch
    from search.plugins import suggest_params

    spec = spec_for(size, name="compression-search")
    with tempfile.TemporaryDirectory(prefix="paretune-bench-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'search.db'}"
        with ray_session():
            launch(spec, storage_url=url)
        study = optuna.load_study(study_name=spec.name, storage=url)
        chosen = front.pick(study, "knee")
    config = suggest_params(optuna.trial.FixedTrial(dict(chosen.params)), spec, task.kind)
    return config, f"knee of a {size['search_trials']}-trial digits search (trial {chosen.number}, {size['epochs']} epochs, TPE)"


def row(label: str, metrics: dict, base: dict) -> list:
    def cut(key: str) -> float:
        return 100 * (1 - metrics[key] / base[key])

    return [
        label,
        metrics["nonzero_params"],
        cut("nonzero_params"),
        metrics["size_kb"],
        cut("size_kb"),
        metrics["macs"],
        cut("macs"),
        metrics["latency_ms"],
        base["latency_ms"] / metrics["latency_ms"],
        metrics["latency_b64_ms"],
        base["latency_b64_ms"] / metrics["latency_b64_ms"],
        100 * metrics["accuracy"],
        100 * (metrics["accuracy"] - base["accuracy"]),
    ]


def run(quick: bool = False) -> list[Table]:
    from search.data import load_task

    size = settings(quick)
    spec = spec_for(size)
    task = load_task(spec)
    base = evaluate(BASELINE, task, spec, size["batch_repeats"])
    rows = [row(f"fp32 baseline: cnn w{ARCH['width']} d{ARCH['depth']}", base, base)]
    for label, change in VARIANTS.items():
        rows.append(row(label, evaluate({**BASELINE, **change}, task, spec, size["batch_repeats"]), base))
    if size["search_trials"]:
        picked, how = knee_of_search(size, task)
    else:
        picked, how = {**BASELINE, **REPRESENTATIVE}, "fixed representative config (structured 50% + static int8), no search in --quick"
    picked_base_params = {**picked, "prune_kind": "none", "quant_mode": "none"}
    picked_base_params.pop("prune_ratio", None)
    picked_base = evaluate(picked_base_params, task, spec, size["batch_repeats"])
    arch = "/".join(str(picked.get(k, "")) for k in ("family", "width", "depth"))
    rows.append(row(f"fp32 baseline of the picked model ({arch})", picked_base, picked_base))
    mode = f"{picked.get('prune_kind')}{' ' + format(picked['prune_ratio'], '.0%') if 'prune_ratio' in picked else ''} + {picked.get('quant_mode')}"
    rows.append(row(f"picked model: {mode}", evaluate(picked, task, spec, size["batch_repeats"]), picked_base))
    return [
        Table(
            "compression",
            "Compression on digits (vs fp32, unpruned, same architecture)",
            ["model", "non-zero params", "param reduction %", "size KB", "size reduction %", "MACs",
             "compute reduction %", "latency b1 ms", "speed-up b1 ×", "latency b64 ms", "speed-up b64 ×",
             "test accuracy %", "accuracy change pp"],
            rows,
            [
                f"recipe: {RECIPE}, {size['epochs']} epochs, seed 0; pruned models fine-tune "
                f"{spec.space.pruning.finetune_epochs} epochs, QAT {spec.space.quantization.qat_epochs}; "
                "test split (20% of digits, 360 images: one image is 0.28 pp).",
                "param reduction counts non-zero parameters (unstructured pruning zeroes weights in place); MACs are "
                "counted on the float model, so unstructured pruning and int8 do not change them (int8 runs the "
                "same MACs in cheaper arithmetic; dynamic int8 quantizes Linear layers only).",
                f"latency: batch 1 is the trial's own measurement (1 thread, median of {size['repeats']}); batch 64 "
                f"median of {size['batch_repeats']}; speed-up = baseline latency / latency.",
                f"picked model: {how}; compared with the same config without pruning and quantization.",
            ],
        )
    ]
