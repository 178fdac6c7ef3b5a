"""Knowledge-distillation dimension: students learn from a teacher's soft targets
(Hinton et al., 2015), optionally also from its penultimate features.

The teacher is trained once per study, before any trial, with a fixed recipe
(`prepare_teacher`): a residual CNN for image tasks, an MLP for tabular ones. Trials
get it as a plain dict (architecture params + state_dict), small enough for Ray's
object store, and rebuild it with `load_teacher`.

Per batch, with student logits s, teacher logits t, temperature T and weight alpha:

    loss = alpha * T² * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)

T² keeps the soft-target gradients on the scale of the hard-label ones. With
`features`, a similarity-preserving term (Tung & Mori, 2019) is added: the batch's
cosine-similarity matrices of the student's and teacher's penultimate features (the
classifier inputs) are matched, which needs no projection between the two widths.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from pydantic import Field, field_validator

from spaces import architecture
from spaces._config import FloatRange, Strict, choices, suggest_choice, suggest_range, within
from spaces._layers import classifier_of
from spaces._lazy import F, nn, torch
from spaces.dimension import Dimension, Fact, StudyContext, SuggestContext, TrialContext, register


class DistillationSpace(Strict):
    """Soft-target knowledge distillation from one teacher trained once per study.

    Loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE."""

    enabled: bool = False
    temperature: FloatRange = FloatRange(low=1.0, high=8.0)
    alpha: FloatRange = FloatRange(low=0.1, high=0.9)
    # Also match the batch similarity matrices of the penultimate features
    # (similarity-preserving distillation); [False] keeps logits only.
    features: list[bool] = choices("bool", [False])
    feature_weight: FloatRange = FloatRange(low=0.1, high=10.0, log=True)
    # The teacher: a residual CNN for image tasks, an MLP for tabular ones ("auto").
    teacher_family: Literal["auto", "cnn", "mlp"] = "auto"
    teacher_width: int = Field(default=32, ge=4, le=512)
    teacher_depth: int = Field(default=2, ge=1, le=6)
    teacher_epochs: int = Field(default=15, ge=1, le=1000)

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: FloatRange) -> FloatRange:
        return within(value, 0.0, 100.0, "temperature", open_low=True)

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit(cls, value: FloatRange) -> FloatRange:
        return within(value, 0.0, 1.0, "alpha")

# The teacher's fixed training recipe (its epochs come from the spec).
TEACHER_RECIPE = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "schedule": "cosine",
    "batch_size": 64,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
}


def wanted(params: dict) -> bool:
    return "kd_alpha" in params


# --- the teacher --------------------------------------------------------------------------


def teacher_params(bounds: DistillationSpace, task_kind: str) -> dict:
    family = bounds.teacher_family
    if family == "auto":
        family = "cnn" if task_kind == "image" else "mlp"
    if family == "cnn" and task_kind != "image":
        raise ValueError(f"space.distillation.teacher_family: a cnn teacher needs image data, but the task is {task_kind}")
    params = {"family": family, "width": bounds.teacher_width, "depth": bounds.teacher_depth, "batch_norm": True}
    if family == "cnn":
        params["kernel"] = 3
    return params


def prepare_teacher(spec, task, train) -> dict | None:
    """Train the study's teacher (fixed architecture and recipe, seeded by the spec) with
    `train(model, params, epochs, seed)`.

    Returns None when distillation is disabled, else a picklable dict: `params`
    (architecture), `state_dict` (CPU tensors), `val_accuracy`, `epochs`."""
    bounds = spec.space.distillation
    if not bounds.enabled:
        return None
    params = teacher_params(bounds, task.kind)
    torch.manual_seed(spec.seed)
    model = architecture.build(params, task.input_shape, task.n_classes)
    val_accuracy = train(model, {**params, **TEACHER_RECIPE}, bounds.teacher_epochs, spec.seed)
    return {
        "params": params,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "val_accuracy": val_accuracy,
        "epochs": bounds.teacher_epochs,
        "input_shape": tuple(task.input_shape),
        "n_classes": int(task.n_classes),
    }


def load_teacher(teacher: dict, task) -> nn.Module:
    """The teacher module from `prepare_teacher`'s dict: eval mode, frozen."""
    if tuple(teacher.get("input_shape", task.input_shape)) != tuple(task.input_shape) or teacher.get("n_classes", task.n_classes) != task.n_classes:
        raise ValueError("the teacher was trained for another task (input shape or classes differ)")
    model = architecture.build(teacher["params"], task.input_shape, task.n_classes)
    model.load_state_dict(teacher["state_dict"])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


_TRAINED_HERE: dict[tuple, dict] = {}


def _trained_here(spec, task, study: StudyContext) -> dict:
    """`prepare_teacher`, once per process for one task and distillation setting."""
    key = (task.name, tuple(task.input_shape), task.n_classes, len(task.train), spec.seed, spec.space.distillation.model_dump_json())
    if key not in _TRAINED_HERE:
        _TRAINED_HERE.clear()  # one study per process: keep one teacher, not a pile
        _TRAINED_HERE[key] = prepare_teacher(spec, task, study.train)
    return _TRAINED_HERE[key]


def teacher_for(params: dict, ctx: TrialContext) -> tuple[nn.Module | None, str | None]:
    """The teacher module a trial distills from, and where it came from.

    (None, None) when the trial does not distill. A search from trained weights
    distills from the loaded model ("weights"). Otherwise the launcher prepares the teacher
    once per study (`ctx.shared["distillation"]`); without one (a direct pipeline call,
    a retrain) the same teacher is trained here, once per process and spec."""
    if not wanted(params):
        return None, None
    if ctx.loaded_model is not None:  # a search from trained weights distills from them
        return ctx.loaded_model, "weights"
    teacher = ctx.shared.get(Distillation.name)
    if teacher is not None:
        return load_teacher(teacher, ctx.task), "study"
    if not ctx.spec.space.distillation.enabled:
        raise ValueError("params ask for distillation (kd_alpha) but space.distillation is not enabled")
    return load_teacher(_trained_here(ctx.spec, ctx.task, ctx.study), ctx.task), "process"


# --- the loss -------------------------------------------------------------------------------


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def similarity_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving distillation: squared Frobenius distance of the batch's
    row-normalized feature Gram matrices, divided by batch²."""
    s = F.normalize(student_features.flatten(1), dim=1)
    t = F.normalize(teacher_features.flatten(1), dim=1)
    batch = s.shape[0]
    return (s @ s.T - t @ t.T).pow(2).sum() / (batch * batch)


class _FeatureTap:
    """Keeps the input of a model's classifier (its penultimate features) per forward."""

    def __init__(self, model: nn.Module, n_classes: int | None = None):
        classifier = classifier_of(model, n_classes)
        self.value: torch.Tensor | None = None
        self.handle = classifier.register_forward_pre_hook(self._keep) if isinstance(classifier, nn.Module) else None

    def _keep(self, module, inputs) -> None:
        self.value = inputs[0]

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class Distiller:
    """Adds the teacher's terms to a student's loss, batch by batch. Use as a context
    manager around training: `attach(student)` hooks the feature taps, exiting
    removes them (they never stay on a deployed model)."""

    def __init__(self, teacher: nn.Module, params: dict, n_classes: int | None = None):
        self.teacher = teacher.eval()
        self.n_classes = n_classes
        self.temperature = float(params["kd_temperature"])
        self.alpha = float(params["kd_alpha"])
        self.feature_weight = float(params.get("kd_feature_weight", 0.0))
        self._taps: list[_FeatureTap] = []

    def attach(self, student: nn.Module) -> "Distiller":
        if self.feature_weight > 0:
            self._student_tap, self._teacher_tap = _FeatureTap(student, self.n_classes), _FeatureTap(self.teacher, self.n_classes)
            self._taps = [self._student_tap, self._teacher_tap]
        return self

    def detach(self) -> None:
        for tap in self._taps:
            tap.close()
        self._taps = []

    def __enter__(self) -> "Distiller":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def loss(self, student_logits: torch.Tensor, inputs: torch.Tensor, hard_loss: torch.Tensor) -> torch.Tensor:
        """`hard_loss` is the student's usual loss on the labels (CE, label smoothing)."""
        with torch.no_grad():
            teacher_logits = self.teacher.to(inputs.device)(inputs)
        total = self.alpha * soft_target_loss(student_logits, teacher_logits, self.temperature) + (1 - self.alpha) * hard_loss
        if self._taps and self._student_tap.value is not None and self._teacher_tap.value is not None:
            total = total + self.feature_weight * similarity_loss(self._student_tap.value, self._teacher_tap.value)
        return total


class Distillation(Dimension):
    name = "distillation"
    config = DistillationSpace
    order = 60
    in_baseline = False
    facts = {"teacher_source": Fact(export=False)}  # "study", "process" or "weights": where the teacher came from

    def suggest(self, trial, config: DistillationSpace, ctx: SuggestContext) -> dict:
        if not config.enabled:
            return {}
        params = {
            "kd_temperature": suggest_range(trial, "kd_temperature", config.temperature),
            "kd_alpha": suggest_range(trial, "kd_alpha", config.alpha),
        }
        if suggest_choice(trial, "kd_features", config.features):
            params["kd_feature_weight"] = suggest_range(trial, "kd_feature_weight", config.feature_weight)
        return params

    def prepare_study(self, spec, task, ctx: StudyContext) -> dict | None:
        if spec.weights is not None:
            return None  # the model loaded from the weights is the teacher (`teacher_for`)
        return prepare_teacher(spec, task, ctx.train)

    def record(self, model: nn.Module, runner: nn.Module, params: dict, ctx: TrialContext) -> dict:
        return {"teacher_source": ctx.info.get("teacher_source")}

    def needs_training(self, config: DistillationSpace) -> bool:
        return config.enabled

    def study_work(self, config: DistillationSpace) -> str:
        return f"training the distillation teacher once ({config.teacher_epochs} epochs)" if config.enabled else ""

    def prepare(self, model: nn.Module, params: dict, ctx: TrialContext) -> None:
        teacher, source = teacher_for(params, ctx)
        if teacher is None:
            return
        ctx.info["teacher_source"] = source  # "study": prepared once by the launcher; "process": trained here
        distiller = Distiller(teacher, params, ctx.task.n_classes)

        @contextlib.contextmanager
        def attached(student: nn.Module):
            # Each training run (main, fine-tune, QAT) taps its own student model.
            distiller.attach(student)
            try:
                yield
            finally:
                distiller.detach()

        ctx.training.attachments.append(attached)
        ctx.training.loss_wrappers.append(lambda loss, model, inputs, logits, targets: distiller.loss(logits, inputs, loss))


register(Distillation)
