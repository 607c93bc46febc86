"""An image's file inventory read from its OCI archive: layers applied in order, whiteouts honoured.

This is the image as containerd unpacks it, independent of the agent's own inventory (taken from
overlay lower dirs), so the corpus test can check the agent's traces against it.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from pathlib import Path

import pyarrow as pa

from agent.trace.schema import INVENTORY

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_TYPE = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.LNKTYPE: "f", tarfile.SYMTYPE: "l",
         tarfile.DIRTYPE: "d", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p",
         tarfile.CONTTYPE: "f"}


def _norm(name: str) -> str:
    path = "/" + posixpath.normpath(name.lstrip("./").lstrip("/")) if name.strip("./") else "/"
    return "/" if path in ("/.", "//") else path


def _drop_subtree(entries: dict[str, tuple], path: str, keep_self: bool) -> None:
    prefix = path.rstrip("/") + "/"
    for p in [p for p in entries if p.startswith(prefix) or (p == path and not keep_self)]:
        del entries[p]


def apply_layer(entries: dict[str, tuple], layer: tarfile.TarFile) -> None:
    """Lay one layer tar over `entries` (path → (size, type, link_target, mode))."""
    members = layer.getmembers()
    # Whiteouts in a layer act on the layers below it, so apply them before its own entries.
    for m in members:
        path = _norm(m.name)
        base = posixpath.basename(path)
        parent = posixpath.dirname(path)
        if base == OPAQUE:
            _drop_subtree(entries, parent, keep_self=True)
        elif base.startswith(WHITEOUT):
            _drop_subtree(entries, posixpath.join(parent, base[len(WHITEOUT):]), keep_self=False)
    sizes: dict[str, int] = {}
    for m in members:
        path = _norm(m.name)
        if posixpath.basename(path).startswith(WHITEOUT):
            continue
        kind = _TYPE.get(m.type)
        if kind is None:
            continue
        if m.type == tarfile.LNKTYPE:  # a hard link is the same file: same size, no target
            target = _norm(m.linkname)
            size = sizes.get(target, entries.get(target, (0,))[0])
            entries[path] = (size, "f", None, m.mode)
            continue
        if kind != "d" and entries.get(path, (0, ""))[1] == "d":
            # A non-directory replaces a lower directory and everything in it; a directory seen
            # again keeps its lower contents.
            _drop_subtree(entries, path, keep_self=True)
        size = m.size if kind == "f" else 0
        sizes[path] = size
        entries[path] = (size, kind, m.linkname if kind == "l" else None, m.mode & 0o7777)


def inventory_from_archive(archive: Path, digest: str | None = None) -> pa.Table:
    """Inventory of the single image in an OCI image-layout tar, keyed by its manifest digest."""
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        manifest_desc = index["manifests"][0]
        manifest_digest = manifest_desc["digest"]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{manifest_digest[7:]}"))
        entries: dict[str, tuple] = {}
        for layer in manifest["layers"]:
            blob = outer.extractfile(f"blobs/sha256/{layer['digest'][7:]}")
            mode = "r|gz" if layer["mediaType"].endswith("gzip") else "r|"
            with tarfile.open(fileobj=blob, mode=mode) as lt:
                apply_layer(entries, _Materialised(lt))
    entries.pop("/", None)
    paths = sorted(entries)
    return pa.table(
        {
            "image_digest": [digest or manifest_digest] * len(paths),
            "path": paths,
            "size": [entries[p][0] for p in paths],
            "type": [entries[p][1] for p in paths],
            "link_target": [entries[p][2] for p in paths],
            "mode": [entries[p][3] for p in paths],
        },
        schema=INVENTORY,
    )


class _Materialised:
    """A streamed tar's member list (streamed tars cannot be iterated twice)."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._members = list(tar)

    def getmembers(self) -> list[tarfile.TarInfo]:
        return self._members
