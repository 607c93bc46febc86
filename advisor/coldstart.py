"""Cold start: carry a list to a new image version, or give a new service its siblings' reads.

Path mapping onto a new version's inventory: the exact path when it still exists, else the one file
whose path differs only in version numbers (python3.11 → python3.12, libfoo.so.1.2 → libfoo.so.1.3,
cpython-311 → cpython-312). Version numbers are dotted digit runs, a `.so.N` suffix and interpreter
tags; plain digits in names (mod3.py, libx0_12) must match exactly, so unrelated files never merge.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_VERSION_PATTERNS = (
    (re.compile(r"\d+(?:\.\d+)+"), "#"),  # 3.11, 1.2.3 (also in .so.1.2 and python3.11)
    (re.compile(r"(?<=\.so\.)\d+"), "#"),  # libfoo.so.1
    (re.compile(r"(?<=cpython-)\d+"), "#"),  # __pycache__/x.cpython-311.pyc
    (re.compile(r"(?<=python)\d+(?=[/.]|$)"), "#"),  # python3 → python#
)
_DIGITS = re.compile(r"\d+")


def version_key(path: str) -> str:
    for pat, rep in _VERSION_PATTERNS:
        path = pat.sub(rep, path)
    return path


def _numbers(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in _DIGITS.findall(path))


def _closeness(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """Prefer equal leading numbers, then more equal numbers, then the higher version."""
    lead = 0
    for a, b in zip(old, new):
        if a != b:
            break
        lead += 1
    same = sum(a == b for a, b in zip(old, new))
    return lead, same, new


def map_paths(old_paths: pd.Series | np.ndarray, new_paths: pd.Series | np.ndarray) -> pd.DataFrame:
    """For each old path: `new_path` (or None) and `how` in {exact, renamed, unmapped}."""
    old = pd.Series(np.asarray(old_paths, dtype=object), dtype="str")
    new = pd.Series(pd.unique(np.asarray(new_paths, dtype=object)), dtype="str")
    exact = old.isin(set(new))
    out = pd.DataFrame({"old_path": old, "new_path": np.where(exact, old, None), "how": np.where(exact, "exact", "unmapped")})
    todo = ~exact
    if todo.any():
        new_only = new[~new.isin(set(old))]
        by_key: dict[str, list[str]] = {}
        for p, k in zip(new_only, new_only.map(version_key)):
            by_key.setdefault(k, []).append(p)
        for i in np.flatnonzero(todo.to_numpy()):
            cands = by_key.get(version_key(old.iat[i]))
            if not cands:
                continue
            nums = _numbers(old.iat[i])
            best = max(cands, key=lambda c: _closeness(nums, _numbers(c)))
            out.iat[i, 1] = best
            out.iat[i, 2] = "renamed"
    return out
