"""Energy per inference, in millijoules.

On a CUDA device NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
mJ, Volta and newer) is read around a batch of synchronized inferences
(`source="nvml"`); it counts the whole GPU, so other work on it is included.
On the CPU, where a RAPL powercap tree exists (/sys/class/powercap/intel-rapl:N/energy_uj) the
package counters are read around a batch of inferences. RAPL counts the whole
package, so other load on the node is included; measurements hold the per-node lock.
Everywhere else the value is an explicit estimate and says so (`source="estimate"`):

    E = P_static × latency  +  Σ MACs × e_mac(precision)  +  weight bytes × e_dram

with e_mac and e_dram from Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm):
fp32 MAC = 3.7 pJ (mult) + 0.9 pJ (add); int8 MAC = 0.2 pJ + 0.03 pJ; DRAM 640 pJ per
32-bit word = 160 pJ/byte, weights read once per inference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from objectives._measurement import Measurement

PJ_PER_MAC = {"fp32": 3.7 + 0.9, "int8": 0.2 + 0.03}
PJ_PER_DRAM_BYTE = 640 / 4
MIN_RAPL_SECONDS = 0.2  # RAPL updates about every ms; integrate long enough to resolve it
MIN_NVML_SECONDS = 1.0  # NVML's energy counter updates far less often than RAPL's


def rapl_packages(root: Path) -> list[Path]:
    """Top-level RAPL domains (intel-rapl:0, intel-rapl:1, ...) that expose a counter."""
    if not root.is_dir():
        return []
    return sorted(
        d for d in root.glob("intel-rapl:*") if d.name.count(":") == 1 and (d / "energy_uj").is_file()
    )


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def read_energy_uj(packages: list[Path]) -> list[int]:
    return [_read_int(p / "energy_uj") for p in packages]


def counter_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Counter difference, allowing one wrap-around at max_energy_range_uj."""
    return after - before if after >= before else after + max_range_uj - before


def measure_rapl(run_once: Callable[[], None], packages: list[Path], min_seconds: float = MIN_RAPL_SECONDS) -> Measurement:
    max_ranges = [_read_int(p / "max_energy_range_uj") if (p / "max_energy_range_uj").is_file() else 2**32 for p in packages]
    before = read_energy_uj(packages)
    start, runs = time.perf_counter(), 0
    while runs == 0 or time.perf_counter() - start < min_seconds:
        run_once()
        runs += 1
    after = read_energy_uj(packages)
    total_uj = sum(counter_delta_uj(b, a, m) for b, a, m in zip(before, after, max_ranges))
    return Measurement(
        total_uj / runs / 1000.0,
        "mJ",
        "rapl",
        {"runs": runs, "domains": [p.name for p in packages], "note": "package counter; includes other load on the node"},
    )


def measure_nvml(run_once: Callable[[], None], device_index: int = 0, min_seconds: float | None = None) -> Measurement:
    """Energy per call from NVML's counter; raises (ImportError, pynvml.NVMLError, ...)
    where there is none, and `measure` falls back to the estimate."""
    import pynvml
    import torch

    min_seconds = MIN_NVML_SECONDS if min_seconds is None else min_seconds
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        start, runs = time.perf_counter(), 0
        while runs == 0 or time.perf_counter() - start < min_seconds:
            run_once()
            runs += 1
        sync()
        after = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        name = pynvml.nvmlDeviceGetName(handle)
    finally:
        pynvml.nvmlShutdown()
    name = name.decode() if isinstance(name, bytes) else str(name)
    return Measurement(
        (after - before) / runs,
        "mJ",
        "nvml",
        {"runs": runs, "device": name, "note": "whole-GPU counter; includes other work on the GPU"},
    )


def estimate(latency_ms: float, macs_by_precision: dict[str, int], weight_bytes: float, static_power_w: float) -> Measurement:
    static_mj = static_power_w * latency_ms  # W × ms = mJ
    compute_mj = sum(PJ_PER_MAC[p] * n for p, n in macs_by_precision.items()) * 1e-9
    memory_mj = weight_bytes * PJ_PER_DRAM_BYTE * 1e-9
    return Measurement(
        static_mj + compute_mj + memory_mj,
        "mJ",
        "estimate",
        {
            "static_mj": static_mj,
            "compute_mj": compute_mj,
            "memory_mj": memory_mj,
            "model": "static power x latency + MACs x pJ/MAC + weight bytes x pJ/byte (Horowitz ISSCC 2014)",
        },
    )


def measure(
    run_once: Callable[[], None],
    *,
    latency_ms: float,
    macs_by_precision: dict[str, int],
    weight_bytes: float,
    static_power_w: float,
    powercap_root: Path = Path("/sys/class/powercap"),
    device: str = "cpu",
) -> Measurement:
    """NVML on a CUDA device, RAPL on a CPU where the tree is there and readable;
    otherwise the estimate, which says so."""
    if str(device).startswith("cuda"):
        try:
            index = int(str(device).partition(":")[2] or 0)
            return measure_nvml(run_once, index)
        except Exception:  # noqa: BLE001 - no NVML, no counter on this GPU: the estimate says so
            return estimate(latency_ms, macs_by_precision, weight_bytes, static_power_w)
    packages = rapl_packages(Path(powercap_root))
    if packages:
        try:
            return measure_rapl(run_once, packages)
        except (OSError, ValueError):
            pass  # unreadable counters (permissions): fall back to the estimate, which says so
    return estimate(latency_ms, macs_by_precision, weight_bytes, static_power_w)
