"""Finding the layers of any model (built-in or the user's) that compression must treat
with care: the output layer, whose outputs are the classes, and attention blocks."""

from __future__ import annotations

from spaces._lazy import nn


def output_layers(model: nn.Module, n_classes: int | None = None) -> list[nn.Module]:
    """Layers whose outputs are the classes: `model.classifier` where it exists, else
    every Linear with `n_classes` outputs (and Conv2d with `n_classes` channels, for
    all-convolutional heads). Pruning keeps them whole."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module):
        return [classifier]
    if n_classes is None:
        return []
    return [
        m for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == n_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == n_classes)
    ]


def classifier_of(model: nn.Module, n_classes: int | None = None) -> nn.Module | None:
    """The last output layer: its input is the model's penultimate features."""
    layers = output_layers(model, n_classes)
    return layers[-1] if layers else None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))]


def inside_attention(model: nn.Module, module: nn.Module) -> bool:
    return any(module is sub for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for sub in mha.modules())


def infer_classes(model: nn.Module) -> int | None:
    """n_classes from a model's output layer when it names one (`classifier`)."""
    classifier = getattr(model, "classifier", None)
    return getattr(classifier, "out_features", None)
