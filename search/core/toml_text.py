"""A small TOML writer (strings, numbers, booleans, dates, arrays, nested tables): the
text of exported configs and staged specs. The standard library reads TOML
(tomllib) but does not write it.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form, always with '.' or 'e'
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Path):
        return _string(str(value))
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(data: dict, comments: dict[str, str] | None = None) -> str:
    """TOML text for `data`; nested dicts become [tables]; `comments` maps a table path to
    a comment line written above it. Empty tables are kept (they are meaningful)."""
    comments = comments or {}
    lines: list[str] = []

    def inline(value: Any, path: str) -> bool:
        # Small leaf tables two levels down (ranges like width = {low = 8, high = 64})
        # read best inline, as in a hand-written spec.
        return isinstance(value, dict) and "." in path and not any(isinstance(v, dict) for v in value.values())

    def emit(table: dict, path: str) -> None:
        scalars = [(k, v) for k, v in table.items() if (not isinstance(v, dict) or inline(v, path)) and v is not None]
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict) and not inline(v, path)]
        if path and (scalars or not tables or path in comments):  # [a] is implied by [a.b]
            if lines:
                lines.append("")
            if path in comments:
                lines.append(f"# {comments[path]}")
            lines.append(f"[{path}]")
        for key, value in scalars:
            lines.append(f"{_key(str(key))} = {_value(value)}")
        for key, value in tables:
            emit(value, f"{path}.{_key(str(key))}" if path else _key(str(key)))

    emit(data, "")
    return "\n".join(lines) + "\n"
