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
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }
