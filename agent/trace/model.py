"""Value types the tracer's callers pass in: what a run is (RunMeta), how it becomes ready, and config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Readiness:
    """Per-service readiness signal. At most one of the two; neither means access quiescence.

    marker: absolute path inside the container whose appearance means ready.
    probe: argv run on the host (bounded by TraceConfig.probe_timeout_s) until it exits 0.
    """

    marker: str | None = None
    probe: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.marker is not None and self.probe is not None:
            raise ValueError("readiness: give a marker or a probe, not both")
        if self.marker is not None and not self.marker.startswith("/"):
            raise ValueError(f"readiness.marker must be an absolute in-container path, got {self.marker!r}")
        if self.probe is not None:
            if isinstance(self.probe, str) or not self.probe or not all(isinstance(a, str) for a in self.probe):
                raise ValueError("readiness.probe must be a non-empty list of strings (argv)")
            object.__setattr__(self, "probe", tuple(self.probe))

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> "Readiness | None":
        if not m:
            return None
        unknown = set(m) - {"marker", "probe"}
        if unknown:
            raise ValueError(f"readiness: unknown keys {sorted(unknown)}")
        probe = m.get("probe")
        if isinstance(probe, str):
            raise ValueError("readiness.probe must be a list of strings (argv), not one string")
        return cls(marker=m.get("marker"), probe=tuple(probe) if probe is not None else None)


@dataclass
class RunMeta:
    """Identity of one traced container start. Filled by the agent from the NRI event."""

    run_id: str
    service: str
    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str
    image_ref: str
    image_ref_normalized: str
    node: str
    image_digest: str | None = None
    readiness: Readiness | None = None
    window_s: float | None = None  # None: TraceConfig.window_s

    def replace(self, **changes: Any) -> "RunMeta":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TraceConfig:
    """Tracer knobs; the same keys work in the agent's TOML file and through NRI Configure."""

    window_s: float = 60.0
    # Quiescence readiness: ready = the last new file seen before a gap of this long without one.
    quiescence_s: float = 2.0
    # A run whose process exits sooner than this (or before it became ready) is flagged early_exit.
    min_run_s: float = 0.2
    marker_poll_s: float = 0.05
    probe_interval_s: float = 0.25
    probe_timeout_s: float = 2.0
    # Probe threads: one per probed run while it is not ready; more runs than this wait their turn.
    probe_workers: int = 32
    # How long finalisation waits for set_image_digest() after a run ended without a digest.
    digest_wait_s: float = 5.0
    # Events per read(): each returned event holds an fd until we close it, so keep this well under
    # RLIMIT_NOFILE (raised at start to read_events * 4).
    read_events: int = 2048
    # Reads per group per wake-up before serving other groups (fairness under a flood).
    reads_per_wake: int = 16
    take_inventory: bool = True
    # An image's inventory (a walk of its layers, once per digest) waits until no run has started
    # for inventory_quiet_s, so it does not compete with container starts; at most inventory_max_delay_s.
    inventory_quiet_s: float = 10.0
    inventory_max_delay_s: float = 300.0
    agent_version: str = "0.1.0"

    def __post_init__(self) -> None:
        for name in ("window_s", "quiescence_s", "marker_poll_s", "probe_interval_s", "probe_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"trace config: {name} must be > 0, got {getattr(self, name)!r}")
        if min(self.min_run_s, self.digest_wait_s, self.inventory_quiet_s, self.inventory_max_delay_s) < 0:
            raise ValueError("trace config: min_run_s, digest_wait_s and inventory_* must be >= 0")
        if not 1 <= self.read_events <= 65536 or self.reads_per_wake < 1 or self.probe_workers < 1:
            raise ValueError("trace config: read_events in 1..65536, reads_per_wake and probe_workers >= 1")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> "TraceConfig":
        """Build from a TOML table; unknown keys and bad values raise ValueError with one clear line."""
        m = dict(m or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(m) - set(names)
        if unknown:
            raise ValueError(f"trace config: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for k, v in m.items():
            default = names[k].default
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"trace config: {k} must be a boolean, got {v!r}")
            elif isinstance(default, (int, float)):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"trace config: {k} must be a number, got {v!r}")
                v = type(default)(v)
            elif isinstance(default, str) and not isinstance(v, str):
                raise ValueError(f"trace config: {k} must be a string, got {v!r}")
            kwargs[k] = v
        return cls(**kwargs)
