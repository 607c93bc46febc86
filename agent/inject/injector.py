"""RunPodSandbox -> choose a list per image -> write it where nydusd can read it -> PUT it.

`on_run_pod_sandbox` returns within `budget_s` whatever happens: the work runs on a small pool and
the handler stops waiting at the deadline (the work finishes in the background and still PUTs).
List files are content-addressed (`<image slug>-<sha256 prefix>.list`), so a later pod with another
list for the same image never rewrites a file an earlier pod's nydusd is about to read.

Live updates: the store is consulted for every pod; a small cache of its answers is dropped
whenever the store's generation counter moves (pin, remove, new build), so changes apply to the
next pod without a restart.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from advisor.lists import ListStore, PrefetchList, StoredList
from agent.inject.annotations import AnnotationLimits, parse_pod_annotations, record_rejections
from agent.inject.policy import Choice, RecentImages, choose, pod_images
from agent.inject.snapshotter import OUTCOME_OK, PrefetchEntry, SnapshotterClient

log = logging.getLogger(__name__)

CHOICES = Counter("prefetch_agent_inject_choices_total", "List source chosen per pod image", ["source"])
INJECT_PROBLEMS = Counter("prefetch_agent_inject_problems_total", "Injector runs that overran or failed", ["reason"])

LIST_FILE_MAX_AGE_S = 24 * 3600
_GC_EVERY = 64


class CachedStore:
    """ListStore answers cached until the store's generation changes."""

    def __init__(self, store: ListStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._generation = -1
        self._latest: dict[tuple[str, str | None, str | None], StoredList | None] = {}

    def _fresh(self) -> None:
        gen = self.store.generation()
        if gen != self._generation:
            self._latest.clear()
            if self._generation != -1:
                log.info("event=list_store_changed generation=%d", gen)
            self._generation = gen

    def latest(self, service: str, image_digest: str | None = None, *, image_ref: str | None = None) -> StoredList | None:
        key = (service, image_digest, image_ref)
        with self._lock:
            self._fresh()
            if key in self._latest:
                return self._latest[key]
        found = self.store.latest(service, image_digest, image_ref=image_ref)
        with self._lock:
            self._latest[key] = found
        return found

    def services(self) -> list[str]:
        return self.store.services()

    def get_named(self, name: str) -> StoredList | None:
        return self.store.get_named(name)  # names are rare and must reflect removals at once


class PrefetchInjector:
    def __init__(
        self,
        config: Any,
        list_store: ListStore | None,
        snapshotter_client: SnapshotterClient,
        recent_images: RecentImages | None,
        *,
        budget_s: float | None = None,
        workers: int = 2,
    ) -> None:
        self.config = config
        self.store = CachedStore(list_store) if list_store is not None else None
        self.client = snapshotter_client
        self.recent_images = recent_images
        self.list_dir = Path(config.list_dir)
        handler_budget = float(getattr(config, "handler_budget_s", 0.5))
        # Leave the NRI stub room to encode and send its answer.
        self.budget_s = budget_s if budget_s is not None else max(0.05, min(handler_budget * 0.8, handler_budget - 0.1))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="injector")
        self._pods = 0

    @property
    def limits(self) -> AnnotationLimits:
        inject = self.config.inject
        return AnnotationLimits(
            allowed_dirs=tuple(self.config.allowed_list_dirs),
            max_value_bytes=int(inject.max_inline_bytes),
        )

    def on_run_pod_sandbox(self, pod: Any) -> None:
        """Never raises, never takes longer than budget_s."""
        pod_ref = _pod_ref(pod)
        try:
            future = self._pool.submit(self.inject, pod)
        except RuntimeError:  # pool shut down
            INJECT_PROBLEMS.labels("shutdown").inc()
            return
        try:
            future.result(timeout=self.budget_s)
        except concurrent.futures.TimeoutError:
            INJECT_PROBLEMS.labels("over_budget").inc()
            log.warning("event=inject_over_budget pod=%s budget_ms=%d note=continuing_in_background", pod_ref,
                        int(self.budget_s * 1000))
        except Exception:
            INJECT_PROBLEMS.labels("error").inc()
            log.exception("event=inject_failed pod=%s", pod_ref)

    def inject(self, pod: Any) -> list[Choice]:
        """The whole decision for one pod, synchronously (the handler bounds it)."""
        started = time.monotonic()
        pod_ref = _pod_ref(pod)
        parsed = parse_pod_annotations(getattr(pod, "annotations", None) or {}, self.limits, self.store)
        record_rejections(pod_ref, parsed.rejections)
        targets = pod_images(pod, parsed, self.recent_images)
        choices = choose(targets, parsed, self.store)
        entries: list[PrefetchEntry] = []
        for c in choices:
            CHOICES.labels(c.source).inc()
            path = None
            if c.sends:
                assert c.plist is not None
                path = self.materialise(c.target.image, c.plist)
                entries.append(PrefetchEntry(c.target.image, str(path), c.target.service))
            log.info("event=prefetch_choice pod=%s image=%s service=%s source=%s entries=%d list=%s origin=%s why=%r",
                     pod_ref, c.target.image, c.target.service, c.source, len(c.plist) if c.plist else 0, path,
                     c.origin or "-", c.why)
        if not targets:
            CHOICES.labels("no_images").inc()
            log.info("event=prefetch_choice pod=%s source=none why=%r", pod_ref,
                     "no images known: no images annotation and no recent runs of this workload")
        outcome = "none"
        if entries:
            result = self.client.send(entries)
            outcome = result.outcome if result.outcome == OUTCOME_OK else f"{result.outcome}:{result.reason}"
        log.info("event=inject_done pod=%s images=%d sent=%d put=%s took_ms=%.1f", pod_ref, len(targets), len(entries),
                 outcome, (time.monotonic() - started) * 1000)
        self._pods += 1
        if self._pods % _GC_EVERY == 0:
            self.collect_garbage()
        return choices

    def materialise(self, image: str, plist: PrefetchList) -> Path:
        """Write the list into our own list dir (atomically, content-addressed) and return its path."""
        data = plist.to_bytes()
        digest = hashlib.sha256(data).hexdigest()[:24]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", image)[:100].strip("._-") or "image"
        path = self.list_dir / f"{slug}-{digest}.list"
        if path.exists() and path.read_bytes() == data:
            os.utime(path)  # keep it young for the garbage collector
            return path
        # No fsync: the snapshotter reads it during this boot, and after a reboot it has
        # forgotten the PUT anyway. That takes two fsyncs off RunPodSandbox's path.
        return plist.write_atomic(path, durable=False)

    def collect_garbage(self, max_age_s: float = LIST_FILE_MAX_AGE_S) -> int:
        """Remove old list files that no send record points at.

        An entry the snapshotter never consumed (the image was already on the node) stays in its
        memory; if its file were gone, the next pull of that image would start nydusd with a
        missing --prefetch-files and fail the mount. So referenced files stay whatever their age.
        """
        cutoff = time.time() - max_age_s
        keep = self.client.referenced_paths()
        removed = 0
        try:
            names = os.listdir(self.list_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.endswith(".list"):
                continue
            p = self.list_dir / name
            if str(p) in keep:
                continue
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("event=list_files_collected removed=%d", removed)
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pod_ref(pod: Any) -> str:
    ns = getattr(pod, "namespace", "") or "-"
    name = getattr(pod, "name", "") or "-"
    pid = getattr(pod, "id", "") or "-"
    return f"{ns}/{name}({str(pid)[:12]})"
