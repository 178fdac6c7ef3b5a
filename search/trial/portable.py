"""Models as bytes, so a trial can hand its deployable model to another node.

Plain pickling is not enough on torch 2.13: a quantized module (e.g. the fused
`ConvReLU2d` of an FX-quantized CNN) pickles its own state tuple but not the
`nn.Module` internals, so unpickling fails ("object has no attribute '_modules'"), and
TorchScript modules refuse pickling altogether. Here:

- TorchScript modules go through `torch.jit.save` / `torch.jit.load`;
- any module with its own `__setstate__` is rebuilt as `nn.Module.__init__` first, then
  its `__setstate__`, so quantized modules come back whole;
- everything else (eager models, FX GraphModules, the ONNX Runtime wrapper, which
  drops and reopens its session itself) pickles as usual, with cloudpickle for
  classes defined at run time.
"""

from __future__ import annotations

import io
import pickle

import torch
from torch import nn

_SCRIPT = b"jit:"
_PICKLE = b"pkl:"


def _rebuild(cls: type, state: object) -> nn.Module:
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    module.__setstate__(state)
    return module


def _pickler_class():
    from ray import cloudpickle

    class ModulePickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            if (
                isinstance(obj, nn.Module)
                and not isinstance(obj, torch.jit.ScriptModule)
                and type(obj).__setstate__ is not nn.Module.__setstate__
            ):
                # The module's children are arguments, so they are whole before it is.
                return _rebuild, (type(obj), obj.__getstate__())
            return super().reducer_override(obj)

    return ModulePickler


def dumps(model: nn.Module) -> bytes:
    if isinstance(model, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        return _SCRIPT + buffer.getvalue()
    buffer = io.BytesIO()
    _pickler_class()(buffer, protocol=5).dump(model)
    return _PICKLE + buffer.getvalue()


def loads(data: bytes) -> nn.Module:
    kind, body = data[:4], data[4:]
    if kind == _SCRIPT:
        return torch.jit.load(io.BytesIO(body))
    if kind == _PICKLE:
        return pickle.loads(body)
    raise ValueError(f"not a serialized model (prefix {kind!r})")
