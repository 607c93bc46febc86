"""Which prefetch list each of a pod's images gets, and why.

Order per image: the pod disabled prefetch > a valid override annotation > the learned list from the
ListStore (a pin there beats the newest learned version) > nothing. A rejected override has already
been dropped by the parser, so it falls through to the learned list here.

Images: NRI's RunPodSandbox carries no images, so they come from the annotations (the images key,
or the images upstream's annotation and our per-image keys name), else from what this workload ran
recently (`recent_images`, fed by the tracer). A workload's first pod on a node without annotations
therefore gets nothing; a cluster component that annotates pods with their images would lift that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from advisor.lists import PrefetchList, StoredList
from agent.identity import service_key, workload_name
from agent.inject.annotations import PodAnnotations

log = logging.getLogger(__name__)

# (namespace, workload) -> [(service key, normalised image ref, image digest or None)], newest first.
RecentImages = Callable[[str, str], Iterable[tuple[str, str, str | None]]]

SOURCE_DISABLED = "disabled"
SOURCE_LEARNED = "learned"
SOURCE_PINNED = "pinned"
SOURCE_NONE = "none"


class LearnedLists(Protocol):
    def latest(
        self, service: str, image_digest: str | None = None, *, image_ref: str | None = None
    ) -> StoredList | None: ...

    def services(self) -> list[str]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ImageTarget:
    image: str  # normalised ref: the snapshotter's lookup key
    service: str | None  # namespace/workload/container when known
    digest: str | None
    found_by: str  # "annotation" or "history"


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    target: ImageTarget
    source: str  # SOURCE_* or an override source ("upstream", "inline", "named")
    why: str
    plist: PrefetchList | None
    origin: str = ""  # pin name, host path, store path: where the list came from

    @property
    def sends(self) -> bool:
        return self.plist is not None and len(self.plist) > 0


def pod_workload(pod: Any) -> tuple[str, str]:
    namespace = getattr(pod, "namespace", "") or "default"
    return namespace, workload_name(getattr(pod, "name", "") or "", getattr(pod, "labels", {}) or {}) or "unknown"


def pod_images(pod: Any, parsed: PodAnnotations, recent_images: RecentImages | None) -> list[ImageTarget]:
    """The images this pod will pull, with the service key each runs under when we can tell."""
    namespace, workload = pod_workload(pod)
    history: list[tuple[str, str, str | None]] = []
    if recent_images is not None:
        try:
            history = [tuple(row) for row in recent_images(namespace, workload)]  # type: ignore[misc]
        except Exception:
            log.exception("event=recent_images_failed namespace=%s workload=%s", namespace, workload)
    by_ref: dict[str, tuple[str, str | None]] = {}
    for service, ref, digest in history:
        by_ref.setdefault(ref, (service, digest))

    named = parsed.annotated_images()
    if named:
        containers = {img.image: img.container for img in parsed.images}
        targets = []
        for ref in named:
            container = containers.get(ref)
            known = by_ref.get(ref)
            if container:
                service = str(service_key(namespace, getattr(pod, "name", ""), getattr(pod, "labels", {}) or {}, container))
                digest = known[1] if known and known[0] == service else None
            else:
                service, digest = known if known else (None, None)
            targets.append(ImageTarget(ref, service, digest, "annotation"))
        return targets
    seen: set[str] = set()
    targets = []
    for service, ref, digest in history:
        if ref not in seen:
            seen.add(ref)
            targets.append(ImageTarget(ref, service, digest, "history"))
    return targets


def choose(targets: Iterable[ImageTarget], parsed: PodAnnotations, store: LearnedLists | None) -> list[Choice]:
    return [choose_one(t, parsed, store) for t in targets]


def choose_one(target: ImageTarget, parsed: PodAnnotations, store: LearnedLists | None) -> Choice:
    if parsed.disabled:
        return Choice(target, SOURCE_DISABLED, "pod annotation disables prefetch", None)
    override = parsed.override_for(target.image)
    if override is not None:
        scope = "this image" if override.image else "every image of the pod"
        return Choice(target, override.source, f"valid {override.source} override for {scope}", override.plist, override.origin)
    rejected = [r for r in parsed.rejections if not r.key.endswith("images")]
    fallback = " (override rejected: " + ", ".join(r.reason for r in rejected) + ")" if rejected else ""
    if store is None:
        return Choice(target, SOURCE_NONE, "no list store" + fallback, None)
    if target.service is None:
        return Choice(target, SOURCE_NONE, "service unknown for this image" + fallback, None)
    stored, how = _lookup(store, target)
    if stored is None:
        return Choice(target, SOURCE_NONE, f"no learned or pinned list for service {target.service}" + fallback, None)
    try:
        plist = stored.load()
    except OSError as exc:
        return Choice(target, SOURCE_NONE, f"stored list unreadable: {exc.strerror or exc}" + fallback, None)
    if not plist.valid:
        # The store only holds lists written through PrefetchList; a bad one was edited by hand.
        return Choice(target, SOURCE_NONE, f"stored list {stored.list_path} has invalid entries" + fallback, None)
    if len(plist) == 0:
        return Choice(target, SOURCE_NONE, f"stored list {stored.list_path} is empty" + fallback, None)
    if stored.pinned:
        return Choice(target, SOURCE_PINNED, f"pin {stored.name} for {stored.image}" + fallback, plist, str(stored.list_path))
    return Choice(target, SOURCE_LEARNED, f"learned v{stored.version} for {stored.image} {how}" + fallback, plist,
                  str(stored.list_path))


def _lookup(store: LearnedLists, target: ImageTarget) -> tuple[StoredList | None, str]:
    assert target.service is not None
    if target.digest:
        stored = store.latest(target.service, target.digest, image_ref=target.image)
        if stored is not None:
            return stored, "(same digest)"
    # Digest unknown or never learned: the service's newest list, which is for an older image
    # version at worst; nydusd silently drops paths that no longer exist.
    stored = store.latest(target.service, None, image_ref=target.image)
    return stored, "(newest image of the service)"
