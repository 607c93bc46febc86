"""The agent's NRI handlers: small adapters from runtime events to the tracer and the injector.

The stub (agent/nri) owns the protocol, time budgets and fail-open answers; this module only says
what each event means for us. Everything here must be quick: the expensive parts (digest lookups,
finalising runs, inventories, PUT retries) run on the workers of the objects it calls.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from typing import Iterable, Protocol

from agent import metrics
from agent.config import AgentConfig, merge_toml
from agent.identity import ServiceKey, service_key
from agent.imageref import ImageRefError, normalize
from agent.nri import Container, Plugin, Pod, after_answer
from agent.trace import RunMeta, TraceConfig

log = logging.getLogger(__name__)

IMAGE_NAME_ANNOTATION = "io.kubernetes.cri.image-name"


class RunTracer(Protocol):
    def start_run(self, meta: RunMeta, pid: int, late_attach: bool = False) -> None: ...
    def stop_run(self, container_id: str, reason: str = "stop") -> None: ...
    def set_image_digest(self, container_id: str, digest: str) -> None: ...
    def runtime_disconnected(self) -> None: ...
    def is_tracing(self, container_id: str) -> bool: ...
    def reconfigure(self, config: TraceConfig) -> None: ...


class PodInjector(Protocol):
    def on_run_pod_sandbox(self, pod: Pod) -> None: ...


class DigestLookup(Protocol):
    def resolve(self, image_ref: str, on_digest) -> None: ...


class ImageHistory:
    """Which images each workload ran lately, so a pod's images are known before its containers.

    NRI's RunPodSandbox does not carry the containers' images; this is the fallback when the pod
    has no explicit images annotation. Bounded: the oldest workloads are forgotten first.
    """

    def __init__(self, max_workloads: int = 10_000, per_workload: int = 8) -> None:
        self._lock = threading.Lock()
        self._by_workload: OrderedDict[str, OrderedDict[tuple[str, str], str | None]] = OrderedDict()
        self._max = max_workloads
        self._per = per_workload

    def record(self, key: ServiceKey, image_ref: str, digest: str | None = None) -> None:
        workload = f"{key.namespace}/{key.workload}"
        with self._lock:
            images = self._by_workload.pop(workload, OrderedDict())
            entry = (key.container, image_ref)
            images.pop(entry, None)
            images[entry] = digest
            while len(images) > self._per:
                images.popitem(last=False)
            self._by_workload[workload] = images
            while len(self._by_workload) > self._max:
                self._by_workload.popitem(last=False)

    def recent(self, namespace: str, workload: str) -> list[tuple[str, str, str | None]]:
        """(service key, normalised image ref, digest) this workload ran, newest first."""
        with self._lock:
            images = self._by_workload.get(f"{namespace}/{workload}", {})
            return [
                (f"{namespace}/{workload}/{container}", ref, digest)
                for (container, ref), digest in reversed(images.items())
            ]

    def load(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Seed from stored runs, oldest first: (service key, normalised ref, digest)."""
        for service, ref, digest in rows:
            try:
                self.record(ServiceKey.parse(service), ref, digest)
            except ValueError:
                continue


# Keys a running agent cannot change: they shaped a socket, a thread pool or a buffer at start.
_RESTART_ONLY = {
    "agent": ("state_dir", "nri_socket", "cri_socket", "plugin_name", "plugin_index", "handler_budget_s",
              "realtime_handlers", "metrics_port"),
    "trace": ("read_events", "reads_per_wake", "probe_workers"),
    "inject": ("snapshotter_socket", "put_timeout_s", "advisor_store"),
}


def restart_only_changes(old: AgentConfig, new: AgentConfig) -> list[str]:
    """``table.key`` of each restart-only key whose value differs between the two configs."""
    sections = {"agent": (old, new), "trace": (old.trace, new.trace), "inject": (old.inject, new.inject)}
    return [f"{table}.{key}" for table, keys in _RESTART_ONLY.items() for key in keys
            if getattr(sections[table][0], key) != getattr(sections[table][1], key)]


class PrefetchAgent(Plugin):
    """Traces every container start and hands prefetch lists to the snapshotter for every pod."""

    def __init__(
        self,
        config: AgentConfig,
        tracer: RunTracer,
        injector: PodInjector | None,
        digests: DigestLookup | None,
        history: ImageHistory,
    ) -> None:
        super().__init__()
        self.config = config
        self.tracer = tracer
        self.injector = injector
        self.digests = digests
        self.history = history

    # configuration ------------------------------------------------------------------------------
    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        log.info("event=configure runtime=%s version=%s config_bytes=%d", runtime_name, runtime_version, len(config))
        if not config.strip():
            return
        # A bad NRI config is logged and ignored: the file config keeps the node working.
        try:
            merged = merge_toml(self.config, config)
        except ValueError as exc:
            log.error("event=config_rejected source=nri error=%s", exc)
            return
        fixed = restart_only_changes(self.config, merged)
        if fixed:
            log.warning("event=config_needs_restart source=nri keys=%s note=kept_running_values", ",".join(fixed))
        self.config = merged
        # The tracer and the injector read their knobs at each use, so they take the overlay now.
        self.tracer.reconfigure(merged.trace)
        if self.injector is not None and hasattr(self.injector, "config"):
            self.injector.config = merged
        log.info("event=config_applied source=nri")

    def synchronize(self, pods: list[Pod], containers: list[Container]) -> None:
        by_id = {pod.id: pod for pod in pods}
        attached = 0
        for container in containers:
            pod = by_id.get(container.pod_sandbox_id)
            if pod is None or container.pid <= 0 or self.tracer.is_tracing(container.id):
                continue
            # Already running when we connected: whatever it read before now is lost to us.
            self._begin(pod, container, late_attach=True)
            attached += 1
        log.info("event=synchronize pods=%d containers=%d late_attached=%d", len(pods), len(containers), attached)

    def on_disconnect(self) -> None:
        self.tracer.runtime_disconnected()

    # pods -----------------------------------------------------------------------------------------
    def run_pod_sandbox(self, pod: Pod) -> None:
        metrics.NRI_EVENTS.labels("run_pod_sandbox").inc()
        if self.injector is not None and self.config.inject.enabled:
            self.injector.on_run_pod_sandbox(pod)

    # containers -------------------------------------------------------------------------------------
    def start_container(self, pod: Pod, container: Container) -> None:
        metrics.NRI_EVENTS.labels("start_container").inc()
        if self.config.trace_enabled and container.pid > 0:
            self._begin(pod, container, late_attach=False)

    def stop_container(self, pod: Pod, container: Container) -> None:
        metrics.NRI_EVENTS.labels("stop_container").inc()
        self.tracer.stop_run(container.id, "stop")

    def remove_container(self, pod: Pod, container: Container) -> None:
        # Normally stopped already; this catches containers whose stop we never saw.
        metrics.NRI_EVENTS.labels("remove_container").inc()
        self.tracer.stop_run(container.id, "stop")

    # helpers ------------------------------------------------------------------------------------------
    def _begin(self, pod: Pod, container: Container, late_attach: bool) -> None:
        meta = self.run_meta(pod, container)
        self.tracer.start_run(meta, container.pid, late_attach=late_attach)
        metrics.RUNS_STARTED.labels(str(late_attach).lower()).inc()
        if meta.image_ref_normalized:
            self.history.record(ServiceKey.parse(meta.service), meta.image_ref_normalized)
        if self.digests is not None and meta.image_ref:
            cid = container.id
            key = ServiceKey.parse(meta.service)
            ref = meta.image_ref_normalized

            def on_digest(digest: str) -> None:
                self.tracer.set_image_digest(cid, digest)
                if ref:
                    self.history.record(key, ref, digest)

            after_answer(lambda: self.digests.resolve(meta.image_ref, on_digest))

    def run_meta(self, pod: Pod, container: Container) -> RunMeta:
        key = service_key(pod.namespace, pod.name, pod.labels, container.name)
        image_ref = container.annotations.get(IMAGE_NAME_ANNOTATION, "")
        try:
            normalized = normalize(image_ref) if image_ref else ""
        except ImageRefError as exc:
            log.warning("event=image_ref_unparsed pod=%s container=%s image=%r error=%s", pod.id, container.id, image_ref, exc)
            normalized = ""
        return RunMeta(
            run_id=uuid.uuid4().hex,
            service=str(key),
            namespace=pod.namespace,
            pod=pod.name,
            pod_uid=pod.uid,
            container=container.name,
            container_id=container.id,
            image_ref=image_ref,
            image_ref_normalized=normalized,
            image_digest=None,
            node=self.config.node,
            readiness=self.config.readiness.get(str(key)),
            window_s=self.config.trace.window_s,
        )
