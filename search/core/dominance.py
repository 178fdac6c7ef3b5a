"""Pareto dominance on minimization points: the maths under the front and MO-ASHA.

Every function takes points as an (n × m) array of *minimization* values (a maximized
objective is negated by the caller) and knows nothing of trials or studies:

- `dominates(a, b)`: a is no worse in every objective and better in one.
- `nondominated_mask(points)`: the rows no other row dominates (equal rows all kept).
- `nondominated_ranks(points)`: non-dominated sorting, the front index of each row.
- `crowding(points)`: NSGA-II's crowding distance within one front.
- `hypervolume(points, ref)`: the volume the points dominate up to `ref` (moocore).
"""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """On minimization vectors: a is no worse everywhere and better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_mask(points: np.ndarray) -> np.ndarray:
    """Minimization points (n×m) → which rows no other row dominates (ties all kept)."""
    n = len(points)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        worse_or_equal = np.all(points[i] <= points, axis=1)
        strictly = np.any(points[i] < points, axis=1)
        mask &= ~(worse_or_equal & strictly)  # rows that points[i] dominates
    return mask


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index of each minimization point: 0 for the non-dominated ones, 1 for those
    dominated only by front 0, and so on."""
    ranks = np.full(len(points), -1)
    remaining = np.arange(len(points))
    front = 0
    while len(remaining):
        mask = nondominated_mask(points[remaining])
        ranks[remaining[mask]] = front
        remaining = remaining[~mask]
        front += 1
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of minimization points (one front): per objective, the
    gap between a point's neighbours over the objective's range, summed; the points
    at an objective's minimum or maximum get infinity. Equal points get equal
    distances (computed once on the distinct points), and an objective equal on every
    point counts for nothing."""
    n = len(points)
    if n == 0:
        return np.empty(0)
    distinct, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    if len(distinct) <= 2:
        return np.full(n, np.inf)
    distance = np.zeros(len(distinct))
    for j in range(distinct.shape[1]):
        column = distinct[:, j]
        low, high = column.min(), column.max()
        if high <= low:
            continue
        distance[(column == low) | (column == high)] = np.inf
        order = np.argsort(column, kind="stable")
        gaps = (column[order][2:] - column[order][:-2]) / (high - low)
        distance[order[1:-1]] += gaps
    return distance[inverse]


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimization points; points not strictly better than `ref` in
    every objective add nothing."""
    if len(points) == 0:
        return 0.0
    inside = points[np.all(points < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - inside[:, 0].min())
    import moocore

    compute = getattr(moocore, "hypervolume", None) or getattr(moocore, "hv")
    return float(compute(inside, ref=ref))
