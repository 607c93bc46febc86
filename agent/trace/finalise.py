"""Turn a finished RunRecorder into a runs row and an accesses table (pure; off the handler path)."""

from __future__ import annotations

import logging
import os
from typing import Iterable

import pyarrow as pa

from agent.trace import schema
from agent.trace.recorder import (
    F_FIRST_NS,
    F_FROM_IMAGE,
    F_KINDS,
    F_OPENS,
    F_PATH,
    F_SEQ,
    F_SIZE,
    DELETED_SUFFIX,
    RunRecorder,
    kinds_string,
    path_text,
)

log = logging.getLogger(__name__)

# Runs that ended for one of these reasons saw the whole window they were meant to see.
PROPER_ENDS = frozenset({"stop", "exit", "window"})


def quiescence_ready_ns(first_ns: Iterable[int], end_ns: int, gap_ns: int) -> int | None:
    """Readiness from access quiescence.

    Ready = the first-access time of the last new file before the first gap of at least `gap_ns`
    with no new file; the gap may run up to the end of the run. None when the run never had such a
    gap (it kept touching new files until it ended) or touched no file at all.
    """
    times = sorted(first_ns)
    if not times:
        return None
    for a, b in zip(times, times[1:]):
        if b - a >= gap_ns:
            return a
    return times[-1] if end_ns - times[-1] >= gap_ns else None


def resolve_files(rec: RunRecorder) -> None:
    """Normalise paths and decide from_image and size from the overlay layers, in place.

    Run by the finaliser as soon as a run ends, while the container's upper dir still exists.
    from_image is False for a path present in the upper dir (created or copied up, i.e. modified,
    by the container at any time during the run) or deleted while open; size comes from the
    topmost layer holding the path. Without an overlay, from_image stays unknown (None) and the
    size is the one read from the event fd.
    """
    root = rec.root
    upper = root.upperdir if root is not None else None
    lowers = root.lowerdirs if root is not None else ()
    if upper is not None and not os.path.isdir(upper):
        log.warning("event=overlay_upper_gone run_id=%s upper=%r", rec.meta.run_id, upper)
        upper = None
        lowers = ()
    for r in rec.file_records().values():
        if r[F_FROM_IMAGE] is not None:
            continue  # resolved already
        path = rec.normalise(r[F_PATH])
        if path.endswith(DELETED_SUFFIX):
            r[F_PATH] = path[: -len(DELETED_SUFFIX)]
            r[F_FROM_IMAGE] = False
            continue
        r[F_PATH] = path
        if upper is None:
            continue
        try:
            st = os.lstat(upper + path)
            r[F_FROM_IMAGE] = False
            r[F_SIZE] = st.st_size
            continue
        except OSError:
            pass
        # In no upper and no lower dir: the container made it and then removed or renamed it
        # (a temp file, a journal, `x.tmp` renamed to `x`), so it is not an image file either.
        in_lower = False
        for layer in lowers:
            try:
                st = os.lstat(layer + path)
            except OSError:
                continue
            in_lower = True
            if r[F_SIZE] < 0:
                r[F_SIZE] = st.st_size
            break
        r[F_FROM_IMAGE] = in_lower if lowers else True


def merged_files(rec: RunRecorder) -> list[list]:
    """Per-path records keyed by the normalised path (a file seen both from inside the container and
    through the host rootfs path is one file), ordered by first access."""
    by_path: dict[bytes, list] = {}
    for r in rec.file_records().values():
        cur = by_path.get(r[F_PATH])
        if cur is None:
            by_path[r[F_PATH]] = list(r)
            continue
        if r[F_SEQ] < cur[F_SEQ]:
            cur[F_SEQ], cur[F_FIRST_NS], cur[F_SIZE] = r[F_SEQ], r[F_FIRST_NS], r[F_SIZE]
        cur[F_KINDS] |= r[F_KINDS]
        cur[F_OPENS] += r[F_OPENS]
        if cur[F_FROM_IMAGE] is None or r[F_FROM_IMAGE] is None:
            cur[F_FROM_IMAGE] = cur[F_FROM_IMAGE] if r[F_FROM_IMAGE] is None else r[F_FROM_IMAGE]
        else:
            cur[F_FROM_IMAGE] = cur[F_FROM_IMAGE] and r[F_FROM_IMAGE]
    return sorted(by_path.values(), key=lambda r: r[F_SEQ])


def marker_written_ns(rec: RunRecorder) -> int | None:
    """When the marker reached the upper dir, for a marker we never saw appear while running.

    A workload that renames its marker into place (no open of the final name) and exits before
    the next poll leaves only this trace of becoming ready: the file's mtime in the upper dir.
    """
    marker = rec.meta.readiness.marker if rec.meta.readiness else None
    upper = rec.root.upperdir if rec.root is not None else None
    if not marker or upper is None:
        return None
    try:
        st = os.lstat(upper + os.fsencode(marker))
    except OSError:
        return None
    end_rel = (rec.end_ns or rec.start_ns) - rec.start_ns
    return min(max(0, st.st_mtime_ns - rec.started_at_ns), end_rel)


def resolve_readiness(rec: RunRecorder, files: list[list], gap_ns: int) -> tuple[int | None, str]:
    if rec.ready_ns is not None:
        return rec.ready_ns, rec.ready_source or "none"
    marker_ns = marker_written_ns(rec)
    if marker_ns is not None:
        return marker_ns, "marker"
    if rec.meta.readiness is not None:
        return None, "none"  # a configured signal never fired: not ready, and we do not guess
    end_rel = (rec.end_ns or rec.start_ns) - rec.start_ns
    ready = quiescence_ready_ns((f[F_FIRST_NS] for f in files), end_rel, gap_ns)
    return ready, ("quiescence" if ready is not None else "none")


def run_identity(rec: RunRecorder) -> dict:
    """The columns that say which run this is; the same in a finished run and its journal entry."""
    m = rec.meta
    return {
        "run_id": m.run_id,
        "service": m.service,
        "namespace": m.namespace,
        "pod": m.pod,
        "pod_uid": m.pod_uid,
        "container": m.container,
        "container_id": m.container_id,
        "image_ref": m.image_ref,
        "image_ref_normalized": m.image_ref_normalized,
        "image_digest": m.image_digest,
        "node": m.node,
        "started_at": rec.started_at_ns,
    }


def build_run(
    rec: RunRecorder, *, gap_ns: int, min_run_ns: int, agent_version: str, wall_now_ns: int
) -> tuple[dict, pa.Table]:
    resolve_files(rec)
    files = merged_files(rec)
    ready_ns, ready_source = resolve_readiness(rec, files, gap_ns)
    flags = set(rec.flags)
    duration = (rec.end_ns or rec.start_ns) - rec.start_ns
    # StopContainer races the pidfd for a process that just died, so a stop ends a run the same way.
    if rec.end_reason in ("exit", "stop") and (ready_ns is None or duration < min_run_ns):
        flags.add("early_exit")
    m = rec.meta
    run = {
        **run_identity(rec),
        "ended_at": rec.started_at_ns + duration if rec.end_ns is not None else wall_now_ns,
        "end_reason": rec.end_reason,
        "exit_code": None,  # a pidfd on a non-child cannot tell; the runtime knows
        "ready_ns": ready_ns,
        "ready_source": ready_source,
        "window_ns": rec.window_ns,
        "complete": not flags and rec.end_reason in PROPER_ENDS,
        **{f"flag_{f}": f in flags for f in schema.RUN_FLAGS},
        "events": rec.events,
        "agent_version": agent_version,
        "schema_version": schema.SCHEMA_VERSION,
    }
    unknown = flags - set(schema.RUN_FLAGS)
    assert not unknown, f"flags missing from schema.RUN_FLAGS: {unknown}"
    accesses = pa.Table.from_pydict(
        {
            "run_id": [m.run_id] * len(files),
            "path": [path_text(f[F_PATH]) for f in files],
            "seq": list(range(len(files))),
            "first_ns": [f[F_FIRST_NS] for f in files],
            "kinds": [kinds_string(f[F_KINDS]) for f in files],
            "opens": [f[F_OPENS] for f in files],
            "size": [f[F_SIZE] if f[F_SIZE] >= 0 else None for f in files],
            "from_image": [f[F_FROM_IMAGE] for f in files],
        },
        schema=schema.ACCESSES,
    )
    return run, accesses


def inflight_record(rec: RunRecorder) -> dict:
    """What the store journals at run start, so a restarted agent can close the run (agent_restart)."""
    return {
        **run_identity(rec),
        "window_ns": rec.window_ns,
        "late_attach": "late_attach" in rec.flags,
    }


def agent_restart_run(inflight: dict, agent_version: str) -> tuple[dict, pa.Table]:
    """A run a dead agent left in flight: recorded as incomplete, with no accesses (they were lost)."""
    run = {name: inflight.get(name) for name in schema.RUNS.names}
    run.update(
        {
            "ended_at": None,
            "end_reason": "agent_restart",
            "exit_code": None,
            "ready_ns": None,
            "ready_source": "none",
            "complete": False,
            **{f"flag_{f}": False for f in schema.RUN_FLAGS},
            "flag_agent_restart": True,
            "flag_late_attach": bool(inflight.get("late_attach")),
            "events": None,
            "agent_version": agent_version,
            "schema_version": schema.SCHEMA_VERSION,
        }
    )
    return run, schema.ACCESSES.empty_table()
