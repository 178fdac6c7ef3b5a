"""Compression on digits: each pruning and quantization mode against the fp32,
unpruned model of the same architecture, trained the same way; then batch-1 latency
of three architectures on every runtime and precision a trial can ship, beside the
machine's measured peak.

Every compression row is one `search.trial.pipeline.run_pipeline` call with a fixed params
dict (same architecture, recipe and seed; only `prune_*` / `quant_mode` differ),
deployed on TorchScript (the runtime every quantization mode, QAT included, ships on),
accuracy on the test split. Pruning rows fine-tune with the default budget
(ceil(ratio × epochs) epochs) and, for structured 50%, also with the former fixed 2
epochs; gradual pruning prunes during training instead. The last rows are a model
picked by a search and its own fp32 baseline: the knee (among front trials within
5 pp of the best accuracy, the default export rule) of a small digits search in the
full run; in --quick a fixed representative config (structured 50% + static int8)
stands in, and the table says which.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Table, ray_session

ARCH = {"family": "cnn", "width": 32, "depth": 2, "kernel": 3, "batch_norm": True}
RECIPE = {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4,
          "dropout": 0.0, "label_smoothing": 0.0}
RUNTIME = "torchscript"
BASELINE = {**ARCH, **RECIPE, "prune_kind": "none", "quant_mode": "none", "runtime": RUNTIME}
FIXED_FINETUNE = 2  # the fine-tune every pruned model got before it scaled with the ratio
VARIANTS = {
    "unstructured 30%": {"prune_kind": "unstructured", "prune_ratio": 0.3},
    "unstructured 50%": {"prune_kind": "unstructured", "prune_ratio": 0.5},
    "structured 30%": {"prune_kind": "structured", "prune_ratio": 0.3},
    "structured 50%": {"prune_kind": "structured", "prune_ratio": 0.5},
    f"structured 50%, fixed {FIXED_FINETUNE}-epoch fine-tune": {"prune_kind": "structured", "prune_ratio": 0.5,
                                                               "finetune": FIXED_FINETUNE},
    "gradual 50% (during training)": {"prune_kind": "gradual", "prune_ratio": 0.5},
    "dynamic int8": {"quant_mode": "dynamic"},
    "static int8": {"quant_mode": "static"},
    "QAT int8": {"quant_mode": "qat"},
}
REPRESENTATIVE = {"prune_kind": "structured", "prune_ratio": 0.5, "quant_mode": "static"}
# Batch-1 section: the compression baseline (a dense CNN) and two nets where int8 is expected to lose.
BATCH1_MODELS = {
    "CNN w32 d2": ARCH,
    "MLP w64 d2": {"family": "mlp", "width": 64, "depth": 2, "batch_norm": True},
    "MobileNet w16 d2": {"family": "mobilenet", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True},
}


def settings(quick: bool) -> dict:
    if quick:
        return {"epochs": 2, "repeats": 30, "batch_repeats": 10, "search_trials": 0, "rounds": 2, "peak_calls": 5}
    return {"epochs": 15, "repeats": 100, "batch_repeats": 30, "search_trials": 12, "rounds": 5, "peak_calls": 20}


def spec_for(size: dict, name: str = "compression", finetune: int | str = "auto"):
    from search.core.spec import from_dict

    return from_dict(
        {
            "name": name,
            "task": "digits",
            "budget": {"trials": max(size["search_trials"], 1), "concurrency": 2, "epochs": size["epochs"]},
            "measure": {"repeats": size["repeats"]},
            "space": {"pruning": {"finetune_epochs": finetune}},
        }
    )


def evaluate(params: dict, task, spec, batch_repeats: int):
    """One pipeline run: its metrics on the test split plus batch-64 latency, and the result."""
    from objectives import latency
    from search.trial.pipeline import run_pipeline

    result = run_pipeline(params, task, spec, seed=spec.seed, split="test")
    with latency.exclusive():
        batch = latency.measure(result.runner, task.input_shape, threads=spec.measure.threads, batch_size=64,
                                warmup=5, repeats=batch_repeats)
    return {**result.metrics.to_result(), "latency_b64_ms": batch.value}, result


def knee_of_search(size: dict, task) -> tuple[dict, str]:
    """A small digits search through `launch`; its knee's config (trial params → config),
    picked by the default export rule, and what that knee trades."""
    import optuna

    from search.driver.launcher import launch
    from search.results import pareto as front
    from search.tasks.plugins import suggest_params

    spec = spec_for(size, name="compression-search")
    with tempfile.TemporaryDirectory(prefix="paretune-bench-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'search.db'}"
        with ray_session():
            launch(spec, storage_url=url)
        study = optuna.load_study(study_name=spec.name, storage=url)
        report = front.report(study)
        chosen = front.pick(study, "knee")
        trade = front.trade_words(report.front, chosen, report.objectives)
    config = suggest_params(optuna.trial.FixedTrial(dict(chosen.params)), spec, task.kind)
    return config, (f"knee of a {size['search_trials']}-trial digits search (trial {chosen.number}, {size['epochs']} "
                    f"epochs, TPE; among the {len(report.useful())} of {len(report.front)} front trials within "
                    f"5 pp of the best accuracy; at search time {trade})")


def row(label: str, metrics: dict, base: dict) -> list:
    def cut(key: str) -> float:
        return 100 * (1 - metrics[key] / base[key])

    return [
        label,
        metrics["runtime"],
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


def _finetune_words(change: dict, epochs: int) -> str:
    from spaces.pruning import finetune_budget

    if change.get("prune_kind") not in ("structured", "unstructured"):
        return ""
    budget = finetune_budget(change.get("finetune", "auto"), change["prune_ratio"], epochs)
    return f" ({budget}-epoch fine-tune)" if "finetune" not in change else ""


def compression_table(size: dict, task, cpu: str) -> tuple[Table, dict]:
    spec = spec_for(size)
    base, base_result = evaluate(BASELINE, task, spec, size["batch_repeats"])
    rows = [row(f"fp32 baseline: cnn w{ARCH['width']} d{ARCH['depth']}", base, base)]
    for label, change in VARIANTS.items():
        change = dict(change)
        run_spec = spec_for(size, finetune=change.pop("finetune")) if "finetune" in change else spec
        metrics, _ = evaluate({**BASELINE, **change}, task, run_spec, size["batch_repeats"])
        rows.append(row(label + _finetune_words(VARIANTS[label], size["epochs"]), metrics, base))
    if size["search_trials"]:
        picked, how = knee_of_search(size, task)
    else:
        picked, how = {**BASELINE, **REPRESENTATIVE}, "fixed representative config (structured 50% + static int8), no search in --quick"
    picked_base_params = {**picked, "prune_kind": "none", "quant_mode": "none"}
    picked_base_params.pop("prune_ratio", None)
    picked_base, _ = evaluate(picked_base_params, task, spec, size["batch_repeats"])
    arch = "/".join(str(picked.get(k, "")) for k in ("family", "width", "depth"))
    rows.append(row(f"fp32 baseline of the picked model ({arch})", picked_base, picked_base))
    mode = f"{picked.get('prune_kind')}{' ' + format(picked['prune_ratio'], '.0%') if 'prune_ratio' in picked else ''} + {picked.get('quant_mode')}"
    picked_metrics, _ = evaluate(picked, task, spec, size["batch_repeats"])
    rows.append(row(f"picked model: {mode}", picked_metrics, picked_base))
    table = Table(
        "compression",
        f"Compression on digits (vs fp32, unpruned, same architecture; {RUNTIME} unless the picked model chose otherwise)",
        ["model", "runtime", "non-zero params", "param reduction %", "size KB", "size reduction %", "MACs",
         "compute reduction %", "latency b1 ms", "speed-up b1 ×", "latency b64 ms", "speed-up b64 ×",
         "test accuracy %", "accuracy change pp"],
        rows,
        [
            f"recipe: {RECIPE}, {size['epochs']} epochs, seed 0; pruned models fine-tune ceil(ratio × "
            f"{size['epochs']}) epochs (the default, `finetune_epochs = \"auto\"`) unless the row says otherwise; "
            f"gradual pruning ramps sparsity during training and has no fine-tune; QAT fine-tunes "
            f"{spec.space.quantization.qat_epochs} epochs; test split (20% of digits, 360 images: one image is 0.28 pp).",
            "param reduction counts non-zero parameters (unstructured and gradual pruning zero weights in place); MACs "
            "are counted on the float model, so unstructured pruning and int8 do not change them (int8 runs the "
            "same MACs in cheaper arithmetic; dynamic int8 quantizes Linear layers only).",
            f"latency: batch 1 is the trial's own measurement on its runtime (1 thread, median of {size['repeats']}); "
            f"batch 64 median of {size['batch_repeats']}; speed-up = baseline latency / latency. Machine: {cpu}, "
            "2 cores shared with other work: single runs, read them against the interleaved section below.",
            f"picked model: {how}; compared with the same config without pruning and quantization.",
        ],
    )
    return table, base_result.model


def batch1_table(size: dict, task, cnn_model, cpu: str, flags: str, peaks: dict) -> Table:
    from benchmarks.batch1 import COLUMNS, rows
    from search.trial.pipeline import run_pipeline

    models = {}
    for label, arch in BATCH1_MODELS.items():
        if arch is ARCH:
            models[label] = cnn_model
        else:
            spec = spec_for(size)
            models[label] = run_pipeline({**BASELINE, **arch, "runtime": "eager"}, task, spec, seed=spec.seed).model
    table_rows = [r for label, model in models.items() for r in rows(label, model, task, peaks, size["rounds"],
                                                                      size["repeats"] * 2)]
    return Table(
        "compression",
        "Batch-1 latency per runtime and precision (digits models, one thread)",
        COLUMNS,
        table_rows,
        [
            f"each model trained once ({size['epochs']} epochs); every variant built from it by the trial's own "
            "quantization and runtime functions; latency = median over "
            f"{size['rounds']} interleaved rounds of each round's median of {size['repeats'] * 2} calls (batch 1, "
            "1 thread, measurement lock); spread = (max - min) / median over rounds; speed-ups = median over rounds "
            "of the ratio within each round (paired: drifts between rounds cancel).",
            "× same-runtime fp32 > 1 means int8 pays on that runtime; a search measures every (runtime, precision) "
            "pair, so its front keeps fp32 where int8 is slower.",
            f"GMAC/s = float-model MACs / latency; % of peak against this machine's one-thread matmul peak "
            f"(fp32 {peaks['fp32']:.1f}, int8 {peaks['int8']:.1f} GMAC/s, table below).",
            f"Machine: {cpu}; CPU flags: {flags or 'none listed'}; 2 cores shared with other work.",
        ],
    )


def peak_table(size: dict, cpu: str, flags: str) -> tuple[Table, dict]:
    from benchmarks import machine_peak

    measured = machine_peak.measure(rounds=size["rounds"], calls=size["peak_calls"])
    rows = [[name, values["gmac_per_s"], 100 * values["spread"]] for name, values in measured.items()]
    return Table(
        "compression",
        f"Machine peak, one thread ({machine_peak.SIZE}³ matmul)",
        ["kernel", "GMAC/s", "spread %"],
        rows,
        [
            f"median over {size['rounds']} interleaved rounds of each round's median of {size['peak_calls']} calls; "
            "spread = (max - min) / median over rounds.",
            f"Machine: {cpu}; CPU flags: {flags or 'none listed'}; 2 cores shared with other work.",
        ],
    ), machine_peak.peaks(measured)


def run(quick: bool = False) -> list[Table]:
    from search.tasks.data import load_task
    from search.trial.hardware import cpu_flags, cpu_model

    size = settings(quick)
    task = load_task(spec_for(size))
    cpu, flags = cpu_model(), cpu_flags()
    compression, cnn_model = compression_table(size, task, cpu)
    peak, peaks = peak_table(size, cpu, flags)
    batch1 = batch1_table(size, task, cnn_model, cpu, flags, peaks)
    return [compression, batch1, peak]
