"""Model size and compute: parameters (total and non-zero), multiply-accumulates per
inference (counted by forward hooks on the float model), and serialized size."""

from __future__ import annotations

import io

import torch
from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) over parameters and packed int8 weights alike."""
    tensors = list(model.parameters())
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, nn.Parameter):  # quantized modules: weight() unpacks
            try:
                tensors.append(weight())
            except (RuntimeError, TypeError, AttributeError):
                pass
        bias = getattr(module, "bias", None)
        if callable(bias) and not isinstance(bias, nn.Parameter):
            try:
                value = bias()
                if isinstance(value, torch.Tensor):
                    tensors.append(value)
            except (RuntimeError, TypeError, AttributeError):
                pass
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int((t.dequantize() if t.is_quantized else t).count_nonzero()) for t in tensors)
    return total, nonzero


def count_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs per sample by layer type, for a float (unconverted) model."""
    macs = {"conv": 0, "linear": 0, "attention": 0}

    def conv_hook(module, inputs, output):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        macs["conv"] += output[0].numel() * per_output

    def linear_hook(module, inputs, output):
        macs["linear"] += output[0].numel() * module.in_features

    def attention_hook(module, inputs, output):
        query = inputs[0]
        tokens = query.shape[1] if module.batch_first else query.shape[0]
        dim = module.embed_dim
        macs["attention"] += 4 * tokens * dim * dim + 2 * tokens * tokens * dim  # q,k,v,out proj + scores + mix

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear) and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(attention_hook))
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            model(example_input[:1].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return macs


def size_kb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1024
