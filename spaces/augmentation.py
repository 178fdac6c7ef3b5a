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

import torch
import torch.nn.functional as F

from search.spec import AugmentationSpace
from spaces._suggest import suggest_range


def _ops(bounds: AugmentationSpace, task_kind: str) -> list[str]:
    return list(bounds.image_ops if task_kind == "image" else bounds.tabular_ops)


def suggest(trial, bounds: AugmentationSpace, task_kind: str = "image") -> dict:
    if not bounds.enabled or not _ops(bounds, task_kind):
        return {}
    return {"aug_strength": suggest_range(trial, "aug_strength", bounds.strength)}


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
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
                x = (x + torch.randn(x.shape, generator=g) * (s * b.noise_std)).clamp(0.0, 1.0)
            return x
        if "jitter" in self.ops and b.jitter_std > 0:
            x = x * (1 + torch.randn(x.shape, generator=g) * (s * b.jitter_std))
        if "noise" in self.ops and b.noise_std > 0:
            x = x + torch.randn(x.shape, generator=g) * (s * b.noise_std)
        return x


def make(params: dict, bounds: AugmentationSpace, task_kind: str, seed: int = 0) -> Augmenter | None:
    """The trial's augmenter, or None when it does not augment."""
    if "aug_strength" not in params:
        return None
    augmenter = Augmenter(params["aug_strength"], bounds, task_kind, seed)
    return None if augmenter.identity else augmenter
