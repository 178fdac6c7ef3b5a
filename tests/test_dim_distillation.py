"""The distillation dimension: its loss, the teacher prepared once, what a trial records."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import spaces
from search.core.spec import from_dict
from spaces import architecture, distillation
from tests.conftest import acc, tiny_spec_dict
from tests.dims import CNN8, MLP8, RECIPE_ADAMW, compress_trial, digits, teacher_train, wine  # noqa: F401 - fixtures


def test_distillation_loss_is_the_documented_formula():
    torch.manual_seed(0)
    student, teacher, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    T, alpha = 3.0, 0.3
    hard = nn.functional.cross_entropy(student, y)
    p_t = torch.softmax(teacher / T, dim=1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / T, dim=1))).sum(dim=1).mean()
    distiller = distillation.Distiller(nn.Identity(), {"kd_temperature": T, "kd_alpha": alpha})
    # The Identity "teacher" returns its input: pass the teacher logits as the inputs.
    got = distiller.loss(student, teacher, hard)
    assert float(got) == pytest.approx(float(alpha * T * T * kl + (1 - alpha) * hard), rel=1e-5)
    assert float(distillation.soft_target_loss(teacher, teacher, T)) == pytest.approx(0.0, abs=1e-6)


def test_student_gradients_depend_on_the_teacher(digits):
    x, y = torch.from_numpy(digits.train.X[:32]), torch.from_numpy(digits.train.y[:32])
    params = {"kd_temperature": 4.0, "kd_alpha": 0.7}

    def grads(teacher_seed):
        torch.manual_seed(0)
        student = architecture.build(MLP8, digits.input_shape, 10)
        torch.manual_seed(teacher_seed)
        teacher = architecture.build(CNN8, digits.input_shape, 10).eval()
        logits = student(x)
        loss = distillation.Distiller(teacher, params).loss(logits, x, nn.functional.cross_entropy(logits, y))
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.flatten() for p in student.parameters()])

    loss_a, grad_a = grads(1)
    loss_b, grad_b = grads(2)
    loss_a2, grad_a2 = grads(1)
    assert loss_a == pytest.approx(loss_a2) and torch.allclose(grad_a, grad_a2)
    assert abs(loss_a - loss_b) > 1e-4 and not torch.allclose(grad_a, grad_b, atol=1e-6)


def test_feature_distillation_adds_a_term_and_leaves_no_hooks(digits):
    x = torch.from_numpy(digits.train.X[:16])
    torch.manual_seed(0)
    student = architecture.build(MLP8, digits.input_shape, 10)
    teacher = architecture.build(CNN8, digits.input_shape, 10).eval()
    base = {"kd_temperature": 2.0, "kd_alpha": 0.5}
    hard = torch.tensor(1.0)
    plain = distillation.Distiller(teacher, base).attach(student)
    with_features = distillation.Distiller(teacher, {**base, "kd_feature_weight": 5.0}).attach(student)
    logits = student(x)
    difference = float((with_features.loss(logits, x, hard) - plain.loss(logits, x, hard)).detach())
    expected = 5.0 * float(distillation.similarity_loss(student.features(x), teacher.pool(teacher.blocks(teacher.stem(x)))))
    assert difference == pytest.approx(expected, rel=1e-4) and difference > 0
    with_features.detach()
    assert not student.classifier._forward_pre_hooks and not teacher.classifier._forward_pre_hooks
    same = torch.randn(8, 5)
    assert float(distillation.similarity_loss(same, 3 * same)) == pytest.approx(0.0, abs=1e-6)


def test_prepare_teacher_once_and_ship_as_state_dict(digits):
    assert distillation.prepare_teacher(from_dict(tiny_spec_dict()), digits, teacher_train(digits)) is None
    spec = from_dict(tiny_spec_dict(space={"distillation": {"enabled": True, "teacher_width": 8, "teacher_epochs": 3}}))
    teacher = distillation.prepare_teacher(spec, digits, teacher_train(digits))
    assert teacher["params"]["family"] == "cnn" and teacher["val_accuracy"] > 0.8
    shipped = pickle.loads(pickle.dumps(teacher))  # what Ray's object store does
    model = distillation.load_teacher(shipped, digits)
    assert not any(p.requires_grad for p in model.parameters())
    assert acc(model, digits) == pytest.approx(teacher["val_accuracy"])


def test_tabular_teacher_is_an_mlp(wine):
    spec = from_dict(tiny_spec_dict(task="wine", space={"distillation": {"enabled": True, "teacher_epochs": 2}}))
    assert distillation.teacher_params(spec.space.distillation, "tabular")["family"] == "mlp"
    with pytest.raises(ValueError, match="image data"):
        distillation.teacher_params(spec.space.distillation.model_copy(update={"teacher_family": "cnn"}), "tabular")


def test_distilled_training_differs_by_teacher_and_trial_records_it(digits):
    spec = from_dict(tiny_spec_dict(space={"distillation": {"enabled": True, "teacher_width": 8, "teacher_epochs": 2}}))
    teacher = distillation.prepare_teacher(spec, digits, teacher_train(digits))
    params = {**MLP8, **RECIPE_ADAMW, "prune_kind": "none", "quant_mode": "none", "kd_temperature": 4.0, "kd_alpha": 0.9}
    distilled, _, info = compress_trial(params, digits, spec, seed=0, teacher=teacher)
    assert info["teacher_source"] == "study"
    other = {**teacher, "state_dict": {k: (v + 0.5 if v.is_floating_point() else v) for k, v in teacher["state_dict"].items()}}
    moved, _, _ = compress_trial(params, digits, spec, seed=0, teacher=other)
    plain, _, _ = compress_trial({k: v for k, v in params.items() if not k.startswith("kd_")}, digits, spec, seed=0)
    x = torch.from_numpy(digits.val.X)
    assert not torch.allclose(distilled(x), moved(x)) and not torch.allclose(distilled(x), plain(x))


# --- hooks ------------------------------------------------------------------------------------------


def test_the_trial_records_where_its_teacher_came_from():
    from types import SimpleNamespace

    dim = distillation.Distillation()
    assert dim.record(None, None, {}, SimpleNamespace(info={"teacher_source": "study"})) == {"teacher_source": "study"}
    assert dim.record(None, None, {}, SimpleNamespace(info={})) == {"teacher_source": None}


def test_an_enabled_distillation_needs_training_and_says_what_it_does_first():
    from search.core.errors import UsageError
    from search.tasks import tabular_bench

    spec = from_dict(tiny_spec_dict(space={"distillation": {"enabled": True, "teacher_epochs": 3}}))
    assert [d.name for d in spaces.needing_training(spec)] == ["distillation"]
    assert spaces.study_work(spec) == ["training the distillation teacher once (3 epochs)"]
    off = from_dict(tiny_spec_dict())
    assert spaces.needing_training(off) == [] and spaces.study_work(off) == []
    table = from_dict(tiny_spec_dict(objectives={"accuracy": "maximize", "latency_ms": "minimize"},
                                     space={"distillation": {"enabled": True}}))
    with pytest.raises(UsageError, match="space.distillation needs training; a table task trains nothing"):
        tabular_bench.check_spec(table)
    tabular_bench.check_spec(from_dict(tiny_spec_dict(objectives={"accuracy": "maximize", "latency_ms": "minimize"})))
