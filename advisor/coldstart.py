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


def _common_dirs(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/")[1:-1], b.split("/")[1:-1]):
        if x != y:
            break
        n += 1
    return n


MIN_SHARED_DIRS = 3  # a moved file must stay under e.g. /usr/lib/python3 to count as the same file


def map_paths(old_paths: pd.Series | np.ndarray, new_paths: pd.Series | np.ndarray) -> pd.DataFrame:
    """For each old path: `new_path` (or None) and `how` in {exact, renamed, moved, unmapped}.

    moved: the same file name up to versions, in another directory of the same tree (a package
    reorganised, e.g. numpy/core/x.py → numpy/_core/x.py): the candidate sharing the longest
    directory prefix (at least MIN_SHARED_DIRS components), when that best candidate is unique.
    """
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
    todo = out["how"].to_numpy() == "unmapped"
    if todo.any():
        taken = set(out["new_path"].dropna())
        free = new[~new.isin(set(old)) & ~new.isin(taken)]
        by_name: dict[str, list[str]] = {}
        for p in free:
            by_name.setdefault(version_key(p.rsplit("/", 1)[1]), []).append(p)
        for i in np.flatnonzero(todo):
            o = old.iat[i]
            cands = by_name.get(version_key(o.rsplit("/", 1)[1]))
            if not cands:
                continue
            scored = sorted(((_common_dirs(o, c), c) for c in cands), reverse=True)
            best_score, best = scored[0]
            if best_score >= MIN_SHARED_DIRS and (len(scored) == 1 or scored[1][0] < best_score):
                out.iat[i, 1] = best
                out.iat[i, 2] = "moved"
    return out
