"""Objectives: each module measures one property of a finished model.

`accuracy` (val/test top-1), `latency` (measured wall time per inference), `energy`
(hardware counter where one exists, otherwise an explicit estimate that says so),
`complexity` (params, MACs, size on disk).
"""

from objectives import accuracy, complexity, energy, latency
from objectives._measurement import Measurement

__all__ = ["Measurement", "accuracy", "complexity", "energy", "latency"]
