"""Retrain an exported config from scratch and save a deployable model with its card.

`retrain(config_path, out_dir)` loads the spec and its pinned `[params]`, rebuilds the
trial config with `suggest_params(FixedTrial(params), ...)` (the dimension registry), runs the whole trial
pipeline again (build → train → compress → deploy) with the recorded seed, measures on the
*test* split, and writes to `out_dir`:

- `model.pt`: TorchScript of the final model, whatever its precision, traced and
  frozen (as a trial deployed as TorchScript is measured) and read back from its saved bytes;
  load it with `torch.jit.load("model.pt")`, no project code needed. If tracing
  fails, or the traced model disagrees with the original, there is no `model.pt` and
  the card says why.
- the deployed form's own file, where the trial's deploy step made one that is its
  own artifact (`Dimension.ship`: `model.onnx` for an ONNX Runtime trial): the very
  model its latency was measured on; it is then the primary artifact.
- `state_dict.pt`: the final model's state dict; `float_state_dict.pt` as well when
  a compress step changed its precision (the weights before the conversion).
- `config.toml`: a copy of the exported config.
- `model_card.json` and `model_card.md`: test-split values next to the search-time
  (validation split) values of every objective, the other metrics, and the hardware of
  both runs; and the latency of what ships: the primary artifact loaded back from
  `out_dir` and timed as loaded (`Dimension.load_shipped`), beside the search-time
  value and the deployed form it was measured on.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import spaces
from objectives import accuracy, latency
from search.core.errors import UsageError
from search.core.spec import load, read_toml
from search.tasks.data import load_task
from search.tasks.plugins import resolve, suggest_params
from search.tasks.task import example_inputs, loader
from search.trial import pipeline
from search.trial.metrics import HARDWARE_KEYS, TrialMetrics
from search.trial.metrics import keys as metric_keys
from spaces import first_line

MODEL_FILE = "model.pt"
STATE_DICT_FILE = "state_dict.pt"
FLOAT_STATE_DICT_FILE = "float_state_dict.pt"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
# Metrics shown beside the objectives in the card (search-time user attrs vs retrained).
CARD_METRICS = metric_keys(card=True)


@dataclass
class LoadedConfig:
    path: Path
    spec: Any  # search.core.spec.StudySpec
    params: dict  # the Optuna params, as pinned in [params]
    exported: dict  # the [exported] table ({} for a hand-written config)
    seed: int


@dataclass
class RetrainReport:
    out_dir: Path
    card: dict
    artifact_format: str  # "onnx", "torchscript" or "state_dict"
    artifact_note: str | None
    files: list[Path] = field(default_factory=list)


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    spec = load(path)
    data = read_toml(path)
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise UsageError(f"{path}: no params table (the pinned trial params); write one with `paretune export STUDY --out {path.name}`")
    exported = data.get("exported") if isinstance(data.get("exported"), dict) else {}
    seed = exported.get("seed", (exported.get("attrs") or {}).get("seed", spec.seed))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"{path}: exported.seed must be an integer, but got {seed!r}")
    return LoadedConfig(path, spec, params, exported, seed)


def rebuild_config(loaded: LoadedConfig, task_kind: str, plugins=None) -> dict:
    import optuna

    try:
        return suggest_params(optuna.trial.FixedTrial(dict(loaded.params)), loaded.spec, task_kind, plugins,
                              baseline=bool(loaded.exported.get("is_baseline")))
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{loaded.path}: the params table does not pin every dimension of the spec: {str(exc).splitlines()[0]}") from None


def _raw(batches, scaling):
    """The same batches as raw inputs (what a deployed model.pt gets)."""
    return [(scaling.to_raw(x), y) for x, y in batches] if scaling is not None else batches


def trace(model, example, check_batches, scaling=None, *, optimize: bool = False) -> tuple[Any | None, str | None]:
    """Frozen TorchScript of `model` (behind `scaling`'s layer where given, so it takes
    raw inputs): `torch.jit.trace`, then `torch.jit.freeze` (and, with `optimize`,
    `torch.jit.optimize_for_inference`), as a trial deployed as TorchScript is measured.
    The returned module is the one read back from its saved bytes, so a form that does
    not survive saving is caught here, not by a user; it must predict exactly like
    `model` on `check_batches` (the test split, in batches of another size than the
    example's). Where freezing does not work, the plain trace is shipped and the second
    value says why; (None, why) when no TorchScript can be had."""
    import torch
    from torch import nn

    deployable = model.eval() if scaling is None else nn.Sequential(scaling.module(), model).eval()
    raw_example = _raw([(example, None)], scaling)[0][0]
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # int8 scales read as constants: intended
            traced = torch.jit.trace(deployable, raw_example, check_trace=False)
    except Exception as exc:  # noqa: BLE001 - any tracing failure falls back to the state dict
        return None, f"torch.jit.trace failed ({first_line(exc)[:200]})"
    raw = _raw(check_batches, scaling)
    expected = accuracy.predict(model, check_batches)[0]
    note = None
    try:
        shipped = _round_trip(_frozen(traced, optimize))
        if not np.array_equal(accuracy.predict(shipped, raw)[0], expected):
            raise ValueError("the frozen model predicts differently from the original")
    except Exception as exc:  # noqa: BLE001 - freezing is an optimization: ship the plain trace, and say so
        shipped, note = traced, f"shipped unfrozen: torch.jit.freeze{' + optimize_for_inference' if optimize else ''} failed ({first_line(exc)[:200]})"
    try:
        agree = float(np.mean(accuracy.predict(shipped, raw)[0] == expected))
    except Exception as exc:  # noqa: BLE001
        return None, f"the traced model does not run on the test batches ({type(exc).__name__})"
    if agree < 1.0:
        return None, f"the traced model agrees with the original on only {agree:.1%} of the test split"
    return shipped, note


def _frozen(traced, optimize: bool):
    import torch

    frozen = torch.jit.freeze(traced.eval())
    # optimize_for_inference rewrites float convolutions for MKLDNN; int8 graphs keep theirs.
    return torch.jit.optimize_for_inference(frozen) if optimize and not any(
        "quantized::" in node.kind() for node in frozen.graph.nodes()) else frozen


def _round_trip(module):
    """`module` saved and loaded back: what `torch.jit.load("model.pt")` will give a user."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _delta(retrained: Any, search: Any) -> float | None:
    if isinstance(retrained, bool) or isinstance(search, bool):
        return None
    try:
        value = float(retrained) - float(search)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def build_card(loaded: LoadedConfig, task, config: dict, record: TrialMetrics, artifact: dict) -> dict:
    spec, exported = loaded.spec, loaded.exported
    metrics = record.to_result()
    search_values = exported.get("values") or {}
    search_attrs = exported.get("attrs") or {}
    objectives = []
    for name, direction in spec.objectives.items():
        search = search_values.get(name, search_attrs.get(name))
        objectives.append({
            "name": name,
            "direction": direction,
            "search_val": search,
            "retrained_test": metrics.get(name),
            "delta": _delta(metrics.get(name), search),
        })
    others = [
        {"name": key, "search_val": search_attrs.get(key), "retrained_test": metrics.get(key),
         "delta": _delta(metrics.get(key), search_attrs.get(key))}
        for key in (*CARD_METRICS, *record.task_metrics)
        if key not in spec.objectives and (key in metrics or key in search_attrs)
    ]
    is_image = task.kind == "image"
    search_latency = search_values.get("latency_ms", search_attrs.get("latency_ms"))
    where = ran_on()
    shipped = {
        "search": {where: search_attrs.get(where), "latency_ms": search_latency, "split": "val",
                   "how": "the trial's own measurement during the search"},
        "retrained": {where: metrics.get(where), "latency_ms": metrics.get("latency_ms"), "split": "test",
                      "how": f"the retrained model on the trial's {where}, in this run"},
        "artifact": ({"file": artifact["file"], where: artifact.get(where), "latency_ms": artifact.get("latency_ms"),
                      "how": artifact.get("latency_how"), "raw_inputs": bool(artifact.get("raw_inputs"))}
                     if "latency_ms" in artifact else None),
    }
    return _jsonable({
        "model": _model_section(spec, config, task.kind),
        "name": spec.name,
        "source": {
            "config": str(loaded.path),
            "study": exported.get("study"),
            "trial": exported.get("trial"),
            "storage": exported.get("storage"),
            "pick": exported.get("pick"),
            "training_trial": exported.get("training_trial"),
        },
        "baseline": exported.get("baseline"),
        "weights": spec.weights,
        "seed": loaded.seed,
        "task": {
            "name": task.name,
            "kind": task.kind,
            "input_shape": list(task.input_shape),
            "n_classes": task.n_classes,
            "test_samples": int(len(task.test)),
            "input": _input_words(task, is_image),
            "preprocessing": dict(task.preprocessing),
            # x_model = (x_raw - offset) / divisor; model.pt applies it itself.
            "scaling": (
                {"offset": task.scaling.offset, "divisor": task.scaling.divisor, "description": task.scaling.description}
                if task.scaling is not None else None
            ),
            "output": f"logits N×{task.n_classes}; the predicted class is argmax over dim 1",
            # x_model = (x_raw - feature_mean) / feature_std, per feature (tabular tasks).
            "feature_mean": list(task.feature_mean) if task.feature_mean is not None else None,
            "feature_std": list(task.feature_std) if task.feature_std is not None else None,
            "class_labels": list(task.class_labels),
        },
        "config": config,
        "params": loaded.params,
        "objectives": objectives,
        "metrics": others,
        "hardware": {
            "search": {k: search_attrs.get(k) for k in HARDWARE_KEYS if k in search_attrs},
            "retrained": {k: metrics.get(k) for k in HARDWARE_KEYS if k in metrics},
        },
        "artifact": artifact,
        "latency": shipped,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    })


def _input_words(task, is_image: bool) -> str:
    shape = "float32 tensor N×" + "×".join(map(str, task.input_shape))
    scaling = task.scaling
    if scaling is None:
        return shape + " (as the task's datasets produce them)"
    if isinstance(scaling.divisor, tuple):
        what = "raw feature values; model.pt standardizes them itself, (x - feature_mean) / feature_std"
    else:
        what = f"raw values ({scaling.description}: model.pt does that division itself)"
    return (f"{shape} of {what}; state_dict.pt and model.onnx take the scaled inputs "
            "x_model = (x_raw - scaling.offset) / scaling.divisor")


def _model_section(spec, config: dict, task_kind: str) -> dict:
    """What the card says about the model: its build dimension's words
    (`Dimension.model_card`: the user's factory and knobs, or the built-in family)."""
    ctx = spaces.SuggestContext(task_kind, user_model=spec.model_factory is not None)
    section: dict = {}
    for dimension in spaces.active(spaces.builtins(), ctx):
        if dimension.stage == "build":
            section.update(dimension.model_card(config, spec))
    return section


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and signed:
        return f"{value:+.4g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# paretune train's own ship format for model.pt (a torch.jit trace of the final model,
# whatever the trial deployed on): its name in the card's JSON and in words. Every other
# format is a dimension's (`Dimension.ship`, `usage`).
TRACED, TRACED_NAME = "torchscript", "TorchScript"  # not a dimension: paretune's own ship format for model.pt
OWN_USAGE = (
    TRACED_NAME, "torch.jit.load", [
        "import torch",
        'model = torch.jit.load("{file}")',
        "logits = model(x)  # x: float32, shape (N, {shape}), the raw inputs described above",
    ],
)


def loader_of(fmt: str) -> tuple[str, str, list[str]] | None:
    """How a user loads an artifact of format `fmt`: (what it is, the loading call, the
    Python lines); None for a format nobody loads (a state dict alone)."""
    return OWN_USAGE if fmt == TRACED else spaces.usage(fmt)


def ran_on() -> str:
    """The card's name for what a model ran on: the fact a dimension records for it."""
    return spaces.ran_on_fact() or "ran_on"


def _usage(art: dict, shape: str) -> list[str]:
    description, _, code = loader_of(art["format"])
    head = f"`{art['file']}` ({description}) predicts the test split with accuracy {_fmt(art.get('test_accuracy'))}."
    return [head, "", "```python", *(line.format(file=art["file"], shape=shape) for line in code), "```"]


def card_markdown(card: dict) -> str:
    src, task, art = card["source"], card["task"], card["artifact"]
    lines = [f"# Model card: {card['name']}", ""]
    if src.get("study") is not None:
        lines.append(f"Trial {src['trial']} of study `{src['study']}` ({src.get('storage') or 'storage unknown'})"
                     + (f", picked by `{src['pick']}`" if src.get("pick") else "") + ".")
    if card.get("weights"):
        lines.append(f"Rebuilt from `{Path(src['config']).name}`: the trained weights `{card['weights']}`, then the "
                     f"trial's own steps with seed {card['seed']}.")
    else:
        lines.append(f"Retrained from scratch from `{Path(src['config']).name}` with seed {card['seed']}"
                     + (f" (the training of trial {src['training_trial']}, then this variant's own steps)."
                        if src.get("training_trial") not in (None, src.get("trial")) else "."))
    base = card.get("baseline")
    if base:
        lines += ["", f"Against the baseline (trial {base['trial']}, the model as it ran before the search; search-time "
                      f"values): {base['trade']}."]
    lines += [
        "",
        "## Objectives",
        "",
        "Search time: validation split, measured during the search. Retrained: test split, measured now.",
        "Latency and energy depend on the machine and on what else runs on it: compare them on the same hardware.",
        "",
        "| objective | direction | search (val) | retrained (test) | Δ |",
        "|---|---|---|---|---|",
    ]
    for row in card["objectives"]:
        lines.append(f"| {row['name']} | {row['direction']} | {_fmt(row['search_val'])} | {_fmt(row['retrained_test'])} | {_fmt(row['delta'], signed=True)} |")
    lines += latency_lines(card.get("latency"))
    lines += ["", "## Other metrics", "", "| metric | search (val) | retrained (test) |", "|---|---|---|"]
    for row in card["metrics"]:
        lines.append(f"| {row['name']} | {_fmt(row['search_val'])} | {_fmt(row['retrained_test'])} |")
    hw_search, hw_now = card["hardware"]["search"], card["hardware"]["retrained"]
    lines += ["", "## Hardware", "", "| | search | retrained |", "|---|---|---|"]
    for key in HARDWARE_KEYS:
        if key in hw_search or key in hw_now:
            lines.append(f"| {key} | {_fmt(hw_search.get(key))} | {_fmt(hw_now.get(key))} |")
    model = card.get("model") or {}
    if model.get("source") == "user":
        lines += ["", "## Model", "", f"The user's model from `{model['factory']}`, with knobs:", ""]
        lines += [f"- `{k}` = {_fmt(v)}" for k, v in model["knobs"].items()]
    if task.get("preprocessing"):
        lines += ["", "## Preprocessing", ""] + [f"- {k}: {_fmt(v)}" for k, v in task["preprocessing"].items()]
    lines += ["", "## Config", "", "```json", json.dumps(card["config"], indent=2), "```", "", "## Use", ""]
    lines += [f"Input: {task['input']}. Output: {task['output']}.", ""]
    if task.get("feature_mean") is not None:
        lines += [
            "feature_mean: " + ", ".join(f"{v:.6g}" for v in task["feature_mean"]),
            "",
            "feature_std: " + ", ".join(f"{v:.6g}" for v in task["feature_std"]),
            "",
        ]
    if task.get("class_labels"):
        lines += ["Class index → label: " + ", ".join(f"{i}: {label}" for i, label in enumerate(task["class_labels"])), ""]
    shape = ", ".join(map(str, task["input_shape"]))
    if loader_of(art["format"]) is not None:
        lines += _usage(art, shape)
        if art.get("note"):
            lines += ["", f"Note: {art['note']}."]
        if TRACED in art and loader_of(art[TRACED]["format"]) is not None:
            lines += ["", f"The torch model is also in `{art[TRACED]['file']}` ({TRACED_NAME})."]
    else:
        lines += [f"No {TRACED_NAME} model: {art['note']}. `{art['file']}` holds the state dict of the final model."]
    return "\n".join(lines) + "\n"


def _trace_options(spec, config: dict) -> dict:
    """How the shipped trace is made, as the trial's own deployed form was
    (`Dimension.trace_options`, e.g. an optimization pass the trial had)."""
    options: dict = {}
    for dimension in spaces.builtins():
        options.update(dimension.trace_options(config, spaces.section(spec, dimension)))
    return options


def load_artifact(path: Path, fmt: str, threads: int = 1):
    """The shipped file loaded as a user loads it (`Dimension.load_shipped`), an
    nn.Module-like callable, and the runtime it runs on."""
    for dimension in spaces.builtins():
        loaded = dimension.load_shipped(path, fmt, threads)
        if loaded is not None:
            return loaded
    raise UsageError(f"{path}: no dimension loads the artifact format {fmt!r}")


def shipped_latency(path: Path, fmt: str, task, spec, record: TrialMetrics) -> dict:
    """Latency of the shipped file itself, loaded from disk and timed like a trial
    (`measure` settings, the per-node measurement lock): the card's "what ships"
    figure, beside the search-time value on the trial's runtime."""
    settings = spec.measure
    runner, runs_on = load_artifact(path, fmt, settings.threads)
    with latency.exclusive(), latency.torch_threads(settings.threads):
        speed = latency.measure(runner, task.input_shape, threads=settings.threads, batch_size=settings.batch_size,
                                warmup=settings.warmup, repeats=settings.repeats)
    return {
        ran_on(): runs_on,
        "latency_ms": speed.value,
        "latency_p90_ms": speed.detail["p90_ms"],
        "gmac_per_s": record.macs * settings.batch_size / (speed.value * 1e6) if speed.value > 0 else None,
        "latency_how": (f"{path.name} loaded from disk, batch {settings.batch_size}, {settings.threads} thread(s), "
                        f"median of {settings.repeats} after {settings.warmup} warm-up"),
    }


def latency_lines(shipped: dict | None) -> list[str]:
    """The card's "Latency of what ships" section: search-time, retrained and the shipped
    file's own latency, each with the runtime it ran on."""
    if not shipped:
        return []
    rows = [("search (val)", shipped["search"]), ("retrained (test)", shipped["retrained"])]
    if shipped.get("artifact"):
        rows.append((f"`{shipped['artifact']['file']}` as shipped", shipped["artifact"]))
    where = ran_on()
    lines = ["", "## Latency of what ships", "", f"| measured | {where} | latency_ms | how |", "|---|---|---|---|"]
    lines += [f"| {label} | {_fmt(row.get(where))} | {_fmt(row.get('latency_ms'))} | {row.get('how') or '–'} |"
              for label, row in rows]
    artifact, search = shipped.get("artifact"), shipped["search"]
    if artifact and artifact.get("raw_inputs"):
        lines += ["", f"`{artifact['file']}` takes raw inputs: its first layer, the task's input scaling, is part of "
                      "its latency (the search timed the model on scaled inputs)."]
    if artifact and search.get(where) and artifact.get(where) != search[where]:
        lines += ["", f"The search measured this trial on {search[where]}; `{artifact['file']}` runs on "
                      f"{artifact[where]}: its own row is the latency to expect."]
    return lines


def _ship_runner(runner, out: Path, test_batches) -> dict | None:
    """Save the deployed form the trial was measured on where it is its own artifact
    (`Dimension.ship`); None where none is."""
    for dimension in spaces.builtins():
        shipped = dimension.ship(runner, out)
        if shipped is not None:
            return {**shipped, "note": None, "test_accuracy": accuracy.measure(runner, test_batches).value}
    return None


def retrain(
    config_path: str | Path,
    out_dir: str | Path,
    *,
    on_start: Callable[[LoadedConfig, dict, Any], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    plugins=None,
) -> RetrainReport:
    """`plugins` (search.tasks.plugins.Plugins): the user's code; by default what the config
    references is loaded."""
    import torch

    loaded = load_config(config_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    plugins = plugins if plugins is not None else resolve(loaded.spec, source=str(loaded.path))
    task = load_task(loaded.spec, plugins.task)
    config = rebuild_config(loaded, task.kind, plugins)
    if on_start is not None:
        on_start(loaded, config, task)
    result = pipeline.run_pipeline(config, task, loaded.spec, loaded.seed, on_epoch=on_epoch, split="test", plugins=plugins)
    out.mkdir(parents=True, exist_ok=True)

    model = result.model.eval()
    files = []
    test_batches = loader(task.test, 512)
    example = example_inputs(task.train).to(next((p.device for p in model.parameters()), "cpu"))
    traced, note = trace(model, example, test_batches, task.scaling, **_trace_options(loaded.spec, config))
    if traced is not None:
        torch.jit.save(traced, str(out / MODEL_FILE))
        files.append(out / MODEL_FILE)
        artifact = {"format": TRACED, "file": MODEL_FILE, "note": note, "raw_inputs": task.scaling is not None,
                    "test_accuracy": accuracy.measure(traced, _raw(test_batches, task.scaling)).value}
    else:
        (out / MODEL_FILE).unlink(missing_ok=True)  # never leave a stale model from an earlier run
        artifact = {"format": "state_dict", "file": STATE_DICT_FILE, "note": note, "test_accuracy": None}
    torch.save(model.state_dict(), out / STATE_DICT_FILE)
    files.append(out / STATE_DICT_FILE)
    own_file = _ship_runner(result.runner, out, test_batches)
    if own_file is not None:
        files.append(out / own_file["file"])
        artifact = {**own_file, TRACED: artifact}
    if result.float_model is not result.model:
        torch.save(result.float_model.state_dict(), out / FLOAT_STATE_DICT_FILE)
        files.append(out / FLOAT_STATE_DICT_FILE)
        artifact["float_state_dict"] = FLOAT_STATE_DICT_FILE
    if loaded.path.resolve() != (out / "config.toml").resolve():
        shutil.copyfile(loaded.path, out / "config.toml")
    files.append(out / "config.toml")

    if loader_of(artifact["format"]) is not None:
        artifact.update(shipped_latency(out / artifact["file"], artifact["format"], task, loaded.spec, result.metrics))
    card = build_card(loaded, task, config, result.metrics, artifact)
    (out / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (out / CARD_MD).write_text(card_markdown(card))
    files += [out / CARD_JSON, out / CARD_MD]
    return RetrainReport(out, card, artifact["format"], note, files)
