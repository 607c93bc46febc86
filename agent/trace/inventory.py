"""Image-file inventory: every path an image provides, from the overlay lower dirs of one container.

Taken once per image digest on a background thread. The lower dirs are merged as overlayfs merges
them: the top layer wins, whiteouts (0:0 char devices, or `.wh.<name>` files in layers unpacked
without conversion) hide a path and its subtree, opaque directories (`trusted.overlay.opaque` /
`user.overlay.opaque` = "y", or a `.wh..wh..opq` file) hide everything below them in lower layers,
and a non-directory hides a lower directory's subtree.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Iterable

import pyarrow as pa

from agent.trace import schema
from agent.trace.recorder import path_text

log = logging.getLogger(__name__)

WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")

_TYPE_CHARS = (
    (stat.S_ISREG, "f"),
    (stat.S_ISDIR, "d"),
    (stat.S_ISLNK, "l"),
    (stat.S_ISCHR, "c"),
    (stat.S_ISBLK, "b"),
    (stat.S_ISFIFO, "p"),
    (stat.S_ISSOCK, "s"),
)


def type_char(mode: int) -> str:
    for test, ch in _TYPE_CHARS:
        if test(mode):
            return ch
    return "?"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(dir_path: bytes) -> bool:
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(dir_path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return os.path.lexists(os.path.join(dir_path, WH_OPAQUE))


def merge_layers(lowerdirs: Iterable[bytes]) -> dict[bytes, tuple[os.stat_result, bytes | None]]:
    """Merged view of the layers (top first): image path -> (lstat, symlink target)."""
    seen: dict[bytes, tuple[os.stat_result, bytes | None]] = {}
    # Paths lower layers may neither show nor descend into (whiteouts, opaque dirs, non-dirs).
    sealed: set[bytes] = set()
    hidden: set[bytes] = set()  # whiteouts: the entry itself disappears too
    for layer in lowerdirs:
        if not os.path.isdir(layer):
            log.warning("event=inventory_layer_missing layer=%r", layer)
            continue
        new_sealed: set[bytes] = set()
        new_hidden: set[bytes] = set()
        stack: list[bytes] = [b""]
        while stack:
            rel_dir = stack.pop()
            abs_dir = layer + rel_dir
            try:
                entries = list(os.scandir(abs_dir or b"/"))
            except OSError as e:
                log.warning("event=inventory_dir_unreadable dir=%r error=%s", abs_dir, e)
                continue
            for entry in entries:
                name = entry.name
                if name == WH_OPAQUE:
                    continue  # handled by is_opaque on its directory
                if name.startswith(WH_PREFIX):
                    target = rel_dir + b"/" + name[len(WH_PREFIX) :]
                    new_hidden.add(target)
                    new_sealed.add(target)
                    continue
                path = rel_dir + b"/" + name
                if path in hidden or path in sealed and path not in seen:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if is_whiteout(st):
                    new_hidden.add(path)
                    new_sealed.add(path)
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if path not in seen:
                    target = None
                    if stat.S_ISLNK(st.st_mode):
                        try:
                            target = os.readlink(entry.path)
                        except OSError:
                            target = b""
                    seen[path] = (st, target)
                elif not stat.S_ISDIR(seen[path][0].st_mode):
                    continue  # a higher layer put a non-directory here: nothing below shows
                if is_dir:
                    if path in sealed:
                        continue  # opaque (or whited out) above: this layer's subtree is hidden
                    if is_opaque(entry.path):
                        new_sealed.add(path)
                    stack.append(path)
                else:
                    new_sealed.add(path)
        sealed |= new_sealed
        hidden |= new_hidden
    return seen


def take_inventory(image_digest: str, lowerdirs: Iterable[bytes]) -> pa.Table:
    merged = merge_layers(lowerdirs)
    paths = sorted(merged)
    rows = {"image_digest": [], "path": [], "size": [], "type": [], "link_target": [], "mode": []}
    for p in paths:
        st, target = merged[p]
        rows["image_digest"].append(image_digest)
        rows["path"].append(path_text(p))
        rows["size"].append(st.st_size)
        rows["type"].append(type_char(st.st_mode))
        rows["link_target"].append(path_text(target) if target is not None else None)
        rows["mode"].append(stat.S_IMODE(st.st_mode))
    return pa.Table.from_pydict(rows, schema=schema.INVENTORY)
