"""Export one trial as a fixed config: a loadable study spec plus two tables.

- `[params]`: the trial's Optuna params, one per searched dimension, so
  `search.tasks.plugins.suggest_params(FixedTrial(params), spec, task_kind)` rebuilds its exact config.
- `[exported]`: where it came from (study, trial number, storage URL with any password
  hidden, seed) and what it measured at search time: `[exported.values]` by objective
  (validation split) and `[exported.attrs]` (size, params, MACs, energy and latency
  sources, hardware).

`search.core.spec.load()` ignores both tables, so the file is still a study spec.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import optuna
import tomllib
from optuna.trial import FrozenTrial

from search.core.errors import UsageError
from search.core.records import BASELINE_ATTR, CONSTRAINTS_ATTR, TRAINING_ATTR
from search.core.spec import from_dict
from search.core.storage import redact
from search.core.toml_text import dumps
from search.results.recorded import objectives_of, study_spec, task_kind_of
from search.results.trade import trade_sentence
from search.tasks.baseline import find as find_baseline
from search.tasks.plugins import suggest_params
from search.trial.metrics import keys as metric_keys

# Top-level spec keys first, then its tables, in the order a hand-written spec has them.
SPEC_ORDER = ("name", "task", "seed", "sampler", "constraints", "objectives", "model", "train", "budget", "resources", "measure", "space")

# --- export --------------------------------------------------------------------------


def _ordered_spec(spec: dict) -> dict:
    ordered = {k: spec[k] for k in SPEC_ORDER if k in spec}
    ordered.update({k: v for k, v in spec.items() if k not in ordered})
    task = ordered.get("task")
    if isinstance(task, dict):
        # A recorded path is relative to where the search ran; pin it to that place.
        ordered["task"] = {
            k: str(Path(v).resolve()) if k in ("path", "images") and v and not Path(v).is_absolute() else v
            for k, v in task.items()
        }
    return ordered


def trial_seed(trial: FrozenTrial, spec: dict) -> int:
    """The seed the trial trained with (the searcher records it; spec seed + number otherwise)."""
    seed = trial.user_attrs.get("seed")
    return int(seed) if seed is not None else int(spec.get("seed", 0)) + trial.number


def exported_config(study: optuna.Study, trial: FrozenTrial, storage_url: str, *, pick: str | None = None) -> dict:
    """The exported file's content as plain data (spec keys, `params`, `exported`)."""
    spec = _ordered_spec(study_spec(study))
    uri = study.user_attrs.get("mlflow")  # where its latest launch tracked it (search.results.tracking): `train` logs there
    if uri:
        spec["tracking"] = {**spec.get("tracking", {}), "mlflow": uri}
    from_dict(spec, source=f"study {study.study_name!r} spec")  # still a valid spec
    objectives = objectives_of(study)
    exported: dict[str, Any] = {
        "study": study.study_name,
        "trial": trial.number,
        "storage": redact(storage_url),
        "seed": trial_seed(trial, spec),
        "split": "val",  # search-time values are measured on the validation split
    }
    if pick:
        exported["pick"] = pick
    exported["exported_at"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    exported["values"] = dict(zip(objectives.names, trial.values or []))
    exported_keys = (*metric_keys(export=True), *(trial.user_attrs.get("task_metric_names") or ()))
    exported["attrs"] = {
        k: trial.user_attrs[k]
        for k in exported_keys
        if trial.user_attrs.get(k) is not None and k not in exported["values"]
    }
    if CONSTRAINTS_ATTR in trial.user_attrs:
        exported["constraint_violations"] = [float(v) for v in trial.user_attrs[CONSTRAINTS_ATTR]]
    if trial.user_attrs.get(BASELINE_ATTR):
        exported["is_baseline"] = True  # its params leave out what the baseline does not do (no compression)
    if trial.user_attrs.get(TRAINING_ATTR) is not None:
        exported["training_trial"] = trial.user_attrs[TRAINING_ATTR]  # a variant: its training, with `seed`
    base = find_baseline(study.get_trials(deepcopy=False))
    if base is not None:
        exported["baseline"] = {
            "trial": base.number,
            "values": dict(zip(objectives.names, base.values)),
            "trade": trade_sentence(trial, base, objectives, against="the baseline"),
        }
    return {**spec, "params": dict(trial.params), "exported": exported}


def write(path: str | Path, config: dict) -> Path:
    path = Path(path)
    if path.parent != Path("") and not path.parent.is_dir():
        raise UsageError(f"--out {path}: directory {path.parent} does not exist")
    text = dumps(
        config,
        comments={
            "params": "Every searched dimension pinned to the exported trial's value.",
            "exported": "Where this config comes from and what it measured at search time (validation split).",
        },
    )
    header = (
        f"# Fixed config: trial {config['exported']['trial']} of study {config['exported']['study']!r}.\n"
        f"# A loadable study spec; `paretune train {path.name} --out DIR` retrains it from scratch.\n"
    )
    if not _same(tomllib.loads(text), _plain(config)):  # the writer must round-trip exactly
        raise RuntimeError("exported TOML does not read back equal to what was written")
    path.write_text(header + text)
    return path


def _plain(data: Any) -> Any:
    """What tomllib reads back for `data` (tuples → lists, Paths → strings, datetimes kept)."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, Path):
        return str(data)
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def check_overwrite(path: str | Path, config: dict) -> None:
    """Refuse to replace a file unless it is an export of the same trial of the same study
    in the same storage (re-exporting it refreshes it): a second study's export must not
    silently replace the first one's, nor a hand-written spec."""
    path = Path(path)
    if not path.exists():
        return
    try:
        previous = tomllib.loads(path.read_text()).get("exported")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        previous = None
    ours = config["exported"]
    if isinstance(previous, dict) and all(previous.get(k) == ours[k] for k in ("study", "trial", "storage")):
        return
    if isinstance(previous, dict) and "trial" in previous:
        held = f"trial {previous['trial']} of study {previous.get('study')!r} ({previous.get('storage')})"
    else:
        held = "a file `paretune export` did not write"
    raise UsageError(
        f"--out {path}: already holds {held}; choose another --out, or pass --force to overwrite it"
    )


def export(
    study: optuna.Study, trial: FrozenTrial, storage_url: str, out: str | Path, *, pick: str | None = None,
    force: bool = False,
) -> Path:
    """Write `trial` as a fixed config to `out`; an existing `out` from another study or
    trial is refused unless `force` (see `check_overwrite`)."""
    config = exported_config(study, trial, storage_url, pick=pick)
    check_params(config, task_kind_of(study))
    if not force:
        check_overwrite(out, config)
    return write(out, config)


def check_params(config: dict, task_kind: str, plugins=None) -> dict:
    """Rebuild the trial config from the pinned params; a mismatch with the spec is a UsageError."""
    spec = from_dict({k: v for k, v in config.items() if k not in ("params", "exported")})
    try:
        return suggest_params(optuna.trial.FixedTrial(dict(config.get("params") or {})), spec, task_kind, plugins,
                              baseline=bool((config.get("exported") or {}).get("is_baseline")))
    except (ValueError, KeyError) as exc:
        raise UsageError(f"the params table does not pin every dimension of the spec: {str(exc).splitlines()[0]}") from None
