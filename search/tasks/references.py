"""References to the user's code: `"my_model.py:build"` (a file, relative to the
spec) or `"package.module:build"` (an import), loaded into an object; and the
reverse, a reference that finds a Python object again.

A module loaded from a file is registered with Ray's cloudpickle for pickling by
value, so trials never need the user's files on their disk.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spaces
from search.core.errors import UsageError
from search.core.spec import is_file_reference

UNNAMED = "<python>"  # where a callable passed from Python cannot be found again


def _module_from_file(path: Path, key: str):
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"paretune_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{key}: {path}: cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The file may import modules beside it (on a local Ray the workers share this path).
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in user code is the user's to fix
        del sys.modules[name]
        raise UsageError(f"{key}: {path} raised on import: {spaces.first_line(exc)}") from None
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def load_reference(text: str, key: str) -> Any:
    """The object `file.py:name` or `module.path:name` names; UsageError naming `key`
    when the file is missing, raises on import, or lacks the name."""
    where, _, name = text.rpartition(":")
    if where == UNNAMED:
        raise UsageError(f"{key}: {name} was given as a Python object; pass it again (e.g. search.train(..., {key.split('.')[0]}=...))")
    if is_file_reference(text):
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"{key}: {path}: no such file")
        module = _module_from_file(path, key)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{key}: cannot import {where} ({spaces.first_line(exc)})") from None
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{key}: {where} has no {name!r}")
        target = getattr(target, part)
    return target


def checked_callable(value: Any, text: str, key: str) -> Callable:
    if not callable(value):
        raise UsageError(f"{key}: {text} is a {type(value).__name__}, not callable")
    return value


def _installed(path: Path) -> bool:
    """Inside the interpreter's own or installed packages (not the user's project)."""
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return any(path.is_relative_to(root) for root in roots)


def reference_of(obj: Any) -> str:
    """A spec reference that finds `obj` again: `/abs/file.py:name` for the user's code
    in a file (a script, or a module of their project), `module:name` for an installed
    package, `<python>:name` when it cannot be found (a lambda, a local function)."""
    name = getattr(obj, "__qualname__", None) or getattr(type(obj), "__qualname__", "object")
    if "<" in name:
        return f"{UNNAMED}:{name.replace('<', '').replace('>', '').replace('.', '_')}"
    module = getattr(obj, "__module__", None) or type(obj).__module__
    try:
        source = inspect.getsourcefile(obj if callable(obj) or inspect.isclass(obj) else type(obj))
    except TypeError:
        source = None
    if source and not _installed(Path(source).resolve()):
        return f"{Path(source).resolve().as_posix()}:{name}"
    if module == "__main__" or not source:
        return f"{UNNAMED}:{name}"
    return f"{module}:{name}"
