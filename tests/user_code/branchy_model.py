"""A model whose forward branches on its input's values (data-dependent control flow):
FX symbolic tracing (static/QAT int8) and tracing (TorchScript, ONNX) cannot follow it."""

import math

import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self, in_features: int, hidden: int, n_classes: int):
        super().__init__()
        self.bright = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.dark = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.Tanh())
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.3:
            return self.classifier(self.bright(x))
        return self.classifier(self.dark(x))


def build(params: dict, input_shape: tuple, n_classes: int) -> nn.Module:
    return Branchy(math.prod(input_shape), int(params["hidden"]), n_classes)
