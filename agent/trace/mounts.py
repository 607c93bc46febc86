"""Where a container's root filesystem lives: its overlay layers and its mount points on the host.

Read from /proc/<pid>/mountinfo (the container's view, where its root is "/") and
/proc/self/mountinfo (ours, to find the host path of the same overlay, e.g. containerd's
.../rootfs). Never called on the NRI handler path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_OCTAL = re.compile(rb"\\([0-7]{3})")


def unescape(field_: bytes) -> bytes:
    """Undo the kernel's octal escaping in mountinfo fields (\\040 for space, \\134 for backslash...)."""
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field_)


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    dev: str  # "major:minor"
    root: bytes
    mount_point: bytes
    fstype: str
    source: bytes
    super_options: bytes


def parse_mountinfo(text: bytes) -> list[MountEntry]:
    """Parse mountinfo lines; malformed lines are skipped with a debug log."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        parts = line.split(b" ")
        try:
            sep = parts.index(b"-", 6)
            out.append(
                MountEntry(
                    mount_id=int(parts[0]),
                    parent_id=int(parts[1]),
                    dev=parts[2].decode(),
                    root=unescape(parts[3]),
                    mount_point=unescape(parts[4]),
                    fstype=parts[sep + 1].decode(errors="replace"),
                    source=unescape(parts[sep + 2]),
                    super_options=parts[sep + 3] if len(parts) > sep + 3 else b"",
                )
            )
        except (ValueError, IndexError):
            log.debug("event=mountinfo_line_skipped line=%r", line[:200])
    return out


def split_options(opts: bytes) -> dict[bytes, bytes]:
    """Split super options on unescaped commas ("\\," stays inside a value), values unescaped."""
    out: dict[bytes, bytes] = {}
    for item in re.split(rb"(?<!\\),", opts):
        key, _, value = item.partition(b"=")
        out[key] = unescape(value.replace(b"\\,", b","))
    return out


def split_lowerdirs(value: bytes) -> list[bytes]:
    """Overlay lowerdir list, top layer first. "::" (data-only layers) and "\\:" are handled."""
    layers = [p.replace(b"\\:", b":") for p in re.split(rb"(?<!\\):+", value)]
    return [p for p in layers if p]


@dataclass(frozen=True)
class ContainerRoot:
    """The container's root mount as the host sees it."""

    dev: str
    fstype: str
    upperdir: bytes | None  # None when the root is not an overlay (or has no upper layer)
    lowerdirs: tuple[bytes, ...] = ()
    host_mount_points: tuple[bytes, ...] = field(default=())  # same fs, mounted in our namespace

    @property
    def is_overlay(self) -> bool:
        return self.fstype == "overlay"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def find_container_root(pid: int, own_mountinfo: bytes | None = None) -> ContainerRoot | None:
    """Describe the root mount of process `pid`; None (and a log line) when it cannot be read."""
    try:
        theirs = parse_mountinfo(_read(f"/proc/{pid}/mountinfo"))
    except OSError as e:
        log.info("event=container_root_unreadable pid=%d error=%s", pid, e)
        return None
    # The last entry mounted on "/" is the one visible (later mounts stack on earlier ones).
    roots = [m for m in theirs if m.mount_point == b"/"]
    if not roots:
        log.info("event=container_root_not_found pid=%d", pid)
        return None
    root = roots[-1]
    upper: bytes | None = None
    lowers: tuple[bytes, ...] = ()
    if root.fstype == "overlay":
        opts = split_options(root.super_options)
        upper = opts.get(b"upperdir") or None
        lowers = tuple(split_lowerdirs(opts.get(b"lowerdir", b"")))
        relative = [p for p in (upper, *lowers) if p and not p.startswith(b"/")]
        if relative:
            # containerd shortens long option strings with relative layer paths; we cannot resolve them.
            log.warning("event=overlay_relative_layers pid=%d example=%r", pid, relative[0])
            upper = upper if upper and upper.startswith(b"/") else None
            lowers = tuple(p for p in lowers if p.startswith(b"/"))
    try:
        ours = parse_mountinfo(own_mountinfo if own_mountinfo is not None else _read("/proc/self/mountinfo"))
    except OSError:
        ours = []
    host_points = tuple(m.mount_point for m in ours if m.dev == root.dev and m.root == root.root)
    return ContainerRoot(dev=root.dev, fstype=root.fstype, upperdir=upper, lowerdirs=lowers, host_mount_points=host_points)
