"""A user model: an MLP as nn.Sequential, its output layer found by its class count."""

import math

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
NOT_CALLABLE = 42


def build(params: dict, input_shape: tuple, n_classes: int) -> nn.Module:
    act = ACTIVATIONS[params["act"]]
    hidden = int(params["hidden"])
    layers = [nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), act()]
    for _ in range(int(params["layers"]) - 1):
        layers += [nn.Linear(hidden, hidden), act()]
    layers.append(nn.Linear(hidden, n_classes))
    return nn.Sequential(*layers)


def build_dict(params, input_shape, n_classes):
    return {"not": "a module"}


def build_wrong_shape(params, input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes + 1))
