"""What every benchmark shares: its result table, the machine it ran on, a Ray session.

A benchmark returns `Table`s: rows of figures plus notes that say what was measured
and how. The runner prints them (rich) and writes them as markdown and JSON; nothing
here asserts a timing: the figures are evidence, judged by a reader.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Table:
    name: str  # the benchmark's name: overhead, efficiency, stability, compression
    title: str
    columns: list[str]
    rows: list[list]  # cells: str, int or float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def numbers(self) -> list[float]:
        return [float(c) for row in self.rows for c in row if isinstance(c, (int, float)) and not isinstance(c, bool)]


def fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits + 1)):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    """What the figures were taken on; the load average says how busy it was."""
    import optuna
    import ray
    import torch

    from search.trial.hardware import cpu_flags, cpu_model

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
    }


def cv(values: list[float]) -> float:
    """Coefficient of variation: sample std / mean."""
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


@contextlib.contextmanager
def ray_session():
    """A local Ray for the benchmarks that need one; shut down after unless it was already up."""
    from search.driver.launcher import init_ray

    started = init_ray(None)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()
