"""The one shape every search dimension has, built-in or the user's own.

A dimension is a class with a config model (its `[space.<name>]` spec section), a
`suggest` that draws its params on an Optuna trial, and hooks that give those params
a real effect at one point of the trial pipeline:

```
suggest (every dimension, registry order)
  -> apply(None, params, ctx)      stage "build": return the model (architecture)
  -> prepare(model, params, ctx)   before training: add to ctx.training (optimizer,
                                   loss terms, batch transforms, epoch hooks)
  -> train (the trial's loop, with ctx.training)
  -> apply(model, params, ctx)     stage "compress": pruning, then quantization
  -> apply(model, params, ctx)     stage "deploy": bring the model to its runtime
```

`prepare_study(spec, task, ctx)` runs once per launch in the driver (distillation
trains its teacher there); what it returns reaches every trial as
`ctx.shared[name]`. `preflight(model, config, ctx)` dry-runs each enabled choice on
one real model before anything starts, so a choice that cannot work is refused
up front instead of failing trials.

Besides the pipeline, a dimension says what it contributes around it (every hook has
a default that does nothing, so a dimension overrides only what it needs):

- `untrained_params(params)`: its params of the stand-in measured before training
  (search.trial.feasibility): e.g. QAT measured as static int8.
- `facts` and `record(model, runner, params, ctx) -> dict`: the deployment facts it
  records with every trial (`quantized`, `runtime`, ...), merged into the trial's
  metrics under those names; `facts` says how each is kept (exported, on the card,
  in the pre-training measurement).
- `preflight_models(config, ctx)`: the fixed params of each model the preflight
  builds (a build dimension with several model families: one per family).
- `calibration_batches(config)`: how many training batches it calibrates on
  (`ctx.calibration()` draws the most any dimension asks for).
- `recipe(params, hooks)`: how a fixed recipe's params shape the training hooks
  (teachers, tests: search.trial.training.recipe_hooks).
- `ship(runner, out_dir)`, `load_shipped(path, fmt, threads)`, `trace_options(params,
  config)`, `usage(fmt)`: how `paretune train` saves, loads back and traces what it
  deploys, and how a user loads a format it ships (the model card's snippet).
- `model_card(params, spec)`: what the model card says about the model it builds.
- `needs_training(config)` and `study_work(config)`: whether the section asks for
  training a lookup-table task cannot give, and what `prepare_study` does, in words.

A user dimension subclasses `Dimension` the same way and is named in a spec
(`[space.custom] dimensions = ["my_dims.py:GradClip"]`, its settings in
`[space.<name>]`) or passed to `search.launch(..., dimensions=[GradClip()])`:

```python
from spaces import Dimension, FloatRange, Strict, suggest_range
import torch

class GradClipSpace(Strict):
    max_norm: FloatRange = FloatRange(low=0.1, high=10.0, log=True)

class GradClip(Dimension):
    name = "grad_clip"
    config = GradClipSpace

    def suggest(self, trial, config, ctx):
        return {"clip_norm": suggest_range(trial, "clip_norm", config.max_norm)}

    def prepare(self, model, params, ctx):
        norm = params["clip_norm"]
        ctx.training.backward_hooks.append(
            lambda model: torch.nn.utils.clip_grad_norm_(model.parameters(), norm))
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from spaces._config import Strict
from spaces._lazy import nn, torch

STAGES = ("build", "compress", "deploy")


@dataclass
class SuggestContext:
    """What `suggest` may condition on."""

    task_kind: str  # "image" or "tabular"
    params: dict = field(default_factory=dict)  # drawn so far by earlier dimensions
    user_model: bool = False  # the model comes from the user's factory ([model] / model=)


@dataclass
class TrainingHooks:
    """How the trial's params shape training. Dimensions fill it in `prepare`; the
    training loop (paretune's own or the user's `[train] loop`) calls its methods.

    Per batch: `inputs = hooks.transform(x)`, `logits = model(inputs)`,
    `loss = hooks.loss(model, inputs, logits, y)`, `loss.backward()`,
    `hooks.after_backward(model)`, optimizer and scheduler step; after each epoch
    `hooks.end_epoch(epoch)`. `hooks.pause()` between batches lets a latency
    measurement on the same node run undisturbed."""

    batch_size: int = 64
    criterion: nn.Module = field(default_factory=lambda: nn.CrossEntropyLoss())
    # (model, lr_scale) -> optimizer; (optimizer, total_steps, constant) -> scheduler
    make_optimizer: Callable[[nn.Module, float], torch.optim.Optimizer] | None = None
    make_scheduler: Callable[[torch.optim.Optimizer, int, bool], Any] | None = None
    transforms: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    # (loss, model, inputs, logits, targets) -> loss: e.g. distillation's soft targets
    loss_wrappers: list[Callable[..., torch.Tensor]] = field(default_factory=list)
    # model -> penalty added to the loss: e.g. L1 on the weights
    penalties: list[Callable[[nn.Module], torch.Tensor | float]] = field(default_factory=list)
    backward_hooks: list[Callable[[nn.Module], Any]] = field(default_factory=list)  # after loss.backward()
    epoch_hooks: list[Callable[[int], Any]] = field(default_factory=list)  # after each epoch
    # model -> context manager held around training (e.g. feature taps)
    attachments: list[Callable[[nn.Module], contextlib.AbstractContextManager]] = field(default_factory=list)
    pause: Callable[[], None] = lambda: None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def transform(self, inputs: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            inputs = transform(inputs)
        return inputs

    def loss(self, model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(logits, targets)
        for wrap in self.loss_wrappers:
            loss = wrap(loss, model, inputs, logits, targets)
        for penalty in self.penalties:
            loss = loss + penalty(model)
        return loss

    def after_backward(self, model: nn.Module) -> None:
        for hook in self.backward_hooks:
            hook(model)

    def end_epoch(self, epoch: int) -> None:
        for hook in self.epoch_hooks:
            hook(epoch)

    def accuracy(self, model: nn.Module, batches) -> float:
        """Top-1 accuracy of `model` on an iterable of (inputs, labels) batches."""
        from objectives import accuracy  # deferred: objectives import torch, which a spec parse never needs

        return accuracy.measure(model, batches).value

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for attach in self.attachments:
                stack.enter_context(attach(model))
            yield


@dataclass
class StudyContext:
    """What `prepare_study` gets, once per launch in the driver: `train(model, params,
    epochs, seed) -> val_accuracy` trains a model in place with a fixed recipe in
    `params` (optimizer, lr, schedule, batch_size, weight_decay, label_smoothing)."""

    spec: Any
    task: Any
    train: Callable[..., nn.Module]


@dataclass
class TrialContext:
    """What `prepare` and `apply` see during one trial.

    `study` is the launch's StudyContext (a dimension whose `prepare_study` result is
    missing from `shared`, e.g. in a retrain, can compute it with it).

    `fit(model, epochs, lr_scale=0.1, constant_lr=True, seed_offset=1)` runs the
    trial's training loop (fine-tunes after pruning, QAT); `calibration()` returns a
    few training batches (CPU tensors); `example` is two training inputs (CPU);
    `info` collects what apply steps record (MACs, parameter counts); `float_model`
    is the model before quantization once the compress stage has run."""

    spec: Any  # search.core.spec.StudySpec
    task: Any  # search.Task
    params: dict
    seed: int
    example: torch.Tensor
    fit: Callable[..., nn.Module]
    calibration: Callable[[], list[torch.Tensor]]
    study: "StudyContext"
    user_model: Callable[..., nn.Module] | None = None  # the user's model factory, if any
    training: TrainingHooks = field(default_factory=TrainingHooks)
    shared: dict = field(default_factory=dict)  # prepare_study results, by dimension name
    info: dict = field(default_factory=dict)
    float_model: nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # The model as loaded from `[model] weights`, frozen: what a search from trained
    # weights starts from (distillation's teacher then).
    loaded_model: nn.Module | None = None

    def settings(self, dimension: "Dimension") -> Any:
        """The dimension's validated config section of this spec."""
        return self.spec.space.section(dimension.name)


@dataclass(frozen=True)
class Check:
    """One preflight result: did `choice` of `dimension` work on the model?"""

    dimension: str
    choice: str
    ok: bool
    detail: str = ""  # why not, or what it did ("12 int8 modules")
    key: str = ""  # the spec key that offers the choice, e.g. "space.quantization.modes"
    # What the key's list becomes when dropping unsupported choices leaves it empty
    # (the runtime: "eager"); "" refuses instead. The launch says when it is used.
    fallback: str = ""


@dataclass(frozen=True)
class Fact:
    """How a fact a dimension records (`Dimension.facts`) is kept with a trial's
    metrics: `export` copies it into an exported config's attrs, `card` shows it in
    the model card, `untrained` keeps it in the pre-training measurement too, `ran_on`
    says it names what the deployed model ran on (the model card's latency table
    column; one fact of the registry at most)."""

    export: bool = True
    card: bool = False
    untrained: bool = False
    ran_on: bool = False


class Dimension:
    """A search dimension. Subclass it, set `name` and `config`, override what you need.

    - `suggest(trial, config, ctx) -> dict`: called for every trial, in registry order,
      define-by-run; return the params this dimension adds (`{}` when disabled). The
      values must be plain (numbers, strings, booleans): they are stored in Optuna.
    - `prepare(model, params, ctx)`: after the build stage, before training; add to
      `ctx.training`.
    - `apply(model, params, ctx) -> nn.Module`: at `stage` ("build": `model` is None,
      return a new model; "compress"/"deploy": return the transformed model).
    - `prepare_study(spec, task, ctx) -> object`: once per launch, in the driver.
    - `preflight(model, config, ctx) -> list[Check]`: dry-run every enabled choice on a
      built (untrained) model.
    - `describe(params, config) -> str`: a few words for tables ("cnn", "structured 0.42").
    - `untrained_params(params) -> dict`: the params measured before training (see
      the module docstring for this and the hooks below).
    - `record(model, runner, params, ctx) -> dict`: facts named in `facts`, after the
      deploy stage (`model`: the deployable torch model; `runner`: it on its runtime).
    - `preflight_models(config, ctx) -> list[dict]`: fixed params of each model the
      preflight builds ([]: one model, the space's defaults).
    - `calibration_batches(config) -> int`: training batches it calibrates on.
    - `recipe(params, hooks)`: fill `hooks` from a fixed recipe's params.
    - `ship(runner, out_dir) -> dict | None`: save `runner` where it is this
      dimension's own artifact in `out_dir` ({"format", "file"}).
    - `load_shipped(path, fmt, threads) -> (runner, runtime) | None`: load an artifact
      of a format `ship` wrote.
    - `trace_options(params, config) -> dict`: options of the shipped TorchScript trace.
    - `model_card(params, spec) -> dict`: the card's model section (build dimensions).
    - `needs_training(config) -> bool`, `study_work(config) -> str`.

    Class attributes: `name` (the spec section and registry key), `config` (a `Strict`
    pydantic model; its defaults are the section's defaults), `stage` (None when the
    dimension only acts through `prepare`), `order` (registry position; built-ins use
    10..80, user dimensions default to 100), `aliases` (param name -> other Optuna
    names the same choice may be drawn under, e.g. per-family choice sets).
    """

    name: ClassVar[str] = ""
    config: ClassVar[type[Strict]] = Strict
    stage: ClassVar[str | None] = None
    order: ClassVar[int] = 100
    aliases: ClassVar[dict[str, tuple[str, ...]]] = {}
    in_baseline: ClassVar[bool] = True
    after_training: ClassVar[bool] = False
    facts: ClassVar[dict[str, Fact]] = {}

    def variant_conflict(self, config) -> str | None:
        """Why variants of one training cannot differ in this dimension under `config`
        (a choice of it that acts during training), or None."""
        return None

    def active(self, ctx: SuggestContext) -> bool:
        """Whether this dimension takes part in a search with this context."""
        return True

    def suggest(self, trial, config, ctx: SuggestContext) -> dict:
        return {}

    def prepare(self, model: nn.Module, params: dict, ctx: TrialContext) -> None:
        return None

    def apply(self, model: nn.Module | None, params: dict, ctx: TrialContext) -> nn.Module | None:
        return model

    def prepare_study(self, spec, task, ctx: StudyContext) -> Any:
        return None

    def preflight(self, model: nn.Module, config, ctx: TrialContext) -> list[Check]:
        return []

    def describe(self, params: dict, config) -> str:
        return ""

    def untrained_params(self, params: dict) -> dict:
        return params

    def record(self, model: nn.Module, runner: nn.Module, params: dict, ctx: TrialContext) -> dict:
        return {}

    def preflight_models(self, config, ctx: SuggestContext) -> list[dict]:
        return []

    def calibration_batches(self, config) -> int:
        return 0

    def recipe(self, params: dict, hooks: TrainingHooks) -> None:
        return None

    def ship(self, runner: nn.Module, out_dir) -> dict | None:
        return None

    def load_shipped(self, path, fmt: str, threads: int = 1) -> tuple[nn.Module, str] | None:
        return None

    def usage(self, fmt: str) -> tuple[str, str, list[str]] | None:
        return None

    def trace_options(self, params: dict, config) -> dict:
        return {}

    def model_card(self, params: dict, spec) -> dict:
        return {}

    def needs_training(self, config) -> bool:
        return False

    def study_work(self, config) -> str:
        return ""

    def value(self, params: dict, name: str, default: Any = None) -> Any:
        """`params[name]`, also where it was drawn under one of its aliases."""
        for key in (name, *self.aliases.get(name, ())):
            if key in params:
                return params[key]
        return default

    def __repr__(self) -> str:
        return f"<dimension {self.name}>"


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most ~300 characters: a reason for one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


_REGISTRY: dict[str, Dimension] = {}


def register(dimension: Dimension | type[Dimension]) -> Dimension:
    """Add a built-in dimension (an instance or a class with a no-argument constructor)."""
    instance = dimension() if isinstance(dimension, type) else dimension
    check_dimension(instance)
    _REGISTRY[instance.name] = instance
    return instance


def check_dimension(dimension: Any) -> Dimension:
    """A ValueError naming what is wrong when `dimension` does not follow the protocol."""
    if not isinstance(dimension, Dimension):
        raise ValueError(f"{dimension!r} is not a spaces.Dimension (subclass it)")
    if not dimension.name or not dimension.name.isidentifier():
        raise ValueError(f"{type(dimension).__name__}.name must be an identifier, but got {dimension.name!r}")
    if dimension.stage not in (None, *STAGES):
        raise ValueError(f"{type(dimension).__name__}.stage must be one of {', '.join(STAGES)} or None, but got {dimension.stage!r}")
    if not (isinstance(dimension.config, type) and issubclass(dimension.config, Strict)):
        raise ValueError(f"{type(dimension).__name__}.config must be a spaces.Strict model")
    if not isinstance(dimension.facts, dict) or not all(isinstance(f, Fact) for f in dimension.facts.values()):
        raise ValueError(f"{type(dimension).__name__}.facts must map each recorded name to a spaces.Fact")
    return dimension


def builtins() -> list[Dimension]:
    """The registered built-in dimensions, in pipeline order."""
    return sorted(_REGISTRY.values(), key=lambda d: d.order)
