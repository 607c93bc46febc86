"""Pod annotations that steer prefetch, parsed as the untrusted input they are.

Accepted keys:
  containerd.io/nydus-prefetch       upstream's: JSON array of {"image", "prefetch": <host path>}
  prefetch-advisor.io/list           inline list: JSON array of paths (all images), JSON object
                                     {image: [paths]}, or plain text with one path per line
  prefetch-advisor.io/list-name      name of a pinned list in the ListStore (all images), or JSON
                                     object {image: name}
  prefetch-advisor.io/disable        "true"/"false": no prefetch at all for this pod
  prefetch-advisor.io/images         the pod's images, since NRI's pod message lacks them: JSON
                                     object {container: image}, JSON array, or comma-separated refs

Nothing here raises on bad input. Every problem becomes a Rejection with a stable reason, and the
caller logs and counts it with the pod (`record_rejections`). A host path is accepted only when its
realpath lies under an allow-listed directory, and the file is read (size-capped, no symlink
following) and validated with advisor.lists, the single home of nydusd's list rules. The injector
then writes its own copy, so nydusd never reads a file an annotation controls.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from advisor.lists import PrefetchList, StoredList, check_entry
from agent.imageref import try_normalize_image_ref

log = logging.getLogger(__name__)

UPSTREAM_KEY = "containerd.io/nydus-prefetch"
PREFIX = "prefetch-advisor.io/"
LIST_KEY = PREFIX + "list"
LIST_NAME_KEY = PREFIX + "list-name"
DISABLE_KEY = PREFIX + "disable"
IMAGES_KEY = PREFIX + "images"
OUR_KEYS = frozenset({LIST_KEY, LIST_NAME_KEY, DISABLE_KEY, IMAGES_KEY})

DEFAULT_MAX_VALUE_BYTES = 64 * 1024
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_IMAGES = 64

# Source names, also the `source` in logs and policy decisions.
SRC_UPSTREAM = "upstream"
SRC_INLINE = "inline"
SRC_NAMED = "named"

REJECTIONS = Counter(
    "prefetch_agent_inject_rejections_total",
    "Pod annotations (or parts of them) rejected, by reason",
    ["reason"],
)

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    key: str  # the annotation key
    reason: str  # stable, used as the counter label
    detail: str  # one line for the log

    def __str__(self) -> str:
        return f"key={self.key} reason={self.reason} detail={self.detail!r}"


@dataclasses.dataclass(frozen=True, slots=True)
class PodImage:
    image: str  # normalised ref
    container: str | None  # when the annotation named it


@dataclasses.dataclass(frozen=True, slots=True)
class ListOverride:
    image: str | None  # normalised ref; None means every image of the pod
    source: str  # SRC_*
    origin: str  # host path, pin name or "annotation", for the log
    plist: PrefetchList  # always fully valid (no skipped entry) and non-empty


@dataclasses.dataclass(slots=True)
class PodAnnotations:
    disabled: bool = False
    images: list[PodImage] = dataclasses.field(default_factory=list)
    overrides: list[ListOverride] = dataclasses.field(default_factory=list)
    rejections: list[Rejection] = dataclasses.field(default_factory=list)

    def override_for(self, image: str) -> ListOverride | None:
        """Upstream's per-image entry beats our per-image keys, which beat our pod-wide ones."""
        rank = {SRC_UPSTREAM: 0, SRC_INLINE: 1, SRC_NAMED: 2}
        specific = [o for o in self.overrides if o.image == image]
        general = [o for o in self.overrides if o.image is None]
        for group in (specific, general):
            if group:
                return min(group, key=lambda o: rank.get(o.source, 9))
        return None

    def annotated_images(self) -> list[str]:
        """Images the annotations name, explicitly or as override keys, in first-seen order."""
        seen: dict[str, None] = {}
        for img in self.images:
            seen.setdefault(img.image)
        for o in self.overrides:
            if o.image is not None:
                seen.setdefault(o.image)
        return list(seen)


class NamedLists(Protocol):
    def get_named(self, name: str) -> StoredList | None: ...


@dataclasses.dataclass(frozen=True)
class AnnotationLimits:
    allowed_dirs: tuple[Path, ...]
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def parse_pod_annotations(
    annotations: object,
    limits: AnnotationLimits,
    named_lists: NamedLists | None = None,
) -> PodAnnotations:
    """Parse everything prefetch-related in a pod's annotations. Never raises."""
    result = PodAnnotations()
    try:
        _parse_into(result, annotations, limits, named_lists)
    except Exception as exc:  # a bug must cost this pod its override, never the pod itself
        log.exception("event=annotation_parser_error")
        result.overrides.clear()
        result.rejections.append(Rejection("*", "internal_error", f"{type(exc).__name__}: {exc}"))
    return result


def record_rejections(pod_ref: str, rejections: Iterable[Rejection]) -> None:
    """Log each rejection with the pod, and count it."""
    for r in rejections:
        REJECTIONS.labels(r.reason).inc()
        log.warning("event=annotation_rejected pod=%s %s", pod_ref, r)


def _parse_into(
    result: PodAnnotations, annotations: object, limits: AnnotationLimits, named_lists: NamedLists | None
) -> None:
    if not isinstance(annotations, Mapping):
        return
    values: dict[str, str] = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not (key == UPSTREAM_KEY or key.startswith(PREFIX)):
            continue
        if key != UPSTREAM_KEY and key not in OUR_KEYS:
            result.rejections.append(Rejection(_clip(key), "unknown_key", "not a prefetch-advisor.io key"))
            continue
        if not isinstance(value, str):
            result.rejections.append(Rejection(key, "not_text", f"value is {type(value).__name__}"))
            continue
        if len(value) > limits.max_value_bytes or len(value.encode("utf-8", "surrogatepass")) > limits.max_value_bytes:
            result.rejections.append(
                Rejection(key, "too_large", f"{len(value)} characters, limit {limits.max_value_bytes} bytes")
            )
            continue
        values[key] = value

    if DISABLE_KEY in values:
        word = values[DISABLE_KEY].strip().lower()
        if word in _TRUE:
            result.disabled = True
        elif word not in _FALSE:
            result.rejections.append(Rejection(DISABLE_KEY, "bad_switch", "use true or false"))
    if IMAGES_KEY in values:
        _parse_images(result, values[IMAGES_KEY])
    if UPSTREAM_KEY in values:
        _parse_upstream(result, values[UPSTREAM_KEY], limits)
    if LIST_KEY in values:
        _parse_inline(result, values[LIST_KEY])
    if LIST_NAME_KEY in values:
        _parse_named(result, values[LIST_NAME_KEY], named_lists, limits)


# -- images ------------------------------------------------------------------------------------


def _parse_images(result: PodAnnotations, value: str) -> None:
    pairs: list[tuple[str | None, object]]
    text = value.strip()
    if text.startswith(("[", "{")):
        data, err = _json(text)
        if err:
            result.rejections.append(Rejection(IMAGES_KEY, "malformed_json", err))
            return
        if isinstance(data, dict):
            pairs = [(str(k), v) for k, v in data.items()]
        elif isinstance(data, list):
            pairs = [(None, v) for v in data]
        else:
            result.rejections.append(Rejection(IMAGES_KEY, "wrong_type", "want an object or array"))
            return
    else:
        pairs = [(None, part.strip()) for part in text.split(",") if part.strip()]
    if len(pairs) > MAX_IMAGES:
        result.rejections.append(Rejection(IMAGES_KEY, "too_many", f"{len(pairs)} images, limit {MAX_IMAGES}"))
        return
    for container, ref in pairs:
        norm, err = try_normalize_image_ref(ref)
        if norm is None:
            result.rejections.append(Rejection(IMAGES_KEY, "bad_image_ref", err or "invalid"))
            continue
        if container is not None and (not container or len(container) > 253 or not container.isprintable()):
            result.rejections.append(Rejection(IMAGES_KEY, "bad_container", _clip(repr(container))))
            continue
        result.images.append(PodImage(norm, container))


# -- upstream's annotation ---------------------------------------------------------------------


def _parse_upstream(result: PodAnnotations, value: str, limits: AnnotationLimits) -> None:
    data, err = _json(value)
    if err:
        result.rejections.append(Rejection(UPSTREAM_KEY, "malformed_json", err))
        return
    if not isinstance(data, list):
        result.rejections.append(Rejection(UPSTREAM_KEY, "not_array", f"got a JSON {_json_kind(data)}"))
        return
    if len(data) > MAX_IMAGES:
        result.rejections.append(Rejection(UPSTREAM_KEY, "too_many", f"{len(data)} entries, limit {MAX_IMAGES}"))
        return
    for i, item in enumerate(data):
        where = f"{UPSTREAM_KEY}[{i}]"
        if not isinstance(item, dict):
            result.rejections.append(Rejection(where, "not_object", f"got a JSON {_json_kind(item)}"))
            continue
        missing = [f for f in ("image", "prefetch") if f not in item]
        if missing:
            result.rejections.append(Rejection(where, "missing_field", "missing " + ", ".join(missing)))
            continue
        image, path = item["image"], item["prefetch"]
        if not isinstance(image, str) or not isinstance(path, str):
            result.rejections.append(Rejection(where, "bad_field", "image and prefetch must be strings"))
            continue
        norm, ierr = try_normalize_image_ref(image)
        if norm is None:
            result.rejections.append(Rejection(where, "bad_image_ref", ierr or "invalid"))
            continue
        plist, rej = read_allowed_list(path, limits)
        if rej is not None:
            result.rejections.append(Rejection(where, rej[0], rej[1]))
            continue
        assert plist is not None
        result.overrides.append(ListOverride(norm, SRC_UPSTREAM, path, plist))


def read_allowed_list(path: str, limits: AnnotationLimits) -> tuple[PrefetchList | None, tuple[str, str] | None]:
    """Read a host list file an annotation names, if and only if it is safe to.

    Returns (list, None) or (None, (reason, detail)). The path is made canonical (symlinks and
    `..` resolved) before the containment check, and opened with O_NOFOLLOW so a symlink swapped in
    after the check is refused instead of followed.
    """
    reason = _host_path_problem(path)
    if reason:
        return None, reason
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        return None, ("missing_file", f"{_clip(path)} does not exist")
    except OSError as exc:
        # ELOOP and friends: a symlink cycle is as bad as an escape.
        return None, ("unreadable", f"{_clip(path)}: {exc.strerror or exc}")
    if not any(_is_within(real, d) for d in _real_dirs(limits.allowed_dirs)):
        return None, ("outside_allowlist", f"{_clip(path)} resolves to {_clip(real)}, not under an allowed directory")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, ("missing_file", f"{_clip(path)} does not exist")
        if exc.errno == errno.ELOOP:
            return None, ("outside_allowlist", f"{_clip(real)} became a symlink")
        return None, ("unreadable", f"{_clip(path)}: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, ("not_regular", f"{_clip(path)} is not a regular file")
        if st.st_size > limits.max_file_bytes:
            return None, ("too_large", f"{_clip(path)} is {st.st_size} bytes, limit {limits.max_file_bytes}")
        data = _read_capped(fd, limits.max_file_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > limits.max_file_bytes:
        return None, ("too_large", f"{_clip(path)} grew past {limits.max_file_bytes} bytes")
    plist = PrefetchList.parse(data)
    return _strict(plist, f"list file {_clip(path)}")


def _host_path_problem(path: str) -> tuple[str, str] | None:
    if path == "":
        return "bad_path", "empty path"
    if "\x00" in path:
        return "nul", "path contains a NUL byte"
    if "\n" in path or "\r" in path:
        return "newline", "path contains a newline"
    if not path.startswith("/"):
        return "relative", f"{_clip(path)} is not absolute"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "not_utf8", "path is not UTF-8"
    return None


def _real_dirs(dirs: Iterable[Path]) -> list[str]:
    out = []
    for d in dirs:
        try:
            out.append(os.path.realpath(d))
        except OSError:
            continue
    return out


def _is_within(path: str, directory: str) -> bool:
    # Strictly below: the directory itself is not a list file.
    return path.startswith(directory.rstrip("/") + "/")


def _read_capped(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = os.read(fd, min(65536, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# -- our inline and named lists ----------------------------------------------------------------


def _parse_inline(result: PodAnnotations, value: str) -> None:
    text = value.strip()
    if text.startswith(("[", "{")):
        data, err = _json(text)
        if err:
            result.rejections.append(Rejection(LIST_KEY, "malformed_json", err))
            return
        if isinstance(data, list):
            _add_inline(result, None, data, LIST_KEY)
        elif isinstance(data, dict):
            for image, paths in data.items():
                where = f"{LIST_KEY}[{_clip(str(image))}]"
                norm, ierr = try_normalize_image_ref(image)
                if norm is None:
                    result.rejections.append(Rejection(where, "bad_image_ref", ierr or "invalid"))
                elif not isinstance(paths, list):
                    result.rejections.append(Rejection(where, "not_array", f"got a JSON {_json_kind(paths)}"))
                else:
                    _add_inline(result, norm, paths, where)
        else:
            result.rejections.append(Rejection(LIST_KEY, "wrong_type", f"got a JSON {_json_kind(data)}"))
        return
    # Plain text: exactly a list file's body; its rules (blank lines skipped) apply.
    plist, rej = _strict(PrefetchList.parse(value), "inline list")
    if rej is not None:
        result.rejections.append(Rejection(LIST_KEY, *rej))
    elif plist is not None:
        result.overrides.append(ListOverride(None, SRC_INLINE, "annotation", plist))


def _add_inline(result: PodAnnotations, image: str | None, paths: list[Any], where: str) -> None:
    plist, rej = _strict(PrefetchList(paths), "inline list")
    if rej is not None:
        result.rejections.append(Rejection(where, *rej))
    elif plist is not None:
        result.overrides.append(ListOverride(image, SRC_INLINE, "annotation", plist))


def _parse_named(
    result: PodAnnotations, value: str, named_lists: NamedLists | None, limits: AnnotationLimits
) -> None:
    text = value.strip()
    pairs: list[tuple[str | None, object]]
    if text.startswith("{"):
        data, err = _json(text)
        if err:
            result.rejections.append(Rejection(LIST_NAME_KEY, "malformed_json", err))
            return
        if not isinstance(data, dict):
            result.rejections.append(Rejection(LIST_NAME_KEY, "wrong_type", f"got a JSON {_json_kind(data)}"))
            return
        pairs = list(data.items())
    else:
        pairs = [(None, text)]
    for image, name in pairs:
        where = LIST_NAME_KEY if image is None else f"{LIST_NAME_KEY}[{_clip(str(image))}]"
        norm: str | None = None
        if image is not None:
            norm, ierr = try_normalize_image_ref(image)
            if norm is None:
                result.rejections.append(Rejection(where, "bad_image_ref", ierr or "invalid"))
                continue
        if not isinstance(name, str):
            result.rejections.append(Rejection(where, "bad_field", "list name must be a string"))
            continue
        stored = named_lists.get_named(name) if named_lists is not None else None
        if stored is None:
            result.rejections.append(Rejection(where, "unknown_list", f"no pinned list named {_clip(name)!r}"))
            continue
        try:
            size = stored.list_path.stat().st_size
            if size > limits.max_file_bytes:
                result.rejections.append(Rejection(where, "too_large", f"pinned list is {size} bytes"))
                continue
            plist, rej = _strict(stored.load(), f"pinned list {name}")
        except OSError as exc:
            result.rejections.append(Rejection(where, "unreadable", f"pinned list {name}: {exc.strerror or exc}"))
            continue
        if rej is not None:
            result.rejections.append(Rejection(where, *rej))
        elif plist is not None:
            result.overrides.append(ListOverride(norm, SRC_NAMED, name, plist))


# -- helpers -----------------------------------------------------------------------------------


def _strict(plist: PrefetchList, what: str) -> tuple[PrefetchList | None, tuple[str, str] | None]:
    """An override must be valid as a whole: one bad entry rejects it (nydusd would fail the mount
    on a relative one, and a half-applied override is a surprise)."""
    if plist.skipped:
        first = plist.rejections[0] if plist.rejections else None
        reason = first.reason if first else next(iter(plist.skipped))
        detail = f"{what}: entry {first.entry if first else '?'} rejected ({reason}); {sum(plist.skipped.values())} bad"
        return None, (reason, detail)
    if len(plist) == 0:
        return None, ("empty_list", f"{what} has no entries")
    # check_entry is the single rule set; re-assert here so no future change can slip one through.
    assert all(check_entry(e) is None for e in plist)
    return plist, None


def _json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as exc:
        return None, _clip(f"{type(exc).__name__}: {exc}")


def _json_kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _clip(text: str, n: int = 160) -> str:
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii", "replace")
    return text if len(text) <= n else text[: n - 3] + "..."
