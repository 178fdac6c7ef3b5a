"""paretune as a library: launch a search on your own model and data, read its front,
export a trial, retrain it. Each function is what the CLI command of the same name
does, with Python objects in and out.

```python
import search

study = search.launch("studies/digits.toml", verbose=True)         # a spec file; prints as `paretune launch`
study = search.launch({"name": "mine", "budget": {"trials": 8}},   # or a dict
                      task=make_task, model=build_model, train=fit)
report = search.front(study)                  # FrontReport: front, hypervolume, reference
path = search.export(study, "mine-best.toml") # the knee as a runnable spec
card = search.train(path, "mine_model/", task=make_task, model=build_model).card
```

Callables passed here are recorded in the study's spec by where they live
(`/abs/path/file.py:name` for code in a file or script, `package.module:name` for an
installed module), so `paretune export`/`train` find them again; a lambda or a local
function cannot be found again: pass it once more to `search.train`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from search.core import optuna_internals
from search.core.errors import UsageError
from search.core.spec import StudySpec, from_dict, read_toml, to_toml_dict
from search.core.storage import load_study, open_storage, resolve_url
from search.driver import raynoise
from search.results import exporter, pareto, retrain
from search.tasks.plugins import resolve
from search.tasks.references import reference_of


def _with_code(data: dict, task, model, train, dimensions) -> dict:
    """Record the callables' references in the spec data (it is what the storage keeps)."""
    if task is not None:
        data["task"] = {"factory": reference_of(task)}
    if model is not None:
        data["model"] = {"factory": reference_of(model)}
    if train is not None:
        data["train"] = {**(data.get("train") or {}), "loop": reference_of(train)}
    if dimensions:
        space = data.setdefault("space", {})
        custom = space.setdefault("custom", {})
        named = list(custom.get("dimensions") or [])
        for dimension in dimensions:
            ref = reference_of(dimension if isinstance(dimension, type) else type(dimension))
            if ref not in named:
                named.append(ref)
        custom["dimensions"] = named
    return data


def as_spec(
    spec: str | Path | dict | StudySpec,
    *,
    task: Callable | None = None,
    model: Callable | None = None,
    train: Callable | None = None,
    dimensions: Iterable = (),
) -> StudySpec:
    """A validated StudySpec from a spec file path, a dict of spec keys or a StudySpec,
    with the given callables recorded in it. Relative paths in a file are relative
    to the file; in a dict, to the working directory. Raises UsageError."""
    if isinstance(spec, StudySpec):
        data, base, source = to_toml_dict(spec), None, "spec"
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        data = {k: v for k, v in read_toml(path).items() if k not in ("params", "exported")}
        base, source = path.parent, str(path)
    elif isinstance(spec, dict):
        data, base, source = copy.deepcopy(spec), Path.cwd(), "spec"
    else:
        raise UsageError(f"spec: expected a path, a dict or a StudySpec, but got {type(spec).__name__}")
    dimensions = list(dimensions)
    data = _with_code(data, task, model, train, dimensions)
    names = tuple(getattr(d, "name", "") for d in dimensions)
    return from_dict(data, source=source, base_dir=base, extra_sections=names)


def launch(
    spec: str | Path | dict | StudySpec,
    *,
    task: Callable | None = None,
    model: Callable | None = None,
    train: Callable | None = None,
    dimensions: Iterable = (),
    storage: str | None = None,
    address: str | None = None,
    drop_unsupported: bool = False,
    on_told: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    verbose: bool | Console = False,
) -> optuna.Study:
    """Run (or resume) a search and return its Optuna study.

    Args:
        spec: a spec file, a dict of spec keys, or a StudySpec.
        task: `make(seed) -> search.Task` (replaces the spec's `[task]`).
        model: `build(params, input_shape, n_classes) -> torch.nn.Module`; its knobs are
            the spec's `[space.model]` section.
        train: the training loop, `fit(model=, train_loader=, val_loader=, optimizer=,
            scheduler=, epochs=, report=, hooks=)` (see search.trial.training).
        dimensions: user dimensions (spaces.Dimension instances or classes); their
            settings are `[space.<name>]` sections of the spec.
        storage: Optuna storage URL (default `$PARETUNE_STORAGE` or sqlite:///paretune.db).
        address: a Ray cluster (`auto`, HOST:PORT, ray://...); default a local Ray.
        drop_unsupported: search without the choices the preflight finds unsupported,
            instead of raising.
        on_told: called with each finished trial as it is stored.
        verbose: print what `paretune launch` prints: the preflight table, the line
            that starts (or resumes) the study, a line per finished trial and the
            progress, then what this run stored, the front with its knee and
            hypervolume, and what to do next (`search.driver.launch_report`). True: on
            stdout (the preflight's warnings on stderr); a `rich.console.Console`:
            all of it on that console.

    Returns:
        The study (`optuna.Study`) in the storage; `study.best_trials` is its front
        (constraints aside: `search.front` applies them).

    Raises:
        search.UsageError: bad input (a spec key, a file, user code that breaks its
            contract, a choice the preflight refused), before Ray starts or anything
            is written.
    """
    from search.driver import launcher  # deferred: imports ray
    from search.driver.launch_report import LaunchReport  # deferred: imports ray

    dimensions = list(dimensions)
    checked = as_spec(spec, task=task, model=model, train=train, dimensions=dimensions)
    plugins = resolve(checked, task=task, model=model, train=train, dimensions=dimensions)
    report = None
    if verbose is not False:
        console = verbose if isinstance(verbose, Console) else Console()
        report = LaunchReport(checked, console, console if isinstance(verbose, Console) else Console(stderr=True), storage=storage)
    callbacks = report.callbacks(on_told) if report is not None else {"on_told": on_told}
    # Ray's messages that do not apply to a paretune search
    with raynoise.quiet(on_stop=report.on_stop if report is not None else None), report or contextlib.nullcontext():
        summary = launcher.launch(
            checked, storage_url=storage, address=address, plugins=plugins, drop_unsupported=drop_unsupported, **callbacks
        )
    if report is not None:
        report.end(summary)  # the study is returned however the search ended
    return optuna.load_study(study_name=summary.study_name, storage=open_storage(storage))


def _study(study: optuna.Study | str, storage: str | None) -> optuna.Study:
    if isinstance(study, optuna.Study):
        return study
    return load_study(storage, study)


def front(
    study: optuna.Study | str, *, storage: str | None = None, reference: dict[str, float] | None = None,
    accuracy_within: float = 0.05, max_drop: float = 0.01,
):
    """The Pareto front of the study's feasible trials (COMPLETE, finite, no constraint
    violated), its hypervolume, reference point, baseline and knee: a
    `search.results.pareto.FrontReport`. `study`: an Optuna study or a study name in `storage`;
    the knee is taken among front trials within `max_drop` of the baseline's accuracy
    (0.01 = 1 pp), or where none is (or without a baseline) within `accuracy_within` of
    the best accuracy (0.05 = 5 pp)."""
    return pareto.report(_study(study, storage), reference, accuracy_within, max_drop)


def export(
    study: optuna.Study | str,
    out: str | Path,
    *,
    storage: str | None = None,
    pick: str = "knee",
    where: Iterable[str] = (),
    accuracy_within: float = 0.05,
    max_drop: float = 0.01,
) -> Path:
    """Write one front trial as a runnable spec with its params pinned (what `paretune
    train` retrains); returns the path. `pick`: knee, max:NAME, min:NAME or
    weights:a=1,b=0.5; `where`: filters such as 'latency_ms<=1.5'; `max_drop` and
    `accuracy_within`: which front trials the knee is taken among (see `front`)."""
    loaded = _study(study, storage)
    rule = pareto.Pick.parse(pick)
    filters = [pareto.Filter.parse(w) for w in where]
    choice = pareto.pick_choice(loaded, rule, filters, accuracy_within, max_drop)
    chosen = choice.trial
    url = resolve_url(storage) if storage or not isinstance(study, optuna.Study) else _storage_url(loaded)
    how = pareto.pick_words(rule, accuracy_within, choice)
    return exporter.export(loaded, chosen, url, out, pick=how + "".join(f" where {f}" for f in filters))


def _storage_url(study: optuna.Study) -> str:
    """The URL of a study's RDB storage where it has one (to record in an export)."""
    storage = optuna_internals.backend_of(optuna_internals.storage_of(study))  # Optuna caches an RDB storage
    return str(getattr(storage, "url", None) or type(storage).__name__)


def train(
    config: str | Path,
    out: str | Path,
    *,
    task: Callable | None = None,
    model: Callable | None = None,
    train: Callable | None = None,
    dimensions: Iterable = (),
    on_epoch: Callable[[int, float], None] | None = None,
) -> Any:
    """Retrain an exported config from scratch with its recorded seed, measure it on the
    test split, and write the deployable model and its model card to `out`; returns a
    `search.results.retrain.RetrainReport` (`.card`, `.files`). The callables replace what the
    config references (needed when the search got a lambda or a local function)."""
    loaded = retrain.load_config(config)
    plugins = resolve(loaded.spec, task=task, model=model, train=train, dimensions=list(dimensions), source=str(loaded.path))
    return retrain.retrain(config, out, on_epoch=on_epoch, plugins=plugins)
