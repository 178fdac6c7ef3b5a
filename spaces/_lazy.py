"""torch and its kin, imported on first use.

Reading a spec validates every dimension's config model, and none of that needs torch:
the CLI's read commands (status, front, studies, export) and a lookup-table search never
build a model, and `import torch` alone is about 1 CPU-s of each such process. So a
dimension module takes `torch`, `nn` and `F` from here: the first attribute looked up
(`nn.Linear`, `torch.no_grad`) imports the real module, each later one is one more
attribute lookup. A class that subclasses a torch class when it is defined lives in a
module of its own, imported where models are built (spaces._families, spaces._ort)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name` until one of its attributes is looked up."""

    _module: ModuleType | None = None  # a class default: looking it up never recurses

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            # pickle and copy probe for hooks such as __setstate__ and __deepcopy__: the
            # stand-in has none, and answering them must not import the module.
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __reduce__(self) -> tuple:
        return LazyModule, (self._name,)  # pickled by name, as a module is

    def __repr__(self) -> str:
        return f"<{self._name}, {'loaded' if self._module is not None else 'not imported yet'}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
