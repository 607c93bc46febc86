"""Render a nested dict as TOML (the small subset a containerd config needs).

Python's tomllib only reads TOML. The containerd config is built as a dict so callers can patch
any key (e.g. add a proxy snapshotter) by deep merge instead of string concatenation, which would
produce duplicate tables.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot render {type(v).__name__} as a TOML value")


def render_toml(doc: Mapping[str, Any]) -> str:
    lines: list[str] = []

    def table(path: list[str], d: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, Mapping)]
        subtables = [(k, v) for k, v in d.items() if isinstance(v, Mapping)]
        if path and (scalars or not subtables):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subtables:
            table(path + [k], v)

    table([], doc)
    return "\n".join(lines).lstrip("\n") + "\n"


def deep_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Return base updated by patch, merging nested mappings; patch values win."""
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out
