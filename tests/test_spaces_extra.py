"""The optional dimensions (distillation, augmentation, runtime), gradual pruning and the
small transformer: suggest stays in bounds and is absent when disabled; each apply step
has its real, measurable effect."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import spaces
from objectives import accuracy, complexity, latency
from search.data import load_task
from search.spec import from_dict, load
from spaces.augmentation import AugmentationSpace
from search.data import calibration_batches
from search.plugins import suggest_params
from search.training import train_recipe
from search.trial import build_and_compress, measure, run_pipeline
from spaces import architecture, augmentation, distillation, pruning, quantization, runtime
from tests.conftest import ROOT, acc, predict, sample_many, tiny_spec_dict, train

optuna.logging.set_verbosity(optuna.logging.WARNING)

CNN = {"family": "cnn", "width": 8, "depth": 2, "kernel": 3, "batch_norm": True}
MLP = {"family": "mlp", "width": 8, "depth": 2, "batch_norm": True}
TRANSFORMER = {"family": "transformer", "embed_dim": 32, "heads": 2, "layers": 1}
RECIPE = {"optimizer": "adamw", "lr": 1e-2, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4,
          "label_smoothing": 0.0, "dropout": 0.0}
EXTRA_KEYS = ("kd_temperature", "kd_alpha", "kd_feature_weight", "aug_strength", "runtime")


@pytest.fixture(scope="module")
def digits():
    return load_task(from_dict(tiny_spec_dict()))


@pytest.fixture(scope="module")
def wine():
    return load_task(from_dict(tiny_spec_dict(task="wine")))


def _trained(task, arch, epochs=2, seed=0):
    torch.manual_seed(seed)
    model = architecture.build(arch, task.input_shape, task.n_classes)
    return train(model, task, {**arch, **RECIPE}, epochs, seed=seed)


@pytest.fixture(scope="module")
def trained_cnn(digits):
    return _trained(digits, {**CNN, "width": 16}, epochs=3)


# --- suggest ----------------------------------------------------------------------------------


def test_optional_dimensions_are_off_by_default_and_the_runtime_searches_what_ships():
    """Distillation and augmentation add nothing unless enabled; the runtime is searched
    by default among the forms `paretune train` ships, never eager unless asked."""
    spec = from_dict(tiny_spec_dict())
    assert not (spec.space.distillation.enabled or spec.space.augmentation.enabled)
    assert spec.space.runtime.enabled and spec.space.runtime.runtimes == ["torchscript", "onnxruntime"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(20):
        trial = study.ask()
        config = suggest_params(trial, spec, "image")
        assert not any(key in config for key in EXTRA_KEYS if key != "runtime")
        assert not any(name.startswith(("kd_", "aug_")) for name in trial.params)
        assert config["runtime"] in ("torchscript", "onnxruntime")
        assert config["runtime"] == "torchscript" or config["quant_mode"] != "qat"  # QAT has no ONNX Runtime form
        drawn.add(config["runtime"])
        study.tell(trial, 0.0)
    assert drawn == {"torchscript", "onnxruntime"}


def test_enabled_dimensions_respect_bounds_and_conditions():
    spec = from_dict(
        tiny_spec_dict(
            space={
                "architecture": {"families": ["mlp", "cnn"], "width": [8, 12], "depth": [1, 2]},
                "quantization": {"modes": ["none", "qat", "static"]},
                "distillation": {"enabled": True, "temperature": [2.0, 3.0], "alpha": [0.2, 0.4],
                                 "features": [True, False], "feature_weight": {"low": 0.5, "high": 2.0, "log": True}},
                "augmentation": {"enabled": True, "strength": [0.1, 0.2]},
                "runtime": {"enabled": True, "runtimes": ["eager", "onnxruntime", "torchscript"]},
            }
        )
    )
    configs = sample_many(spec, 60, seed=3)
    for c in configs:
        assert 2.0 <= c["kd_temperature"] <= 3.0 and 0.2 <= c["kd_alpha"] <= 0.4
        assert 0.5 <= c.get("kd_feature_weight", 1.0) <= 2.0
        assert 0.1 <= c["aug_strength"] <= 0.2
        assert c["runtime"] in ("eager", "onnxruntime", "torchscript")
        if c["quant_mode"] == "qat":  # a QAT model has no ONNX Runtime form
            assert c["runtime"] != "onnxruntime"
    assert {c["runtime"] for c in configs} == {"eager", "onnxruntime", "torchscript"}
    assert any("kd_feature_weight" in c for c in configs) and any("kd_feature_weight" not in c for c in configs)


def test_augmentation_suggest_follows_the_task_kind():
    spec = from_dict(tiny_spec_dict(task="wine", space={"augmentation": {"enabled": True, "tabular_ops": []}}))
    assert all("aug_strength" not in c for c in sample_many(spec, 5, "tabular", seed=3))
    spec = from_dict(tiny_spec_dict(task="wine", space={"augmentation": {"enabled": True}}))
    assert all(0 <= c["aug_strength"] <= 1 for c in sample_many(spec, 5, "tabular", seed=3))


def test_fixed_trial_rebuilds_a_qat_runtime_config():
    """A retrain rebuilds params through suggest on a FixedTrial: the per-mode runtime name must round-trip."""
    spec = from_dict(tiny_spec_dict(space={"quantization": {"modes": ["qat"]}, "runtime": {"enabled": True}}))
    config = sample_many(spec, 1, seed=3)[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest_params(trial, spec, "image")
    rebuilt = suggest_params(optuna.trial.FixedTrial(trial.params), spec, "image")
    assert rebuilt["runtime"] == trial.params["runtime_qat"] and config["runtime"] in ("eager", "torchscript")


@pytest.mark.parametrize(
    "section, message",
    [
        ({"distillation": {"alpha": [0.1, 1.5]}}, "alpha"),
        ({"distillation": {"temperature": [0.0, 2.0]}}, "temperature"),
        ({"augmentation": {"strength": [0.0, 2.0]}}, "strength"),
        ({"runtime": {"runtimes": ["tvm"]}}, "space.runtime.runtimes"),
        ({"runtime": {"enable": True}}, "unknown field"),
    ],
)
def test_bad_sections_are_rejected(section, message):
    from search.errors import UsageError

    with pytest.raises(UsageError, match=message):
        from_dict(tiny_spec_dict(space=section))


def test_digits_full_spec_enables_everything():
    spec = load(ROOT / "studies" / "digits_full.toml")
    space = spec.space
    assert space.distillation.enabled and space.augmentation.enabled and space.runtime.enabled
    assert "gradual" in space.pruning.kinds and "transformer" in space.architecture.families
    assert set(space.runtime.runtimes) == {"eager", "torchscript", "onnxruntime"}
    assert spec.budget.trials <= 20 and spec.budget.epochs <= 10


# --- distillation -----------------------------------------------------------------------------


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
        student = architecture.build(MLP, digits.input_shape, 10)
        torch.manual_seed(teacher_seed)
        teacher = architecture.build(CNN, digits.input_shape, 10).eval()
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
    student = architecture.build(MLP, digits.input_shape, 10)
    teacher = architecture.build(CNN, digits.input_shape, 10).eval()
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


def _teacher_train(task):
    return lambda model, recipe, epochs, seed: train_recipe(model, task, recipe, epochs, seed)


def _compress(params, task, spec, seed=0, teacher=None):
    """(compressed model, float model, info) of a trial's build → train → compress."""
    model, ctx, _ = build_and_compress(params, task, spec, seed, shared={"distillation": teacher} if teacher else None)
    return model, ctx.float_model, ctx.info


def test_prepare_teacher_once_and_ship_as_state_dict(digits):
    assert distillation.prepare_teacher(from_dict(tiny_spec_dict()), digits, _teacher_train(digits)) is None
    spec = from_dict(tiny_spec_dict(space={"distillation": {"enabled": True, "teacher_width": 8, "teacher_epochs": 3}}))
    teacher = distillation.prepare_teacher(spec, digits, _teacher_train(digits))
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
    teacher = distillation.prepare_teacher(spec, digits, _teacher_train(digits))
    params = {**MLP, **RECIPE, "prune_kind": "none", "quant_mode": "none", "kd_temperature": 4.0, "kd_alpha": 0.9}
    distilled, _, info = _compress(params, digits, spec, seed=0, teacher=teacher)
    assert info["teacher_source"] == "study"
    other = {**teacher, "state_dict": {k: (v + 0.5 if v.is_floating_point() else v) for k, v in teacher["state_dict"].items()}}
    moved, _, _ = _compress(params, digits, spec, seed=0, teacher=other)
    plain, _, _ = _compress({k: v for k, v in params.items() if not k.startswith("kd_")}, digits, spec, seed=0)
    x = torch.from_numpy(digits.val.X)
    assert not torch.allclose(distilled(x), moved(x)) and not torch.allclose(distilled(x), plain(x))


# --- augmentation ---------------------------------------------------------------------------------


def test_augmentation_changes_inputs_reproducibly_and_strength_zero_is_identity(digits):
    x = torch.from_numpy(digits.train.X[:64])
    before = x.clone()
    bounds = AugmentationSpace(enabled=True)
    out = augmentation.Augmenter(0.8, bounds, "image", seed=1)(x)
    assert out.shape == x.shape and torch.equal(x, before)  # a new tensor; the batch is not modified
    assert (out - x).abs().mean() > 0.02 and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.equal(out, augmentation.Augmenter(0.8, bounds, "image", seed=1)(x))
    assert augmentation.Augmenter(0.0, bounds, "image")(x) is x
    assert augmentation.make({"aug_strength": 0.0}, bounds, "image") is None
    assert augmentation.make({}, bounds, "image") is None


def test_shift_is_a_pad_and_crop_within_the_bound(digits):
    x = torch.from_numpy(digits.train.X[:32])
    out = augmentation.random_shift(x, 1, torch.Generator().manual_seed(0))
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    shifts = []
    for i in range(len(x)):
        match = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])]
        assert match, f"sample {i} is not a shift of at most one pixel"
        shifts.append(match[0])
    assert len(set(shifts)) > 3  # random per sample


def test_rotation_and_scale_keep_the_digit(digits):
    x = torch.from_numpy(digits.train.X[:64])
    g = torch.Generator().manual_seed(0)
    assert augmentation.random_affine(x, 0.0, 0.0, g) is x
    out = augmentation.random_affine(x, 15.0, 0.1, g)
    assert not torch.allclose(out, x, atol=1e-3)
    mass_ratio = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert 0.7 < float(mass_ratio.min()) and float(mass_ratio.max()) < 1.4  # a small warp, not a new image
    identity = augmentation.random_affine(x, 1e-9, 1e-9, g)  # the warp itself is exact at zero angle and zoom
    assert torch.allclose(identity, x, atol=1e-5)


def test_tabular_noise_and_jitter_scale_with_strength(wine):
    x = torch.from_numpy(wine.train.X)
    bounds = AugmentationSpace(enabled=True, noise_std=0.2, jitter_std=0.0)
    for strength in (0.5, 1.0):
        delta = augmentation.Augmenter(strength, bounds, "tabular", seed=0)(x) - x
        assert float(delta.std()) == pytest.approx(0.2 * strength, rel=0.1)
    jitter = augmentation.Augmenter(1.0, AugmentationSpace(enabled=True, noise_std=0.0, jitter_std=0.3), "tabular", seed=0)(x)
    ratio = (jitter / x)[x.abs() > 0.1]
    assert float(ratio.std()) == pytest.approx(0.3, rel=0.15) and float(ratio.mean()) == pytest.approx(1.0, abs=0.05)


def test_train_feeds_augmented_inputs_with_the_original_labels(digits, monkeypatch):
    seen, labels, calls = [], [], []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = architecture.build(MLP, digits.input_shape, 10)

        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return self.inner(x)

    def augment(x):
        calls.append(len(x))
        return x + 100.0  # unmistakable

    def capture_loss(logits, y):
        labels.append(y.clone())
        return nn.functional.cross_entropy(logits, y)

    monkeypatch.setattr("spaces.regularization.criterion", lambda params: capture_loss)
    train(Spy(), digits, {**MLP, **RECIPE, "batch_size": 256}, 1, augment=augment)
    assert sum(calls) == len(digits.train.X) and all(float(x.min()) >= 100.0 for x in seen)
    assert sorted(torch.cat(labels).tolist()) == sorted(digits.train.y.tolist())


# --- gradual pruning --------------------------------------------------------------------------------


def test_gradual_ramp_is_cubic_monotone_and_ends_at_the_target():
    values = [pruning.gradual_target(step, 100, 0.8) for step in range(101)]
    assert values[10] == 0.0 and values[80] == values[100] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[45] == pytest.approx(0.8 * (1 - 0.5**3))  # halfway through the ramp: 7/8 of the target


@pytest.mark.parametrize("epochs", [2, 6])
def test_gradual_pruning_reaches_the_target_sparsity_at_the_end_of_training(digits, epochs):
    spec = from_dict(tiny_spec_dict(budget={"epochs": epochs}))
    params = {**MLP, **RECIPE, "prune_kind": "gradual", "prune_ratio": 0.7, "quant_mode": "none"}
    seen = []
    model = architecture.build(MLP, digits.input_shape, 10)
    pruner = pruning.GradualPruner(model, 0.7, epochs)

    class Recorder:
        def on_epoch_end(self, epoch):
            seen.append((pruner.on_epoch_end(epoch), pruning.sparsity(model)))

    train(model, digits, params, epochs, epoch_hooks=(Recorder(),))
    assert all(abs(target - got) < 0.01 for target, got in seen)
    assert [t for t, _ in seen] == sorted(t for t, _ in seen) and seen[-1][0] == pytest.approx(0.7)
    deployed, _, _ = _compress(params, digits, spec, seed=0)
    assert pruning.sparsity(deployed) == pytest.approx(0.7, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in deployed.named_parameters())
    assert acc(deployed, digits) > 0.5


# --- runtime -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["torchscript", "onnxruntime"])
def test_fp32_runtimes_predict_like_eager(digits, trained_cnn, name):
    example = torch.from_numpy(digits.train.X[:2])
    runner = runtime.apply({"runtime": name, "quant_mode": "none"}, trained_cnn, trained_cnn, example)
    assert isinstance(runner, nn.Module) and runner is not trained_cnn
    eager = predict(trained_cnn, digits.val.X)
    agreement = float(np.mean(predict(runner, digits.val.X) == eager))
    assert agreement >= 0.98
    timing = latency.measure(runner, digits.input_shape, repeats=10, warmup=2)
    assert timing.value > 0


def test_runtimes_on_mlp_and_transformer(digits):
    example = torch.from_numpy(digits.train.X[:2])
    for arch in (MLP, TRANSFORMER):
        model = _trained(digits, arch)
        eager = predict(model, digits.val.X)
        for name in ("torchscript", "onnxruntime"):
            runner = runtime.apply({"runtime": name}, model, model, example)
            assert np.mean(predict(runner, digits.val.X) == eager) >= 0.98, (arch["family"], name)


def test_onnxruntime_quantizes_with_its_own_int8_kernels(digits, trained_cnn):
    import onnx

    example = torch.from_numpy(digits.train.X[:2])
    calibration = calibration_batches(digits, 4)
    float_runner = runtime.apply({"runtime": "onnxruntime"}, trained_cnn, trained_cnn, example)
    static = runtime.apply({"runtime": "onnxruntime", "quant_mode": "static"}, trained_cnn, trained_cnn, example,
                           calibration=calibration)
    ops = {n.op_type for n in onnx.load_from_string(static.model_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert static.size_kb() < 0.5 * float_runner.size_kb()
    eager = predict(trained_cnn, digits.val.X)
    assert np.mean(predict(static, digits.val.X) == eager) >= 0.9

    mlp = _trained(digits, MLP)
    dynamic = runtime.apply({"runtime": "onnxruntime", "quant_mode": "dynamic"}, mlp, mlp, example)
    ops = [n.op_type for n in onnx.load_from_string(dynamic.model_bytes).graph.node]
    assert ops.count("MatMulInteger") == 3 and "Gemm" not in ops  # every linear layer, as torch's dynamic mode
    assert np.mean(predict(dynamic, digits.val.X) == predict(mlp, digits.val.X)) >= 0.95


def test_gemm_rewrite_keeps_outputs(digits):
    import onnxruntime as ort

    model = _trained(digits, MLP, 1)
    example = torch.from_numpy(digits.train.X[:2])
    original = runtime.export_onnx(model, example)
    rewritten = runtime.gemm_to_matmul(original)
    x = digits.val.X[:50]
    outputs = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0] for b in (original, rewritten)]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_torchscript_runs_torch_int8_models(digits, trained_cnn):
    example = torch.from_numpy(digits.train.X[:2])
    q = quantization.apply(copy.deepcopy(trained_cnn), "static", example, calibration=calibration_batches(digits, 4))
    runner = runtime.apply({"runtime": "torchscript", "quant_mode": "static"}, q, trained_cnn, example)
    assert isinstance(runner, torch.jit.ScriptModule)
    assert np.mean(predict(runner, digits.val.X) == predict(q, digits.val.X)) >= 0.99


def test_ort_module_pickles_and_reopens(digits, trained_cnn):
    runner = runtime.apply({"runtime": "onnxruntime"}, trained_cnn, trained_cnn, torch.from_numpy(digits.train.X[:2]), threads=1)
    again = pickle.loads(pickle.dumps(runner))
    x = torch.from_numpy(digits.val.X[:20])
    assert torch.allclose(runner(x), again(x)) and again.session.get_session_options().intra_op_num_threads == 1


def test_unexportable_model_fails_with_a_clear_reason(digits):
    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(33, 10)

        def forward(self, x):
            return self.classifier(torch.fft.rfft(x.flatten(1)).abs())

    model = Spectral().eval()
    with pytest.raises(runtime.RuntimeUnavailable, match="runtime onnxruntime: cannot export the Spectral model to ONNX"):
        runtime.apply({"runtime": "onnxruntime"}, model, model, torch.from_numpy(digits.train.X[:2]))
    with pytest.raises(runtime.RuntimeUnavailable, match="QAT"):
        runtime.apply({"runtime": "onnxruntime", "quant_mode": "qat"}, model, model, torch.zeros(1))


def test_latency_and_accuracy_are_measured_on_the_runner(digits, trained_cnn):
    import time

    class Slow(nn.Module):
        def forward(self, x):
            time.sleep(0.003)
            return torch.zeros(len(x), 10)

    spec = from_dict(tiny_spec_dict())
    info = {"macs_by_precision": {"fp32": 1000}, "macs": 1000, "float_params": 10, "train_seconds": 0.0}
    metrics = measure(trained_cnn, digits, spec, info, runner=Slow())
    assert metrics.latency_ms >= 3.0
    assert metrics.accuracy == pytest.approx(float(np.mean(digits.val.y == 0)))  # Slow always says class 0
    assert metrics.params == 10 and metrics.size_kb == pytest.approx(complexity.size_kb(trained_cnn))


@pytest.mark.parametrize("name", ["torchscript", "onnxruntime"])
def test_pipeline_reports_the_runtime(digits, name):
    spec = from_dict(tiny_spec_dict(space={"runtime": {"enabled": True}}, measure={"repeats": 5, "warmup": 1}))
    params = {**MLP, **RECIPE, "prune_kind": "none", "quant_mode": "dynamic", "runtime": name}
    result = run_pipeline(params, digits, spec, seed=0)
    assert result.metrics.runtime == name and result.metrics.latency_ms > 0 and result.metrics.quantized
    assert result.runner is not result.model and result.metrics.accuracy > 0.5
    if name == "onnxruntime":
        assert result.metrics.size_kb == pytest.approx(result.runner.size_kb())


# --- the small transformer ------------------------------------------------------------------------------


def test_transformer_trains_above_chance_and_quantizes_dynamically(digits):
    model = _trained(digits, TRANSFORMER, epochs=3)
    float_accuracy = acc(model, digits)
    assert float_accuracy > 0.3  # chance is 0.1
    q = quantization.apply(copy.deepcopy(model), "dynamic", torch.from_numpy(digits.train.X[:2]))
    assert sum("quantized.dynamic" in type(m).__module__ for m in q.modules()) == 3  # linear1, linear2, classifier
    assert acc(q, digits) == pytest.approx(float_accuracy, abs=0.05)
    assert complexity.size_kb(q) < complexity.size_kb(model)


def test_transformer_pruning_kinds(digits):
    example = torch.from_numpy(digits.train.X[:2])
    model = architecture.build({**TRANSFORMER, "layers": 2}, digits.input_shape, 10)
    params_before = complexity.count_params(model)[0]
    macs_before = complexity.count_macs(model, example)
    in_proj = [layer.self_attn.in_proj_weight.clone() for layer in model.encoder.layers]

    structured = pruning.apply(copy.deepcopy(model), {"prune_kind": "structured", "prune_ratio": 0.5}, example)
    assert all(layer.linear1.out_features == 32 and layer.linear2.in_features == 32 for layer in structured.encoder.layers)
    macs_after = complexity.count_macs(structured, example)
    assert macs_after["linear"] < 0.6 * macs_before["linear"] and macs_after["attention"] == macs_before["attention"]
    assert complexity.count_params(structured)[0] < params_before and structured(example).shape == (2, 10)

    unstructured = pruning.finalize(pruning.apply(copy.deepcopy(model), {"prune_kind": "unstructured", "prune_ratio": 0.5}, example))
    assert pruning.sparsity(unstructured) == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(a, layer.self_attn.in_proj_weight) for a, layer in zip(in_proj, unstructured.encoder.layers))

    spec = from_dict(tiny_spec_dict())
    config = {**TRANSFORMER, **RECIPE, "prune_kind": "gradual", "prune_ratio": 0.4, "quant_mode": "dynamic"}
    deployed, float_model, _ = _compress(config, digits, spec, seed=0)
    assert pruning.sparsity(float_model) == pytest.approx(0.4, abs=0.01) and quantization.is_quantized(deployed)
