"""What a picked trial trades, in one sentence a user can act on.

`trade_sentence(chosen, reference, objectives)` compares a trial with another one
(`paretune front` and `export` use the study's baseline, search.tasks.baseline, and
without one the most accurate front trial):

    −0.8 pp accuracy, 3.1× faster, 12× smaller than the most accurate front trial (trial 4)

- accuracy: the difference in percentage points, one decimal, signed (− is U+2212);
- latency (`latency_ms`): reference / chosen, "N× faster" (or "N× slower" below 1);
- size (`size_kb`): reference / chosen, "N× smaller" (or "N× larger");

each where both trials carry the value (an objective or a measured user attr). Ratios
below 10 get one decimal, from 10 on none. The chosen trial itself as the reference
reads "the most accurate front trial itself".
"""

from __future__ import annotations

import math

from optuna.trial import FrozenTrial

from search.results.recorded import lookup

MINUS = "\u2212"


def _value(trial: FrozenTrial, name: str, objectives) -> float | None:
    value = lookup(trial, name, objectives)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def ratio_words(ratio: float, better: str, worse: str) -> str:
    """`3.1× faster` for 3.1, `2.0× slower` for 0.5 (one decimal below 10, none from 10)."""
    word, factor = (better, ratio) if ratio >= 1 else (worse, 1 / ratio)
    shown = f"{factor:.1f}" if round(factor, 1) < 10 else f"{factor:.0f}"
    return f"{shown}× {word}"


def accuracy_words(delta: float) -> str:
    """`−0.8 pp accuracy` for -0.008, `+1.2 pp accuracy`, `0.0 pp accuracy`."""
    points = round(100 * delta, 1)
    if points == 0:
        return "0.0 pp accuracy"
    return f"{'+' if points > 0 else MINUS}{abs(points):.1f} pp accuracy"


def trade_parts(chosen: FrozenTrial, reference: FrozenTrial, objectives) -> list[str]:
    parts = []
    accuracy, base = _value(chosen, "accuracy", objectives), _value(reference, "accuracy", objectives)
    if accuracy is not None and base is not None:
        parts.append(accuracy_words(accuracy - base))
    for name, better, worse in (("latency_ms", "faster", "slower"), ("size_kb", "smaller", "larger")):
        mine, theirs = _value(chosen, name, objectives), _value(reference, name, objectives)
        if mine and theirs and mine > 0 and theirs > 0:
            parts.append(ratio_words(theirs / mine, better, worse))
    return parts


def trade_sentence(chosen: FrozenTrial, reference: FrozenTrial, objectives, against: str = "the most accurate front trial") -> str:
    if chosen.number == reference.number:
        return f"{against} itself"
    parts = trade_parts(chosen, reference, objectives)
    return f"{', '.join(parts)} than {against} (trial {reference.number})"
