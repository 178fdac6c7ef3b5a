"""The augmentation dimension: suggest follows the task kind; each op changes inputs
reproducibly within its bound."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search.core.spec import from_dict
from spaces import architecture, augmentation
from spaces.augmentation import AugmentationSpace
from tests.conftest import sample_many, tiny_spec_dict, train
from tests.dims import MLP8, RECIPE_ADAMW, digits, wine  # noqa: F401 - fixtures


def test_augmentation_suggest_follows_the_task_kind():
    spec = from_dict(tiny_spec_dict(task="wine", space={"augmentation": {"enabled": True, "tabular_ops": []}}))
    assert all("aug_strength" not in c for c in sample_many(spec, 5, "tabular", seed=3))
    spec = from_dict(tiny_spec_dict(task="wine", space={"augmentation": {"enabled": True}}))
    assert all(0 <= c["aug_strength"] <= 1 for c in sample_many(spec, 5, "tabular", seed=3))


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
            self.inner = architecture.build(MLP8, digits.input_shape, 10)

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
    train(Spy(), digits, {**MLP8, **RECIPE_ADAMW, "batch_size": 256}, 1, augment=augment)
    assert sum(calls) == len(digits.train.X) and all(float(x.min()) >= 100.0 for x in seen)
    assert sorted(torch.cat(labels).tolist()) == sorted(digits.train.y.tolist())
