"""Study spec: the TOML file that describes one search, validated with pydantic.

`load(path)` returns a `StudySpec` or raises `UsageError` with one line naming the
file and the field, e.g. ``digits.toml: space.pruning.ratio: `low <= high` must hold,
but got (low=0.9, high=0.1)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

import spaces
from search.core import conditions
from search.core.errors import UsageError
from spaces._config import FloatRange, IntRange, Strict  # noqa: F401 - re-exported for specs and tests

OBJECTIVE_NAMES = ("accuracy", "latency_ms", "energy_mj", "size_kb", "params", "macs")
BUILTIN_TASKS = ("digits", "wine", "breast_cancer", "nasbench201")
Direction = Literal["maximize", "minimize"]


class TaskSource(Strict):
    """`[task]` as a table: exactly one of `path` (a .npz or .csv file), `images` (an
    image folder) or `factory` (the user's function). Paths are relative to the spec."""

    path: Path | None = None
    label: str | None = None  # the label column of a CSV; a .npz holds X and y
    images: Path | None = None  # DIR/<class>/*.png|jpg|jpeg|bmp, or DIR/{train,val,test}/<class>/...
    image_size: tuple[int, int] | None = None  # [height, width]; default: the first image's size
    factory: str | None = None  # "my_task.py:make" or "package.module:make"; make(seed) -> search.Task

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSource":
        given = [k for k in ("path", "images", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, images, factory, but got {', '.join(given) or 'none'}")
        if self.label is not None and self.path is None:
            raise ValueError("label goes with path (a CSV file)")
        if self.image_size is not None and self.images is None:
            raise ValueError("image_size goes with images (an image folder)")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ValueError(f"image_size must be positive [height, width], but got {list(self.image_size)}")
        if self.factory is not None:
            check_reference(self.factory)
        return self


TaskFile = TaskSource  # the name older code uses


def check_reference(text: str) -> str:
    """`file.py:name` or `module.path:name`: the shape only; loading is search.tasks.plugins'."""
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name.replace(".", "_").isidentifier():
        raise ValueError(f"expected 'file.py:name' or 'module.path:name', but got {text!r}")
    return text


class ModelSource(Strict):
    """`[model]`: the user's model (its knobs are searched from `[space.model]`), and/or
    trained weights to start from (search.tasks.weights): a state dict or checkpoint file for
    the model built with the baseline's params, or `file.py:load` returning one."""

    factory: str | None = None  # build(params, input_shape, n_classes) -> torch.nn.Module
    weights: str | None = None  # "model.pt" or "file.py:load"; relative to the spec

    @field_validator("factory")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value)

    @model_validator(mode="after")
    def _something(self) -> "ModelSource":
        if self.factory is None and self.weights is None:
            raise ValueError("give factory (your model), weights (trained weights to start from), or both")
        return self


class Baseline(Strict):
    """`[baseline]`: the model as the user runs it today, trained (or loaded, with
    `[model] weights`) and measured first; every trade is stated against it. No
    pruning, no quantization, fp32 on the eager runtime; `params` fixes the model
    knobs and recipe (by their Optuna names), the rest takes the middle of each range
    and the first of each list of choices."""

    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSource(Strict):
    """`[train]`: an optional training loop of the user's own."""

    loop: str | None = None  # fit(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks)

    @field_validator("loop")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value)


class CustomDimensions(Strict):
    """`[space.custom]`: user dimensions following the spaces.Dimension protocol; each
    one's settings live in `[space.<its name>]`."""

    dimensions: list[str] = Field(default_factory=list)

    @field_validator("dimensions")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        return [check_reference(v) for v in value]


class _SpaceBase(Strict):
    # Extra sections belong to user dimensions ([space.custom]); from_dict refuses them
    # when none are named, search.tasks.plugins validates them against their configs.
    model_config = ConfigDict(extra="allow", frozen=True)

    def section(self, name: str) -> Any:
        """The config of dimension `name`: a model for built-ins, the raw table for user ones."""
        if name in type(self).model_fields:
            return getattr(self, name)
        return (self.model_extra or {}).get(name, {})


def _space_model() -> type[BaseModel]:
    """[space]: one section per registered dimension, from the dimension's own config."""
    fields: dict[str, Any] = {d.name: (d.config, d.config()) for d in spaces.builtins()}
    fields["custom"] = (CustomDimensions, CustomDimensions())
    return create_model("Space", __base__=_SpaceBase, __module__=__name__, **fields)


Space = _space_model()


class Budget(Strict):
    trials: int = Field(default=40, ge=1)
    concurrency: int = Field(default=2, ge=1)
    epochs: int = Field(default=15, ge=1, le=1000)
    max_failed_trials: int | None = Field(default=None, ge=0)
    max_retries: int = Field(default=1, ge=0)  # Ray FailureConfig(max_failures) for a dead worker
    # Stop dominated trials at rungs (search.driver.moasha): "auto" (the default) judges only
    # at rungs the study has shown to rank as the end does, and keeps a full-fidelity
    # bracket (search.driver.rung_trust); "moasha" trusts every rung; "none" trains every trial fully.
    early_stopping: Literal["none", "moasha", "auto"] = "auto"
    grace_epochs: int = Field(default=1, ge=1)  # the first rung; later ones are x reduction_factor
    reduction_factor: float = Field(default=3.0, ge=1.5, le=100)  # a rung keeps its top 1/reduction_factor
    # Before training (search.trial.feasibility): a trial whose untrained, compressed model
    # misses a hard constraint by more than this fraction of the bound on a timed metric
    # (latency, energy) is PRUNED; counted metrics (size, params, MACs) get 2%.
    infeasible_margin: float = Field(default=1.0, ge=0)
    # Stop after this many trials in one run were infeasible before training (default: trials).
    max_infeasible_trials: int | None = Field(default=None, ge=1)
    # Post-training variants per training (search.trial.variants): each is its own trial,
    # sharing the training's params and weights, with its own pruning, quantization
    # and runtime. 1: every trial trains its own model.
    variants_per_training: int = Field(default=1, ge=1, le=32)

    @model_validator(mode="after")
    def _rungs_below_epochs(self) -> "Budget":
        if self.early_stopping == "moasha" and self.grace_epochs >= self.epochs:
            raise ValueError(
                f"grace_epochs ({self.grace_epochs}) must be below epochs ({self.epochs}) for early_stopping = "
                "\"moasha\": no trial would reach a rung"
            )
        return self


class Resources(Strict):
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0)  # > 0: trials train on CUDA
    # DataLoader worker processes per trial; default: 0 for in-memory data, up to 2
    # (within cpus_per_trial) for data streamed from files (an image folder).
    loader_workers: int | None = Field(default=None, ge=0, le=64)
    # Pin measurement to nodes that carry this Ray custom resource (e.g. "edge").
    measure_on: str | None = None


class Measure(Strict):
    device: Literal["cpu", "cuda"] = "cpu"  # where latency and energy are measured
    threads: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    warmup: int = Field(default=20, ge=0)
    repeats: int = Field(default=100, ge=5)
    # Energy estimate where no counter exists: static power share of the core running
    # the inference, plus per-op and per-byte energies (Horowitz, ISSCC 2014).
    static_power_w: float = Field(default=5.0, ge=0)
    powercap_root: Path = Path("/sys/class/powercap")


class Tracking(Strict):
    # An MLflow tracking URI (http://HOST:5000, sqlite:///mlflow.db, a directory): one
    # parent run per study, one nested run per trial (search.results.tracking); the [mlflow] extra.
    mlflow: str | None = Field(default=None, min_length=1)
    experiment: str | None = Field(default=None, min_length=1)  # default: the study's name
    registered_model: str | None = Field(default=None, min_length=1)  # `paretune train` registers; default: the study's name


class Constraint(Strict):
    objective: str
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        bound = conditions.Bound.parse(text)  # ValueError in the spec's words
        return cls(objective=bound.objective, op=bound.op, bound=bound.bound)

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 is feasible, > 0 is by how much it is violated."""
        return conditions.violation(float(metrics[self.objective]), self.op, self.bound)

    def __str__(self) -> str:
        return f"{self.objective} {self.op} {self.bound:g}"


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    task: str | TaskSource = "digits"
    seed: int = 0
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {"accuracy": "maximize", "latency_ms": "minimize", "energy_mj": "minimize"}
    )
    constraints: list[Constraint] = Field(default_factory=list)
    budget: Budget = Budget()
    resources: Resources = Resources()
    measure: Measure = Measure()
    model: ModelSource | None = None
    baseline: Baseline = Baseline()
    train: TrainSource = TrainSource()
    space: Space = Space()
    tracking: Tracking = Tracking()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | TaskSource) -> str | TaskSource:
        if isinstance(value, str) and value not in BUILTIN_TASKS:
            raise ValueError(
                f"unknown task {value!r}; use one of {', '.join(BUILTIN_TASKS)} or a table with path, images or factory"
            )
        return value

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not value:
            raise ValueError("at least one objective is needed")
        unknown = [name for name in value if not _known_metric(name, info)]
        if unknown:
            raise ValueError(
                f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVE_NAMES)} "
                "(or a metric of a [task] factory's metrics())"
            )
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list):
            raise ValueError("constraints is a list of strings like 'latency_ms <= 2.0'")
        constraints = [Constraint.parse(v) if isinstance(v, str) else v for v in value]
        for constraint in constraints:
            name = constraint.objective if isinstance(constraint, Constraint) else dict(constraint).get("objective")
            if name is not None and not _known_metric(name, info):
                raise ValueError(f"unknown metric {name!r} in constraint; choose from {', '.join(OBJECTIVE_NAMES)}")
        return constraints

    @field_validator("budget")
    @classmethod
    def _early_stopping_needs(cls, value: Budget, info: ValidationInfo) -> Budget:
        if value.early_stopping != "moasha":
            return value
        if "accuracy" not in (info.data.get("objectives") or {}):
            raise ValueError('early_stopping = "moasha" compares validation accuracy at its rungs: add accuracy to [objectives]')
        if info.data.get("task") == "nasbench201":
            raise ValueError('early_stopping = "moasha" needs training epochs; a lookup-table task has none')
        return value

    @property
    def model_factory(self) -> str | None:
        """The user's model factory reference, if the spec names one."""
        return self.model.factory if self.model is not None else None

    @property
    def stopping(self) -> str:
        """The early stopping this search runs: the budget's, but "none" where "auto" has
        nothing to judge (no accuracy objective, a lookup-table task, trained weights that
        are only fine-tuned, no rung below `epochs`)."""
        mode = self.budget.early_stopping
        nothing_to_judge = (
            "accuracy" not in self.objectives
            or self.task == "nasbench201"
            or self.weights is not None
            or self.budget.grace_epochs >= self.budget.epochs
        )
        return "none" if mode == "auto" and nothing_to_judge else mode

    @property
    def weights(self) -> str | None:
        """The trained weights the search starts from, if any."""
        return self.model.weights if self.model is not None else None

    @property
    def task_metrics(self) -> list[str]:
        """Objective names that a user task's metrics() must provide."""
        return [n for n in self.objective_names if n not in OBJECTIVE_NAMES]

    @property
    def directions(self) -> list[str]:
        return list(self.objectives.values())

    @property
    def objective_names(self) -> list[str]:
        return list(self.objectives)


def _known_metric(name: str, info: ValidationInfo) -> bool:
    """A built-in metric, or (with a user task factory) any identifier its metrics() may return."""
    if name in OBJECTIVE_NAMES:
        return True
    task = info.data.get("task")
    return isinstance(task, TaskSource) and task.factory is not None and name.isidentifier()


def _field_path(loc: tuple) -> str:
    # pydantic puts union member names ("str", "TaskFile") and validator tags in loc.
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p[:1].isupper() or p in ("str", "function-after")))]
    return ".".join(parts) or "spec"


def _first_error(errors: list[dict]) -> dict:
    """The error to show: for a union (`task = "digits"` or a table) given a table,
    the table's own error rather than "should be a valid string"."""
    for error in errors:
        if error["type"] != "string_type" or "str" not in error["loc"]:
            return error
    return errors[0]


def _message(error: dict) -> str:
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if error["type"] == "extra_forbidden":
        msg = "unknown field"
    elif error["type"] == "literal_error":
        msg = f"unknown choice {error.get('input')!r}: {msg}"
    return msg


def is_file_reference(text: str) -> bool:
    """`my_model.py:build` (a file) rather than `package.module:build` (an import)."""
    where = text.rpartition(":")[0]
    return where.endswith(".py") or "/" in where or "\\" in where


def _anchored(text: str, base_dir: Path) -> str:
    where, _, name = text.rpartition(":")
    if not is_file_reference(text) or Path(where).is_absolute():
        return text
    return f"{(base_dir / where).as_posix()}:{name}"


def _anchor_paths(spec: StudySpec, base_dir: Path) -> StudySpec:
    """File paths in a spec are relative to the spec file; make them absolute."""
    update: dict[str, Any] = {}
    task = spec.task
    if isinstance(task, TaskSource):
        fields = {}
        for key in ("path", "images"):
            value = getattr(task, key)
            if value is not None and not value.is_absolute():
                fields[key] = base_dir / value
        if task.factory is not None:
            fields["factory"] = _anchored(task.factory, base_dir)
        update["task"] = task.model_copy(update=fields)
    if spec.model is not None:
        fields = {}
        if spec.model.factory is not None:
            fields["factory"] = _anchored(spec.model.factory, base_dir)
        if spec.model.weights is not None:
            weights = spec.model.weights
            fields["weights"] = _anchored(weights, base_dir) if ":" in weights else (
                weights if Path(weights).is_absolute() else (base_dir / weights).as_posix())
        update["model"] = spec.model.model_copy(update=fields)
    if spec.train.loop is not None:
        update["train"] = spec.train.model_copy(update={"loop": _anchored(spec.train.loop, base_dir)})
    custom = spec.space.custom
    if custom.dimensions:
        anchored = custom.model_copy(update={"dimensions": [_anchored(d, base_dir) for d in custom.dimensions]})
        update["space"] = spec.space.model_copy(update={"custom": anchored})
    return spec.model_copy(update=update)


def describe_error(error: dict, prefix: str = "") -> str:
    """`field.path: message` for one pydantic error, the path under `prefix`."""
    path = _field_path(error["loc"])
    path = prefix if path == "spec" and prefix else f"{prefix}.{path}" if prefix else path
    return f"{path}: {_message(error)}"


def from_dict(
    data: dict, *, source: str = "spec", base_dir: Path | None = None, extra_sections: tuple[str, ...] = ()
) -> StudySpec:
    """Validate a parsed spec. File paths (task files and folders, `file.py:name`
    references) are resolved against `base_dir`. `[space.<name>]` sections beyond the
    built-in dimensions must belong to user dimensions: named in
    `[space.custom] dimensions`, or passed in `extra_sections` (search.launch's
    `dimensions=`); search.tasks.plugins validates them against their configs."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {describe_error(_first_error(exc.errors()))}") from None
    extra = sorted(set(spec.space.model_extra or {}) - set(extra_sections))
    if extra and not spec.space.custom.dimensions:
        raise UsageError(f"{source}: space.{extra[0]}: unknown field")
    if base_dir is not None:
        # Absolute: trials read image folders and code files from other working directories.
        spec = _anchor_paths(spec, Path(base_dir).resolve())
    return spec


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such spec file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None


def load(path: str | Path) -> StudySpec:
    path = Path(path)
    data = read_toml(path)
    # An exported config carries pinned params and measured values beside the spec.
    data = {k: v for k, v in data.items() if k not in ("params", "exported")}
    return from_dict(data, source=str(path), base_dir=path.parent)


def to_toml_dict(spec: StudySpec) -> dict:
    """The spec as plain TOML-able data (constraints back to strings)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    data["constraints"] = [str(c) for c in spec.constraints]
    return data
