"""What a measurement ran on: recorded with every trial."""

from __future__ import annotations

import os
import platform
import socket

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU flags that decide how fast small-model inference can run: SIMD width, int8
# dot products (VNNI), bf16, AMX tiles.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


def cpu_flags() -> str:
    """The machine's SIMD-relevant CPU flags, space-separated ("avx2 fma avx512f ...");
    empty where /proc/cpuinfo has none (macOS, some containers)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return " ".join(flag for flag in SIMD_FLAGS if flag in present)
    except OSError:
        pass
    return ""


def node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - the address is informative only
        pass
    return socket.gethostbyname(socket.gethostname())


def node_id() -> str:
    """The Ray node id: tells nodes apart where hostname and IP do not (several nodes on
    one machine, containers sharing a host name); empty outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - informative only
        pass
    return ""


def gpu_model() -> str | None:
    """The CUDA device torch sees, if any."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def describe() -> dict:
    return {
        "gpu_model": gpu_model(),
        "hostname": socket.gethostname(),
        "node_ip": node_ip(),
        "node_id": node_id(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }
