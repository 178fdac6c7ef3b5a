"""Data-augmentation dimension: random transforms of each training batch, labels
unchanged. One searched `strength` in [0, 1] scales every op's maximum magnitude
(from the spec); strength 0 is exactly the identity.

Images (N×C×H×W in [0, 1]):
- shift:  zero-pad by k = round(strength · max_shift) pixels, crop back at a random
          offset per sample (integer shifts in [-k, k] on both axes);
- rotate: angle uniform in ±strength · max_rotation degrees,
- scale:  zoom uniform in 1 ± strength · max_scale, rotation and zoom together as one
          affine warp per sample (`affine_grid` + bilinear `grid_sample`, zeros outside);
- noise:  Gaussian, σ = strength · noise_std, clipped back to [0, 1].

Tabular (N×F, standardized):
- noise:  additive Gaussian, σ = strength · noise_std (in standard deviations);
- jitter: per-sample, per-feature multiplicative scaling by 1 + ε, ε ~ N(0, (strength · jitter_std)²).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from spaces._config import FloatRange, Strict, suggest_range, within
from spaces._lazy import F, nn, torch
from spaces.dimension import Dimension, SuggestContext, TrialContext, register


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
        return within(value, 0.0, 1.0, "strength")


def _ops(bounds: AugmentationSpace, task_kind: str) -> list[str]:
    """The ops for a task kind: images (N×C×H×W in [0, 1]), tabular (standardized), none otherwise."""
    if task_kind == "image":
        return list(bounds.image_ops)
    if task_kind == "tabular":
        return list(bounds.tabular_ops)
    return []


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `pixels` zeros on every side and crop the original size at a random
    offset per sample."""
    if pixels <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # N×1×H×1
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # N×1×1×W
    batch = torch.arange(n)[:, None, None, None]
    channel = torch.arange(c)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_affine(x: torch.Tensor, max_degrees: float, max_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate by up to ±max_degrees and zoom by up to 1 ± max_scale, per sample."""
    if max_degrees <= 0 and max_scale <= 0:
        return x
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * max_scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output → input coordinates
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU generator (reproducible on any device), then moved to x's device.
    return torch.randn(x.shape, generator=generator).to(x.device)


class Augmenter:
    """Callable on a training batch: returns an augmented copy (the input is not
    modified). Its own seeded generator makes a trial's augmentations reproducible."""

    def __init__(self, strength: float, bounds: AugmentationSpace, task_kind: str, seed: int = 0):
        self.strength = float(strength)
        self.bounds, self.task_kind = bounds, task_kind
        self.ops = _ops(bounds, task_kind)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def identity(self) -> bool:
        return self.strength <= 0 or not self.ops

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        s, b, g = self.strength, self.bounds, self.generator
        if self.task_kind == "image":
            if "shift" in self.ops:
                x = random_shift(x, int(round(s * b.max_shift)), g)
            degrees = s * b.max_rotation if "rotate" in self.ops else 0.0
            zoom = s * b.max_scale if "scale" in self.ops else 0.0
            x = random_affine(x, degrees, zoom, g)
            if "noise" in self.ops and b.noise_std > 0:
                x = (x + _noise(x, g) * (s * b.noise_std)).clamp(0.0, 1.0)
            return x
        if "jitter" in self.ops and b.jitter_std > 0:
            x = x * (1 + _noise(x, g) * (s * b.jitter_std))
        if "noise" in self.ops and b.noise_std > 0:
            x = x + _noise(x, g) * (s * b.noise_std)
        return x


def make(params: dict, bounds: AugmentationSpace, task_kind: str, seed: int = 0) -> Augmenter | None:
    """The trial's augmenter, or None when it does not augment."""
    if "aug_strength" not in params:
        return None
    augmenter = Augmenter(params["aug_strength"], bounds, task_kind, seed)
    return None if augmenter.identity else augmenter


class Augmentation(Dimension):
    name = "augmentation"
    config = AugmentationSpace
    order = 70
    in_baseline = False

    def suggest(self, trial, config: AugmentationSpace, ctx: SuggestContext) -> dict:
        if not config.enabled or not _ops(config, ctx.task_kind):
            return {}
        return {"aug_strength": suggest_range(trial, "aug_strength", config.strength)}

    def prepare(self, model: nn.Module, params: dict, ctx: TrialContext) -> None:
        augmenter = make(params, ctx.settings(self), ctx.task.kind, ctx.seed)
        if augmenter is not None:
            ctx.training.transforms.append(augmenter)


register(Augmentation)
