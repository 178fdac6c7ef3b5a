"""Pruning dimension: none, unstructured magnitude, structured channel pruning
(torch-pruning: layers physically shrink), and gradual magnitude pruning during
training on a cubic sparsity ramp (Zhu & Gupta, 2017)."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from search.spec import PruningSpace
from spaces._suggest import suggest_choice, suggest_range


def suggest(trial, bounds: PruningSpace) -> dict:
    kind = suggest_choice(trial, "prune_kind", bounds.kinds)
    if kind == "none":
        return {"prune_kind": "none"}
    return {"prune_kind": kind, "prune_ratio": suggest_range(trial, "prune_ratio", bounds.ratio)}


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    # The classifier keeps all its weights: its outputs are the classes.
    classifier = getattr(model, "classifier", None)
    return [
        (m, "weight")
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not classifier and not _inside_attention(model, m)
    ]


def _inside_attention(model: nn.Module, module: nn.Module) -> bool:
    return any(module is sub for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for sub in mha.modules())


def prune_unstructured(model: nn.Module, ratio: float) -> nn.Module:
    """Global L1 magnitude pruning: the smallest `ratio` of weights become exact zeros.

    The masks stay attached so a fine-tune keeps pruned weights at zero; `finalize`
    bakes them in before quantization or export."""
    prune.global_unstructured(_prunable(model), pruning_method=prune.L1Unstructured, amount=float(ratio))
    return model


def finalize(model: nn.Module) -> nn.Module:
    """Remove pruning reparametrizations: weights become plain tensors with their zeros."""
    for module in model.modules():
        for name in ("weight", "bias"):
            if prune.is_pruned(module) and hasattr(module, f"{name}_orig"):
                prune.remove(module, name)
    return model


def prune_feedforward_units(model: nn.Module, ratio: float) -> int:
    """Structured pruning inside transformer encoder layers: remove the `ratio` of
    feed-forward hidden units (rows of linear1, columns of linear2) with the smallest
    L2 norm over both. The embedding width and the attention heads stay whole, so the
    residual stream and the attention maths are untouched. Returns the layers pruned."""
    pruned = 0
    for layer in model.modules():
        if not isinstance(layer, nn.TransformerEncoderLayer):
            continue
        first, second = layer.linear1, layer.linear2
        hidden = first.out_features
        keep_count = max(1, int(round(hidden * (1 - float(ratio)))))
        if keep_count >= hidden:
            continue
        with torch.no_grad():
            score = first.weight.pow(2).sum(dim=1) + second.weight.pow(2).sum(dim=0)
            if first.bias is not None:
                score = score + first.bias.pow(2)
            keep = score.topk(keep_count).indices.sort().values
            first.weight = nn.Parameter(first.weight[keep].clone())
            if first.bias is not None:
                first.bias = nn.Parameter(first.bias[keep].clone())
            second.weight = nn.Parameter(second.weight[:, keep].clone())
        first.out_features = second.in_features = keep_count
        pruned += 1
    return pruned


def prune_structured(model: nn.Module, ratio: float, example_input: torch.Tensor) -> nn.Module:
    """Remove whole channels/units by L2 magnitude; dependent layers shrink with them.

    Transformers: feed-forward hidden units are pruned (`prune_feedforward_units`);
    attention heads and the embedding width are kept."""
    prune_feedforward_units(model, ratio)
    classifier = getattr(model, "classifier", None)
    ignored = [classifier] if classifier is not None else []
    attention = [m for m in model.modules() if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))]
    if attention:
        # Head and embedding pruning of attention is out of scope: keep the encoder whole.
        ignored += attention + [getattr(model, "patch", None)]
        ignored = [m for m in ignored if m is not None]
    pruner = tp.pruner.BasePruner(
        model,
        example_input,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=float(ratio),
        ignored_layers=ignored,
        unwrapped_parameters=[(model.position, 2)] if hasattr(model, "position") else None,
    )
    pruner.step()
    return model


def sparsity(model: nn.Module) -> float:
    weights = [m.weight for m, _ in _prunable(model)]
    total = sum(w.numel() for w in weights)
    return float(sum((w == 0).sum().item() for w in weights) / total) if total else 0.0


def gradual_target(step: int, total_steps: int, final_ratio: float, begin_fraction: float = 0.1, end_fraction: float = 0.8) -> float:
    """Cubic sparsity ramp: 0 before `begin`, `final_ratio` from `end` on."""
    begin, end = int(begin_fraction * total_steps), max(int(end_fraction * total_steps), 1)
    if step <= begin:
        return 0.0
    if step >= end:
        return float(final_ratio)
    progress = (step - begin) / max(end - begin, 1)
    return float(final_ratio * (1 - (1 - progress) ** 3))


class GradualPruner:
    """Called once per epoch during training; re-applies global magnitude masks at the
    ramp's current sparsity so pruned weights stay zero while the rest keep learning."""

    def __init__(self, model: nn.Module, final_ratio: float, total_epochs: int):
        self.model, self.final_ratio, self.total_epochs = model, final_ratio, total_epochs
        self.targets = _prunable(model)

    def on_epoch_end(self, epoch: int) -> float:
        target = gradual_target(epoch + 1, self.total_epochs, self.final_ratio)
        if target > 0:
            for module, name in self.targets:
                if prune.is_pruned(module):
                    prune.remove(module, name)
            prune.global_unstructured(self.targets, pruning_method=prune.L1Unstructured, amount=target)
        return target

    def finish(self) -> nn.Module:
        return finalize(self.model)


def apply(model: nn.Module, params: dict, example_input: torch.Tensor) -> nn.Module:
    """One-shot pruning after training (gradual pruning happens inside training).
    Call `finalize` after any fine-tune."""
    kind = params.get("prune_kind", "none")
    if kind == "unstructured":
        return prune_unstructured(model, params["prune_ratio"])
    if kind == "structured":
        return prune_structured(model, params["prune_ratio"], example_input)
    return model
