"""Study spec: the TOML file that describes one search, validated with pydantic.

`load(path)` returns a `StudySpec` or raises `UsageError` with one line naming the
file and the field, e.g. ``digits.toml: space.pruning.ratio: `low <= high` must hold,
but got (low=0.9, high=0.1)``.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search.errors import UsageError

OBJECTIVE_NAMES = ("accuracy", "latency_ms", "energy_mj", "size_kb", "params", "macs")
BUILTIN_TASKS = ("digits", "wine", "breast_cancer", "nasbench201")
Direction = Literal["maximize", "minimize"]


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(Strict):
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        # `ratio = [0.1, 0.9]` is shorthand for `ratio = {low = 0.1, high = 0.9}`.
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a range is [low, high], but got {list(value)}")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _check(self) -> "_Range":
        low, high = self.low, self.high
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"bounds must be finite, but got (low={low}, high={high})")
        if low > high:
            raise ValueError(f"`low <= high` must hold, but got (low={low}, high={high})")
        if self.log and low <= 0:
            raise ValueError(f"`low > 0` must hold for a log range, but got (low={low})")
        step = getattr(self, "step", None)
        if step is not None and step <= 0:
            raise ValueError(f"`step > 0` must hold, but got (step={step})")
        return self


class IntRange(_Range):
    low: int
    high: int
    step: int = 1


class FloatRange(_Range):
    low: float
    high: float
    step: float | None = None


def _choices(kind: Any, default: list) -> Any:
    return Field(default=default, min_length=1, json_schema_extra={"kind": str(kind)})


class ArchitectureSpace(Strict):
    families: list[Literal["mlp", "cnn", "mobilenet", "transformer"]] = _choices("family", ["mlp", "cnn", "mobilenet"])
    width: IntRange = IntRange(low=8, high=64, log=True)
    depth: IntRange = IntRange(low=1, high=3)
    kernels: list[Literal[3, 5]] = _choices("kernel", [3, 5])
    batch_norm: list[bool] = _choices("bool", [True, False])
    # Small transformer (patch embedding + encoder layers); used when "transformer" is a family.
    embed_dim: list[Literal[16, 32, 48, 64]] = _choices("dim", [16, 32, 64])
    heads: list[Literal[1, 2, 4]] = _choices("heads", [1, 2, 4])
    layers: IntRange = IntRange(low=1, high=3)


class PruningSpace(Strict):
    kinds: list[Literal["none", "unstructured", "structured", "gradual"]] = _choices(
        "kind", ["none", "unstructured", "structured"]
    )
    ratio: FloatRange = FloatRange(low=0.1, high=0.9)
    finetune_epochs: int = Field(default=2, ge=0, le=100)

    @field_validator("ratio")
    @classmethod
    def _ratio_in_unit(cls, value: FloatRange) -> FloatRange:
        if value.low < 0 or value.high > 0.95:
            raise ValueError(f"`0 <= ratio <= 0.95` must hold, but got (low={value.low}, high={value.high})")
        return value


class QuantizationSpace(Strict):
    modes: list[Literal["none", "dynamic", "static", "qat"]] = _choices("mode", ["none", "dynamic", "static", "qat"])
    calibration_batches: int = Field(default=8, ge=1, le=1000)
    qat_epochs: int = Field(default=2, ge=1, le=100)


class ScheduleSpace(Strict):
    optimizers: list[Literal["sgd", "adam", "adamw"]] = _choices("optimizer", ["sgd", "adam", "adamw"])
    lr: FloatRange = FloatRange(low=3e-4, high=3e-2, log=True)
    schedules: list[Literal["constant", "step", "exponential", "cosine", "onecycle", "cyclic"]] = _choices(
        "schedule", ["constant", "step", "exponential", "cosine", "onecycle", "cyclic"]
    )
    batch_sizes: list[int] = _choices("batch", [32, 64, 128])

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b <= 0 for b in value):
            raise ValueError(f"batch sizes must be > 0, but got {value}")
        return value


class RegularizationSpace(Strict):
    weight_decay: FloatRange = FloatRange(low=1e-6, high=1e-2, log=True)
    l1: list[bool] = _choices("bool", [False, True])
    l1_strength: FloatRange = FloatRange(low=1e-7, high=1e-4, log=True)
    dropout: FloatRange = FloatRange(low=0.0, high=0.5)
    label_smoothing: FloatRange = FloatRange(low=0.0, high=0.2)


def _within(value: FloatRange, low: float, high: float, name: str, *, open_low: bool = False) -> FloatRange:
    below = value.low <= low if open_low else value.low < low
    if below or value.high > high:
        sign = "<" if open_low else "<="
        raise ValueError(f"`{low} {sign} {name} <= {high}` must hold, but got (low={value.low}, high={value.high})")
    return value


class DistillationSpace(Strict):
    """Soft-target knowledge distillation from one teacher trained once per study.

    Loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE."""

    enabled: bool = False
    temperature: FloatRange = FloatRange(low=1.0, high=8.0)
    alpha: FloatRange = FloatRange(low=0.1, high=0.9)
    # Also match the batch similarity matrices of the penultimate features
    # (similarity-preserving distillation); [False] keeps logits only.
    features: list[bool] = _choices("bool", [False])
    feature_weight: FloatRange = FloatRange(low=0.1, high=10.0, log=True)
    # The teacher: a residual CNN for image tasks, an MLP for tabular ones ("auto").
    teacher_family: Literal["auto", "cnn", "mlp"] = "auto"
    teacher_width: int = Field(default=32, ge=4, le=512)
    teacher_depth: int = Field(default=2, ge=1, le=6)
    teacher_epochs: int = Field(default=15, ge=1, le=1000)

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: FloatRange) -> FloatRange:
        return _within(value, 0.0, 100.0, "temperature", open_low=True)

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit(cls, value: FloatRange) -> FloatRange:
        return _within(value, 0.0, 1.0, "alpha")


class AugmentationSpace(Strict):
    """Per-batch training augmentation; `strength` (searched) scales every op's
    magnitude: 0 is the identity, 1 the maxima below."""

    enabled: bool = False
    strength: FloatRange = FloatRange(low=0.0, high=1.0)
    image_ops: list[Literal["shift", "rotate", "scale", "noise"]] = ["shift", "rotate", "scale", "noise"]
    tabular_ops: list[Literal["noise", "jitter"]] = ["noise", "jitter"]
    max_shift: int = Field(default=2, ge=0, le=16)  # pixels (pad + random crop)
    max_rotation: float = Field(default=15.0, ge=0, le=180)  # degrees
    max_scale: float = Field(default=0.15, ge=0, lt=1)  # zoom in/out by up to this fraction
    noise_std: float = Field(default=0.1, ge=0, le=10)  # Gaussian noise (images in [0, 1]; tabular standardized)
    jitter_std: float = Field(default=0.1, ge=0, le=10)  # per-feature multiplicative jitter (tabular)

    @field_validator("strength")
    @classmethod
    def _strength_in_unit(cls, value: FloatRange) -> FloatRange:
        return _within(value, 0.0, 1.0, "strength")


class RuntimeSpace(Strict):
    """The inference runtime latency and energy are measured on."""

    enabled: bool = False
    runtimes: list[Literal["eager", "torchscript", "onnxruntime"]] = _choices(
        "runtime", ["eager", "torchscript", "onnxruntime"]
    )
    opset: int = Field(default=17, ge=13, le=21)  # ONNX opset for the onnxruntime export
    # Also run torch.jit.optimize_for_inference after freezing (float models).
    torchscript_optimize: bool = False


class Space(Strict):
    architecture: ArchitectureSpace = ArchitectureSpace()
    pruning: PruningSpace = PruningSpace()
    quantization: QuantizationSpace = QuantizationSpace()
    schedule: ScheduleSpace = ScheduleSpace()
    regularization: RegularizationSpace = RegularizationSpace()
    # Optional dimensions: off unless `enabled = true`.
    distillation: DistillationSpace = DistillationSpace()
    augmentation: AugmentationSpace = AugmentationSpace()
    runtime: RuntimeSpace = RuntimeSpace()


class TaskFile(Strict):
    path: Path
    label: str | None = None  # the label column of a CSV; a .npz holds X and y


class Budget(Strict):
    trials: int = Field(default=40, ge=1)
    concurrency: int = Field(default=2, ge=1)
    epochs: int = Field(default=15, ge=1, le=1000)
    max_failed_trials: int | None = Field(default=None, ge=0)
    max_retries: int = Field(default=1, ge=0)  # Ray FailureConfig(max_failures) for a dead worker


class Resources(Strict):
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0)
    # Pin measurement to nodes that carry this Ray custom resource (e.g. "edge").
    measure_on: str | None = None


class Measure(Strict):
    threads: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    warmup: int = Field(default=20, ge=0)
    repeats: int = Field(default=100, ge=5)
    # Energy estimate where no counter exists: static power share of the core running
    # the inference, plus per-op and per-byte energies (Horowitz, ISSCC 2014).
    static_power_w: float = Field(default=5.0, ge=0)
    powercap_root: Path = Path("/sys/class/powercap")


_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class Constraint(Strict):
    objective: str
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"a constraint reads like 'latency_ms <= 2.0', but got {text!r}")
        name, op, bound = match.groups()
        if name not in OBJECTIVE_NAMES:
            raise ValueError(f"unknown metric {name!r} in constraint; choose from {', '.join(OBJECTIVE_NAMES)}")
        try:
            value = float(bound)
        except ValueError:
            raise ValueError(f"constraint bound must be a number, but got {bound!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"constraint bound must be finite, but got {bound!r}")
        return cls(objective=name, op=op, bound=value)

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 is feasible, > 0 is by how much it is violated."""
        value = float(metrics[self.objective])
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.objective} {self.op} {self.bound:g}"


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    task: str | TaskFile = "digits"
    seed: int = 0
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {"accuracy": "maximize", "latency_ms": "minimize", "energy_mj": "minimize"}
    )
    constraints: list[Constraint] = Field(default_factory=list)
    budget: Budget = Budget()
    resources: Resources = Resources()
    measure: Measure = Measure()
    space: Space = Space()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | TaskFile) -> str | TaskFile:
        if isinstance(value, str) and value not in BUILTIN_TASKS:
            raise ValueError(f"unknown task {value!r}; use one of {', '.join(BUILTIN_TASKS)} or {{path = ...}}")
        return value

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one objective is needed")
        unknown = sorted(set(value) - set(OBJECTIVE_NAMES))
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVE_NAMES)}")
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("constraints is a list of strings like 'latency_ms <= 2.0'")
        return [Constraint.parse(v) if isinstance(v, str) else v for v in value]

    @property
    def directions(self) -> list[str]:
        return list(self.objectives.values())

    @property
    def objective_names(self) -> list[str]:
        return list(self.objectives)


def _field_path(loc: tuple) -> str:
    # pydantic puts union member names ("str", "TaskFile") and validator tags in loc.
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p[:1].isupper() or p in ("str", "function-after")))]
    return ".".join(parts) or "spec"


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


def from_dict(data: dict, *, source: str = "spec", base_dir: Path | None = None) -> StudySpec:
    """Validate a parsed spec; task paths are resolved against `base_dir`."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"{source}: {_field_path(first['loc'])}: {_message(first)}") from None
    if isinstance(spec.task, TaskFile) and base_dir is not None and not spec.task.path.is_absolute():
        spec = spec.model_copy(update={"task": spec.task.model_copy(update={"path": base_dir / spec.task.path})})
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
