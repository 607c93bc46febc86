"""Prefetch lists in nydusd's `--prefetch-files` format, and the node-local store that versions them.

This module is the ONE place that knows what nydusd accepts in a prefetch list (see
shared/reference/nydus-handoff.md). The advisor writes lists through it and the agent's injector
validates annotation-supplied lists through it; neither side re-implements the rules.

nydusd reads the file as UTF-8, splits on newlines, trims each line, skips blank lines, rejects the
whole list (and fails the mount) on one relative entry, and silently drops entries it cannot find by
walking the image's directory tree by name without following symlinks. So an entry we emit must be an
absolute, canonical, UTF-8 path without newline/NUL/surrounding whitespace, and (given an image
inventory) one that names a real directory or non-empty regular file with no symlink on the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

# Why reasons are short stable strings: they become the `reason` label of the rejection counters
# and appear in logs and reports; tests assert them.
REASON_NOT_STR = "not_text"
REASON_NOT_UTF8 = "not_utf8"
REASON_NUL = "nul"
REASON_NEWLINE = "newline"
REASON_WHITESPACE = "whitespace"
REASON_RELATIVE = "relative"
REASON_ROOT = "root"
REASON_DOTDOT = "dotdot"
REASON_TOO_LONG = "too_long"
REASON_MISSING = "missing"  # not in the image inventory: nydusd would drop it silently
REASON_SPECIAL = "special"  # symlink, device, fifo, socket: nydusd skips these
REASON_EMPTY_FILE = "empty_file"  # nydusd skips empty files
REASON_SYMLINK_LOOP = "symlink_loop"

# Linux PATH_MAX and NAME_MAX: a longer path, or a longer component, cannot exist in any image, so
# nydusd would drop the entry silently.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
# How many rejected entries a PrefetchList keeps verbatim for logs and reports (counts are complete).
MAX_KEPT_REJECTIONS = 50
_MAX_SYMLINK_HOPS = 40  # same bound as the Linux kernel

# Rust's char::is_whitespace (what nydusd's trim uses) is Unicode White_Space; Python's isspace also
# counts \x1c-\x1f. Refusing either keeps us strictly inside what nydusd leaves untouched.
# Line breaks: nydusd splits on \n (and drops a \r before it). The other characters that some line
# splitters break on (\v \f \x1c-\x1e NEL LS PS) are refused too, so no reader of the file, ours,
# nydusd's or a human's editor, can see a different list of lines than we wrote.
_NEWLINES = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def check_entry(path: object, *, allow_root: bool = False) -> str | None:
    """Return why `path` cannot be a prefetch-list line (a REASON_* string), or None if it can.

    This checks the text only; canonical form against an image is ImageInventory's job.
    """
    if not isinstance(path, str):
        return REASON_NOT_STR
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a non-UTF-8 name decoded with surrogateescape
        return REASON_NOT_UTF8
    if "\x00" in path:
        return REASON_NUL
    if any(nl in path for nl in _NEWLINES):
        return REASON_NEWLINE
    if path != path.strip() or (path and (_rust_space(path[0]) or _rust_space(path[-1]))):
        return REASON_WHITESPACE
    if not path.startswith("/"):
        return REASON_RELATIVE
    if len(encoded) > MAX_PATH_BYTES:
        return REASON_TOO_LONG
    parts = [p for p in path.split("/") if p]
    if ".." in parts:
        return REASON_DOTDOT
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        return REASON_TOO_LONG
    if not [p for p in parts if p != "."] and not allow_root:
        return REASON_ROOT
    return None


def _rust_space(ch: str) -> bool:
    return ch.isspace() or ch in "\u0085\u00a0\u1680\u180e\u2000\u2028\u2029\u202f\u205f\u3000"


def normalize_entry(path: str) -> str:
    """Collapse `//`, `.` components and a trailing `/` (callers have already run check_entry)."""
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)


# ---------------------------------------------------------------------------------------------------
# Image inventory: enough of an image's tree to resolve symlinks the way a path walk inside it would.


@dataclasses.dataclass(frozen=True, slots=True)
class InventoryEntry:
    type: str  # f d l c b p s, as in the trace schema's inventory table
    size: int = 0
    link_target: str | None = None


class ImageInventory:
    """The file tree of one image, for canonicalising list entries.

    Built from the trace schema's inventory rows (path, type, size, link_target).
    """

    def __init__(self, entries: Mapping[str, InventoryEntry]) -> None:
        self._entries = dict(entries)
        # Inventories need not list directories explicitly; every parent of an entry is one.
        for path in list(self._entries):
            parent = path.rsplit("/", 1)[0]
            while parent and parent not in self._entries:
                self._entries[parent] = InventoryEntry("d")
                parent = parent.rsplit("/", 1)[0]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, int | None, str | None]]) -> ImageInventory:
        out: dict[str, InventoryEntry] = {}
        for path, typ, size, target in rows:
            if not isinstance(path, str) or check_entry(path, allow_root=True) is not None:
                continue
            out[normalize_entry(path)] = InventoryEntry(str(typ), int(size or 0), target or None)
        return cls(out)

    @classmethod
    def from_frame(cls, frame: Any) -> ImageInventory:
        """From a pandas DataFrame with the INVENTORY schema's columns (one image's rows)."""
        size = frame["size"] if "size" in frame else [0] * len(frame)
        target = frame["link_target"] if "link_target" in frame else [None] * len(frame)
        return cls.from_rows(zip(frame["path"], frame["type"], size, target))

    def __contains__(self, path: str) -> bool:
        return path in self._entries or path == "/"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str) -> InventoryEntry | None:
        if path == "/":
            return self._entries.get("/", InventoryEntry("d"))
        return self._entries.get(path)

    def resolve(self, path: str) -> tuple[str | None, str | None]:
        """Resolve every symlink in `path` inside the image: (canonical path, None) or (None, reason).

        The final component is resolved too, since nydusd skips a symlink entry but would fetch
        its target.
        """
        pending = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = "/" + "/".join([*done, name])
            entry = self._entries.get(candidate)
            if entry is None:
                return None, REASON_MISSING
            if entry.type == "l":
                hops += 1
                if hops > _MAX_SYMLINK_HOPS or not entry.link_target:
                    return None, REASON_SYMLINK_LOOP if entry.link_target else REASON_SPECIAL
                target = entry.link_target
                if target.startswith("/"):
                    done = []
                pending = [p for p in target.split("/") if p and p != "."] + pending
                continue
            if pending and entry.type != "d":
                return None, REASON_MISSING
            done.append(name)
        canonical = "/" + "/".join(done)
        entry = self.get(canonical)
        if entry is None:
            return None, REASON_MISSING
        if entry.type == "f" and entry.size == 0:
            return None, REASON_EMPTY_FILE
        if entry.type not in ("f", "d"):
            return None, REASON_SPECIAL
        return canonical, None


# ---------------------------------------------------------------------------------------------------
# The list itself.


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    entry: str  # repr() of the offending value, safe to log
    reason: str


class PrefetchList:
    """An ordered, deduplicated list of absolute canonical image paths nydusd will accept.

    Adding an entry nydusd would refuse or drop skips it and counts the reason in `skipped`; the
    list never holds an invalid entry, so whatever `render()` returns is safe to hand to nydusd.
    """

    def __init__(
        self,
        entries: Iterable[object] = (),
        *,
        inventory: ImageInventory | None = None,
        allow_root: bool = False,
    ) -> None:
        self._entries: list[str] = []
        self._seen: set[str] = set()
        self.inventory = inventory
        self.allow_root = allow_root
        self.skipped: Counter[str] = Counter()
        self.rejections: list[Rejection] = []
        self.duplicates = 0
        for e in entries:
            self.add(e)

    def add(self, path: object) -> str | None:
        """Append `path` if valid; return None on success (or duplicate), else the reason."""
        reason = check_entry(path, allow_root=self.allow_root)
        canonical: str | None = None
        if reason is None:
            assert isinstance(path, str)
            canonical = normalize_entry(path)
            if self.inventory is not None:
                canonical, reason = self.inventory.resolve(canonical)
                if reason is None and canonical == "/" and not self.allow_root:
                    reason = REASON_ROOT
        if reason is not None:
            self.skipped[reason] += 1
            if len(self.rejections) < MAX_KEPT_REJECTIONS:
                self.rejections.append(Rejection(_safe_repr(path), reason))
            return reason
        assert canonical is not None
        if canonical in self._seen:
            self.duplicates += 1
            return None
        self._seen.add(canonical)
        self._entries.append(canonical)
        return None

    def extend(self, paths: Iterable[object]) -> None:
        for p in paths:
            self.add(p)

    @property
    def entries(self) -> tuple[str, ...]:
        return tuple(self._entries)

    @property
    def valid(self) -> bool:
        """True when nothing was skipped: every input entry made it in (duplicates aside)."""
        return not self.skipped

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._seen

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefetchList) and self._entries == other._entries

    def __repr__(self) -> str:
        return f"PrefetchList({len(self._entries)} entries, skipped={dict(self.skipped)})"

    def render(self) -> str:
        """The file body: one path per line, UTF-8-encodable, trailing newline (empty list: "")."""
        return "".join(e + "\n" for e in self._entries)

    def to_bytes(self) -> bytes:
        return self.render().encode("utf-8")

    def write_atomic(self, path: str | os.PathLike[str], *, mode: int = 0o644, durable: bool = True) -> Path:
        """Write the list so a reader sees either the old file or the complete new one."""
        return write_bytes_atomic(Path(path), self.to_bytes(), mode=mode, durable=durable)

    @classmethod
    def parse(
        cls,
        text: str | bytes,
        *,
        inventory: ImageInventory | None = None,
        allow_root: bool = False,
    ) -> PrefetchList:
        """Read a list file body with the same rules as `add`.

        Blank (or whitespace-only) lines are skipped, as nydusd does; a line with surrounding whitespace is rejected
        rather than trimmed, because a name that really ends in a space cannot be told apart from
        an editing slip. A trailing CR before LF is a line ending, not part of the name.
        """
        plist = cls(inventory=inventory, allow_root=allow_root)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                plist.skipped[REASON_NOT_UTF8] += 1
                plist.rejections.append(Rejection("<file>", REASON_NOT_UTF8))
                return plist
        for line in text.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if all(_rust_space(ch) for ch in line):
                continue  # blank after nydusd's trim: it skips such a line too
            plist.add(line)
        return plist

    @classmethod
    def read(cls, path: str | os.PathLike[str], **kwargs: Any) -> PrefetchList:
        return cls.parse(Path(path).read_bytes(), **kwargs)


def _safe_repr(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 200 else r[:197] + "..."


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> Path:
    """temp file in the same directory + fsync + rename + fsync(dir).

    durable=False skips both fsyncs: readers still see the old file or the whole new one, but a
    power loss may take the write back. For files only read while this boot lasts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError as e:  # some filesystems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------------------------------
# The store.

PIN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always use fullmatch
_VERSION_RE = re.compile(r"v(\d{6,})\.list")  # fullmatch


def encode_component(value: str) -> str:
    """A reversible, filesystem-safe single path component for a service name or image key.

    Service names hold '/', image refs ':' and '@'. Percent-encoding keeps them readable; a
    leading '.' is encoded so '.' and '..' can never appear. Over-long values get a hash suffix
    (and are then not reversible, which `decode_component` reports as None).
    """
    enc = quote(value, safe="").replace("~", "%7E")  # '~' marks a hashed (irreversible) name
    if enc.startswith("."):
        enc = "%2E" + enc[1:]
    if len(enc.encode()) > 200:
        enc = enc[:150] + "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return enc


def decode_component(enc: str) -> str | None:
    return None if "~" in enc else unquote(enc)


def pin_name_for(service: str, image: str) -> str:
    """Default name of a pin: readable slug plus a hash that keeps different keys apart."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", service).strip("._-")[:80] or "pin"
    digest = hashlib.sha256(f"{service}\x00{image}".encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


@dataclasses.dataclass(frozen=True)
class StoredList:
    service: str
    image: str  # image digest for learned lists; digest or normalised ref for pins
    version: int | None  # None for a pin
    pinned: bool
    name: str | None  # pin name
    list_path: Path
    report_path: Path
    created_at: float

    def load(self) -> PrefetchList:
        return PrefetchList.read(self.list_path)

    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text(encoding="utf-8"))


class ListStore:
    """Prefetch lists on local disk, versioned per (service, image digest), plus hand-made pins.

    Layout under `root`:
        GENERATION                      integer bumped on every change (cheap change signal)
        .lock                           flock for writers (advisor CLI and agent may share a root)
        learned/<svc>/<digest>/v000001.list + v000001.json
        pins/<name>.list + <name>.json  (json holds service and image)
    A version's .list is renamed into place after its .json, so a visible .list is complete.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._learned = self.root / "learned"
        self._pins = self.root / "pins"

    # -- change signal -------------------------------------------------------------------------
    def generation(self) -> int:
        """Bumped by every put, pin and remove; poll it to pick changes up without restarting."""
        try:
            return int((self.root / "GENERATION").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _bump(self) -> int:
        gen = self.generation() + 1
        write_bytes_atomic(self.root / "GENERATION", f"{gen}\n".encode())
        return gen

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- learned lists -------------------------------------------------------------------------
    def put(
        self,
        service: str,
        image_digest: str,
        plist: PrefetchList,
        report: Mapping[str, Any] | None = None,
    ) -> int:
        """Store a new version; returns its number (1, 2, ...).

        A list identical to the latest version is not stored again (its number is returned), so
        rebuilding from the same traces neither grows the store nor wakes the agents' caches.
        """
        _require_key(service, "service")
        _require_key(image_digest, "image_digest")
        directory = self._learned / encode_component(service) / encode_component(image_digest)
        with self._locked():
            latest = max(self._versions(directory), default=0)
            if latest and _read_or_none(directory / f"v{latest:06d}.list") == plist.to_bytes():
                return latest
            version = latest + 1
            stem = f"v{version:06d}"
            meta = {
                **dict(report or {}),
                "service": service,
                "image_digest": image_digest,
                "version": version,
                "created_at": time.time(),
                "entries_count": len(plist),
                "skipped": dict(plist.skipped),
            }
            write_bytes_atomic(directory / f"{stem}.json", _json_bytes(meta))
            plist.write_atomic(directory / f"{stem}.list")
            self._bump()
        log.info("list stored service=%s image_digest=%s version=%d entries=%d", service, image_digest, version, len(plist))
        return version

    def _versions(self, directory: Path) -> list[int]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            m = _VERSION_RE.fullmatch(n)
            if m and (directory / f"v{m.group(1)}.json").exists():
                out.append(int(m.group(1)))
        return sorted(out)

    def _learned_entry(self, service: str, digest_dir: Path, version: int) -> StoredList:
        stem = f"v{version:06d}"
        lp, rp = digest_dir / f"{stem}.list", digest_dir / f"{stem}.json"
        image = decode_component(digest_dir.name) or digest_dir.name
        try:
            created = float(json.loads(rp.read_text(encoding="utf-8")).get("created_at", 0.0))
        except (OSError, ValueError, AttributeError):
            created = lp.stat().st_mtime if lp.exists() else 0.0
        return StoredList(service, image, version, False, None, lp, rp, created)

    def history(self, service: str, image_digest: str | None = None) -> list[StoredList]:
        """Every learned version of the service (optionally one image), oldest first."""
        sdir = self._learned / encode_component(service)
        digests = [sdir / encode_component(image_digest)] if image_digest else _subdirs(sdir)
        out = [self._learned_entry(service, d, v) for d in digests for v in self._versions(d)]
        return sorted(out, key=lambda s: (s.created_at, s.version or 0))

    def latest(
        self,
        service: str,
        image_digest: str | None = None,
        *,
        image_ref: str | None = None,
    ) -> StoredList | None:
        """The list to use: a matching pin wins, else the newest learned version.

        A pin matches when it was made for this image's digest or normalised ref. With no digest,
        the newest learned version across the service's images is returned.
        """
        keys = {k for k in (image_digest, image_ref) if k}
        for pin in self.pins(service):
            if pin.image in keys or (not keys):
                return pin
        hist = self.history(service, image_digest)
        return hist[-1] if hist else None

    def services(self) -> list[str]:
        names = {decode_component(d.name) for d in _subdirs(self._learned)}
        names |= {p.service for p in self.pins()}
        return sorted(n for n in names if n)

    # -- pins ----------------------------------------------------------------------------------
    def pin(self, service: str, image: str, plist: PrefetchList, *, name: str | None = None) -> str:
        """Store a hand-made list for (service, image digest or normalised ref); returns its name.

        It wins over learned lists until removed. Pinning the same key again replaces it.
        """
        _require_key(service, "service")
        _require_key(image, "image")
        name = pin_name_for(service, image) if name is None else name
        if not isinstance(name, str) or not PIN_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid pin name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - (not leading . _ -)")
        with self._locked():
            for old in self.pins(service):
                if old.image == image and old.name != name:
                    self._delete(old)
            meta = {"service": service, "image": image, "name": name, "created_at": time.time(),
                    "entries_count": len(plist), "skipped": dict(plist.skipped)}
            write_bytes_atomic(self._pins / f"{name}.json", _json_bytes(meta))
            plist.write_atomic(self._pins / f"{name}.list")
            self._bump()
        log.info("list pinned service=%s image=%s name=%s entries=%d", service, image, name, len(plist))
        return name

    def pins(self, service: str | None = None) -> list[StoredList]:
        out = []
        try:
            names = sorted(os.listdir(self._pins))
        except FileNotFoundError:
            return []
        for n in names:
            if not n.endswith(".list") or n.startswith("."):
                continue
            stored = self._pin_entry(n[: -len(".list")])
            if stored and (service is None or stored.service == service):
                out.append(stored)
        return sorted(out, key=lambda s: s.created_at, reverse=True)

    def _pin_entry(self, name: str) -> StoredList | None:
        lp, rp = self._pins / f"{name}.list", self._pins / f"{name}.json"
        try:
            meta = json.loads(rp.read_text(encoding="utf-8"))
            return StoredList(str(meta["service"]), str(meta["image"]), None, True, name, lp, rp,
                              float(meta.get("created_at", 0.0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def get_named(self, name: str) -> StoredList | None:
        """A pinned list by name (e.g. from a pod annotation: untrusted, so validated here)."""
        if not isinstance(name, str) or not PIN_NAME_RE.fullmatch(name):
            return None
        stored = self._pin_entry(name)
        return stored if stored and stored.list_path.exists() else None

    # -- removal -------------------------------------------------------------------------------
    def remove(self, service: str, image: str | None = None, *, scope: str = "all") -> int:
        """Remove the service's lists (optionally for one image); returns how many were removed.

        scope: "pin" removes pins only (learned lists apply again), "learned" removes learned
        versions only, "all" both (the service then gets no list until the next build).
        """
        if scope not in ("pin", "learned", "all"):
            raise ValueError(f"scope must be pin, learned or all, not {scope!r}")
        removed = 0
        with self._locked():
            if scope in ("pin", "all"):
                for p in self.pins(service):
                    if image is None or p.image == image:
                        self._delete(p)
                        removed += 1
            if scope in ("learned", "all"):
                for s in self.history(service, image):
                    self._delete(s)
                    removed += 1
                _prune_empty(self._learned / encode_component(service))
            if removed:
                self._bump()
        log.info("lists removed service=%s image=%s scope=%s count=%d", service, image, scope, removed)
        return removed

    @staticmethod
    def _delete(s: StoredList) -> None:
        # List first: a .list without its .json is never listed, so readers never see half a pair.
        for p in (s.list_path, s.report_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _require_key(value: object, what: str) -> None:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL, got {value!r}")


def _subdirs(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


def _prune_empty(d: Path) -> None:
    for sub in _subdirs(d):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        d.rmdir()


def _json_bytes(obj: Any) -> bytes:
    # ensure_ascii: a lone surrogate (a non-UTF-8 name) becomes an escape instead of an encode error
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode("ascii")


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
