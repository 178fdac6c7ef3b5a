"""Top-1 accuracy on a held-out split."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from objectives._measurement import Measurement


def predict(model: nn.Module, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(X), batch_size):
            outputs.append(model(torch.from_numpy(X[start : start + batch_size])).argmax(dim=1).numpy())
    return np.concatenate(outputs)


def measure(model: nn.Module, X: np.ndarray, y: np.ndarray) -> Measurement:
    correct = predict(model, X) == y
    return Measurement(float(correct.mean()), "fraction", "top-1", {"samples": int(len(y))})
