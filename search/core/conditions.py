"""Conditions written as "NAME OP VALUE": the spec's constraints and the front's filters.

- `split(text, ops, value)`: the one parser. NAME is an identifier, OP one of `ops`
  (longest first where one is a prefix of another), VALUE what `value` (a regular
  expression) matches; spaces around each are allowed. None when the text does not
  read so; the callers word their own errors.
- `Bound`: a constraint, `NAME <= NUMBER` or `NAME >= NUMBER`, and its violation on a
  trial's metrics (Optuna's convention: <= 0 is met). The spec's `Constraint` parses
  through it, and the front reads a study's recorded constraints with it without
  loading the spec.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# The front's `--where` operators; "=" reads as "==".
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">", "=")
# A constraint's operators and the text of its bound.
BOUND_OPS = ("<=", ">=")
BOUND_NUMBER = r"[-+0-9.eE]+"
ANY_VALUE = r".+?"


@functools.lru_cache(maxsize=None)
def _pattern(ops: tuple[str, ...], value: str) -> re.Pattern:
    return re.compile(rf"^\s*({NAME})\s*({'|'.join(re.escape(op) for op in ops)})\s*({value})\s*$")


def split(text: str, ops: tuple[str, ...] = COMPARISONS, value: str = ANY_VALUE) -> tuple[str, str, str] | None:
    """'latency_ms <= 1.5' → ("latency_ms", "<=", "1.5"); None when `text` is not
    NAME OP VALUE with OP in `ops` and VALUE matching the regular expression `value`."""
    match = _pattern(tuple(ops), value).match(text)
    return match.groups() if match else None


def violation(value: float, op: str, bound: float) -> float:
    """How far `value` is beyond `bound` (`op` "<=" or ">="): <= 0 met, > 0 by how much not."""
    return value - bound if op == "<=" else bound - value


@dataclass(frozen=True)
class Bound:
    """`objective op bound`: a constraint on a metric, as the spec writes it."""

    objective: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Bound":
        """'latency_ms <= 2.0' → Bound; ValueError (in the spec's words) otherwise."""
        parts = split(text, BOUND_OPS, BOUND_NUMBER)
        if parts is None:
            raise ValueError(f"a constraint reads like 'latency_ms <= 2.0', but got {text!r}")
        name, op, bound = parts
        try:
            value = float(bound)
        except ValueError:
            raise ValueError(f"constraint bound must be a number, but got {bound!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"constraint bound must be finite, but got {bound!r}")
        return cls(name, op, value)

    @classmethod
    def of(cls, record: str | Mapping) -> "Bound":
        """A constraint as a spec records it: its text, or {objective, op, bound}."""
        if isinstance(record, str):
            return cls.parse(record)
        if not isinstance(record, Mapping) or set(record) != {"objective", "op", "bound"}:
            raise ValueError(f"a constraint is text like 'latency_ms <= 2.0', not {record!r}")
        objective, op, bound = record["objective"], record["op"], record["bound"]
        if not isinstance(objective, str) or op not in BOUND_OPS:
            raise ValueError(f"a constraint is text like 'latency_ms <= 2.0', not {record!r}")
        try:
            value = float(bound)
        except (TypeError, ValueError):
            raise ValueError(f"constraint bound must be a number, but got {bound!r}") from None
        return cls(objective, op, value)

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 is feasible, > 0 is by how much it is violated."""
        return violation(float(metrics[self.objective]), self.op, self.bound)

    def __str__(self) -> str:
        return f"{self.objective} {self.op} {self.bound:g}"
