"""Plain typed views of NRI pods and containers, the only objects handlers ever see.

Handlers must not depend on protobuf types: the wire can change (newer NRI adds fields) without
touching any handler. Conversion happens once per event in :func:`pod_from_pb` and
:func:`container_from_pb`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Event(enum.IntEnum):
    """NRI lifecycle events; ``1 << (value - 1)`` is the event's bit in the subscription mask."""

    RUN_POD_SANDBOX = 1
    STOP_POD_SANDBOX = 2
    REMOVE_POD_SANDBOX = 3
    CREATE_CONTAINER = 4
    POST_CREATE_CONTAINER = 5
    START_CONTAINER = 6
    POST_START_CONTAINER = 7
    UPDATE_CONTAINER = 8
    POST_UPDATE_CONTAINER = 9
    STOP_CONTAINER = 10
    REMOVE_CONTAINER = 11

    @property
    def bit(self) -> int:
        return 1 << (self.value - 1)


class ContainerState(enum.IntEnum):
    UNKNOWN = 0
    CREATED = 1
    PAUSED = 2
    RUNNING = 3
    STOPPED = 4


@dataclass(frozen=True, slots=True)
class Mount:
    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pod:
    id: str
    name: str = ""
    uid: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    pid: int = 0
    cgroup_parent: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)
    """Linux namespace type -> path ("" when the pod creates a new one)."""


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    pod_sandbox_id: str = ""
    name: str = ""
    state: ContainerState = ContainerState.UNKNOWN
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    pid: int = 0
    """Host pid of the container's init; 0 until START_CONTAINER."""
    cgroups_path: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)


def _state(value: int) -> ContainerState:
    try:
        return ContainerState(value)
    except ValueError:
        return ContainerState.UNKNOWN


def pod_from_pb(pb: Any) -> Pod:
    linux = pb.linux
    return Pod(
        id=pb.id,
        name=pb.name,
        uid=pb.uid,
        namespace=pb.namespace,
        labels=dict(pb.labels),
        annotations=dict(pb.annotations),
        runtime_handler=pb.runtime_handler,
        pid=pb.pid,
        cgroup_parent=linux.cgroup_parent,
        namespaces={ns.type: ns.path for ns in linux.namespaces},
    )


def container_from_pb(pb: Any) -> Container:
    linux = pb.linux
    return Container(
        id=pb.id,
        pod_sandbox_id=pb.pod_sandbox_id,
        name=pb.name,
        state=_state(pb.state),
        labels=dict(pb.labels),
        annotations=dict(pb.annotations),
        args=tuple(pb.args),
        env=tuple(pb.env),
        mounts=tuple(Mount(m.destination, m.type, m.source, tuple(m.options)) for m in pb.mounts),
        pid=pb.pid,
        cgroups_path=linux.cgroups_path,
        namespaces={ns.type: ns.path for ns in linux.namespaces},
    )
