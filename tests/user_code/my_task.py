"""A user task: digits as plain torch TensorDatasets, with macro-F1 as its own metric."""

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score
from torch.utils.data import TensorDataset

import search


def macro_f1(model, loader) -> dict:
    predicted, labels = [], []
    with torch.no_grad():
        for inputs, targets in loader:
            predicted.append(model(inputs).argmax(1))
            labels.append(targets)
    return {"macro_f1": float(f1_score(torch.cat(labels), torch.cat(predicted), average="macro"))}


def make(seed: int) -> search.Task:
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    X = torch.from_numpy((digits.images[order, None] / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target[order].astype(np.int64))
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return search.Task(
        TensorDataset(X[:a], y[:a]), TensorDataset(X[a:b], y[a:b]), TensorDataset(X[b:], y[b:]),
        input_shape=(1, 8, 8), n_classes=10, metrics=macro_f1, name="digits-f1",
    )


def not_a_task(seed: int) -> dict:
    return {"train": []}
