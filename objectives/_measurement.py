from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Measurement:
    """A value, its unit, and how it was obtained (`source`), plus any extra figures."""

    value: float
    unit: str
    source: str
    detail: dict = field(default_factory=dict)
