"""Start from trained weights (`[model] weights`): load them once, check they fit.

A weights source is a file torch can load (a state dict, or a checkpoint dict holding
one under `state_dict` / `model_state_dict` / `model`), or `file.py:load` (a function
of no arguments returning a state dict or a module). The weights belong to the model
built with the study's baseline params (search.tasks.baseline); with them a search skips
the training from scratch and searches what can be done to that model (pruning and
its fine-tune, quantization, the runtime, the fine-tune's recipe).

They are read once in the driver and travel to the workers with the rest of the
user's code (`Plugins.weights`, through Ray's object store).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from search.core.errors import UsageError
from search.tasks.references import load_reference

KEY = "model.weights"
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")


def _state_dict(value, source: str) -> dict[str, torch.Tensor]:
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(value.get(key), (dict, nn.Module)):
                return _state_dict(value[key], source)
        if value and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
            return value
    raise UsageError(
        f"{KEY}: {source} holds {type(value).__name__}, not a state dict (or a checkpoint with "
        f"{', '.join(CHECKPOINT_KEYS)}) of tensors"
    )


def load(source: str) -> dict[str, torch.Tensor]:
    """The state dict `source` names, on the CPU; UsageError naming the file otherwise."""
    _, sep, name = source.rpartition(":")
    if sep and name.isidentifier() and not Path(source).exists():  # file.py:load or package.module:load
        loader = load_reference(source, KEY)
        try:
            value = loader()
        except Exception as exc:  # noqa: BLE001 - the user's code failed: say where
            raise UsageError(f"{KEY}: {source} raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        return {k: v.detach().cpu() for k, v in _state_dict(value, source).items()}
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{KEY}: {path}: no such file")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, or one holding code objects
        raise UsageError(f"{KEY}: {path}: cannot be read as saved tensors ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]}); save model.state_dict()") from None
    return _state_dict(value, str(path))


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why `state` does not fit `model` (the first keys or shapes that differ), or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]
    parts = []
    if shapes:
        key, theirs, ours = shapes[0]
        parts.append(f"{key} is {list(theirs)} in the weights but {list(ours)} in the model"
                     + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    return "; ".join(parts) or None


def apply(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load `state` into `model` (strict: every key, every shape)."""
    model.load_state_dict(state, strict=True)
    return model


def frozen(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with no gradients (what a dimension may hold fixed
    beside the trained model, e.g. as a reference to learn from)."""
    copied = copy.deepcopy(model).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def params_words(params: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
