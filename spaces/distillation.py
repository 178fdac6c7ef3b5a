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

import torch
import torch.nn.functional as F
from torch import nn

from search.spec import DistillationSpace
from spaces._suggest import suggest_choice, suggest_range

# The teacher's fixed training recipe (its epochs come from the spec).
TEACHER_RECIPE = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "schedule": "cosine",
    "batch_size": 64,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
}


def suggest(trial, bounds: DistillationSpace) -> dict:
    if not bounds.enabled:
        return {}
    params = {
        "kd_temperature": suggest_range(trial, "kd_temperature", bounds.temperature),
        "kd_alpha": suggest_range(trial, "kd_alpha", bounds.alpha),
    }
    if suggest_choice(trial, "kd_features", bounds.features):
        params["kd_feature_weight"] = suggest_range(trial, "kd_feature_weight", bounds.feature_weight)
    return params


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


def prepare_teacher(spec, task) -> dict | None:
    """Train the study's teacher (fixed architecture and recipe, seeded by the spec).

    Returns None when distillation is disabled, else a picklable dict: `params`
    (architecture), `state_dict` (CPU tensors), `val_accuracy`, `epochs`."""
    bounds = spec.space.distillation
    if not bounds.enabled:
        return None
    from objectives import accuracy
    from search.train import train
    from spaces import architecture

    params = teacher_params(bounds, task.kind)
    torch.manual_seed(spec.seed)
    model = architecture.build(params, task.input_shape, task.n_classes)
    train(model, task, {**params, **TEACHER_RECIPE}, bounds.teacher_epochs, seed=spec.seed)
    return {
        "params": params,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "val_accuracy": accuracy.measure(model, task.X_val, task.y_val).value,
        "epochs": bounds.teacher_epochs,
        "input_shape": tuple(task.input_shape),
        "n_classes": int(task.n_classes),
    }


def load_teacher(teacher: dict, task) -> nn.Module:
    """The teacher module from `prepare_teacher`'s dict: eval mode, frozen."""
    from spaces import architecture

    if tuple(teacher.get("input_shape", task.input_shape)) != tuple(task.input_shape) or teacher.get("n_classes", task.n_classes) != task.n_classes:
        raise ValueError("the teacher was trained for another task (input shape or classes differ)")
    model = architecture.build(teacher["params"], task.input_shape, task.n_classes)
    model.load_state_dict(teacher["state_dict"])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


_TRAINED_HERE: dict[tuple, dict] = {}


def _trained_here(spec, task) -> dict:
    """`prepare_teacher`, once per process for one task and distillation setting."""
    key = (task.name, tuple(task.input_shape), task.n_classes, len(task.X_train), spec.seed, spec.space.distillation.model_dump_json())
    if key not in _TRAINED_HERE:
        _TRAINED_HERE.clear()  # one study per process: keep one teacher, not a pile
        _TRAINED_HERE[key] = prepare_teacher(spec, task)
    return _TRAINED_HERE[key]


def teacher_for(params: dict, spec, task, teacher: dict | None = None) -> tuple[nn.Module | None, str | None]:
    """The teacher module a trial distills from, and where it came from.

    (None, None) when the trial does not distill. `teacher` is the dict the launcher
    prepared once per study; without one (a direct `run_pipeline` call, a retrain)
    the same teacher is trained here, once per process and spec."""
    if not wanted(params):
        return None, None
    if teacher is not None:
        return load_teacher(teacher, task), "study"
    if not spec.space.distillation.enabled:
        raise ValueError("params ask for distillation (kd_alpha) but space.distillation is not enabled")
    return load_teacher(_trained_here(spec, task), task), "process"


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

    def __init__(self, model: nn.Module):
        classifier = getattr(model, "classifier", None)
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

    def __init__(self, teacher: nn.Module, params: dict):
        self.teacher = teacher.eval()
        self.temperature = float(params["kd_temperature"])
        self.alpha = float(params["kd_alpha"])
        self.feature_weight = float(params.get("kd_feature_weight", 0.0))
        self._taps: list[_FeatureTap] = []

    def attach(self, student: nn.Module) -> "Distiller":
        if self.feature_weight > 0:
            self._student_tap, self._teacher_tap = _FeatureTap(student), _FeatureTap(self.teacher)
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
            teacher_logits = self.teacher(inputs)
        total = self.alpha * soft_target_loss(student_logits, teacher_logits, self.temperature) + (1 - self.alpha) * hard_loss
        if self._taps and self._student_tap.value is not None and self._teacher_tap.value is not None:
            total = total + self.feature_weight * similarity_loss(self._student_tap.value, self._teacher_tap.value)
        return total
