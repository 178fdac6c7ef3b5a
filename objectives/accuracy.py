"""Top-1 accuracy on a held-out split, and predictions for any model that maps a float
batch to logits (a torch model, TorchScript, or an ONNX Runtime session wrapper)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from objectives._measurement import Measurement


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for parameter-less wrappers)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def predict(model: nn.Module, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) for every sample of `batches` ((inputs, labels) pairs)."""
    model.eval()
    device = device_of(model)
    predicted, labels = [], []
    with torch.inference_mode():
        for inputs, targets in batches:
            predicted.append(model(inputs.to(device)).argmax(dim=1).cpu().numpy())
            labels.append(np.asarray(targets))
    if not predicted:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(predicted), np.concatenate(labels)


def measure(model: nn.Module, batches: Iterable) -> Measurement:
    predicted, labels = predict(model, batches)
    value = float((predicted == labels).mean()) if len(labels) else float("nan")
    return Measurement(value, "fraction", "top-1", {"samples": int(len(labels))})
