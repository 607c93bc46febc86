"""RunRecorder: the state of one traced container start and the hot loop that drains its group.

Everything here runs on the tracer's single reader thread except construction (in start_run) and
the few attribute writes documented on Tracer. Keep drain() lean: it is what the throughput bench
measures against a C reader.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

from agent.trace import fanotify as fan
from agent.trace.model import RunMeta
from agent.trace.mounts import ContainerRoot

log = logging.getLogger(__name__)

KIND_EXEC, KIND_OPEN, KIND_READ = 1, 2, 4
_KIND_NAMES = ((KIND_EXEC, "exec"), (KIND_OPEN, "open"), (KIND_READ, "read"))


def _kind_bits(mask: int) -> int:
    return (
        (KIND_EXEC if mask & fan.FAN_OPEN_EXEC else 0)
        | (KIND_OPEN if mask & fan.FAN_OPEN else 0)
        | (KIND_READ if mask & fan.FAN_ACCESS else 0)
    )


# mask -> kind bits for every combination of the three traced event bits.
KIND_OF: dict[int, int] = {}
for _m in range(8):
    _mask = (fan.FAN_OPEN_EXEC if _m & 1 else 0) | (fan.FAN_OPEN if _m & 2 else 0) | (fan.FAN_ACCESS if _m & 4 else 0)
    KIND_OF[_mask] = _kind_bits(_mask)


def path_text(path: bytes) -> str:
    """Paths as stored: UTF-8, undecodable bytes as backslash escapes (Parquet strings are UTF-8)."""
    return path.decode("utf-8", "backslashreplace")


def kinds_string(bits: int) -> str:
    """Sorted comma-joined kind names, as in the accesses schema."""
    return ",".join(name for bit, name in _KIND_NAMES if bits & bit)


DELETED_SUFFIX = b" (deleted)"

# Per-path record slots (a list, not an object: the hot loop mutates it in place). F_PATH holds the
# path as readlink gave it until finalisation normalises it; F_SIZE is -1 and F_FROM_IMAGE None
# until resolved.
F_FIRST_NS, F_SEQ, F_KINDS, F_OPENS, F_SIZE, F_FROM_IMAGE, F_PATH = range(7)


@dataclass
class RunSummary:
    """What a finished run looked like from the reader's side (for metrics and benchmarks)."""

    run_id: str
    container_id: str
    events: int
    files: int
    end_reason: str
    flags: frozenset[str]
    first_event_ns: int | None  # clock time of the first / last read that returned events
    last_event_ns: int | None


class RunRecorder:
    """One run: the group fd, the pidfd, and per-path first-access records."""

    def __init__(
        self,
        meta: RunMeta,
        pid: int,
        group_fd: int,
        pidfd: int,
        *,
        start_ns: int,
        started_at_ns: int,
        window_ns: int,
        clock: Callable[[], int],
        late_attach: bool = False,
    ) -> None:
        self.meta = meta
        self.pid = pid
        self.group_fd = group_fd
        self.pidfd = pidfd
        self.start_ns = start_ns
        self.started_at_ns = started_at_ns
        self.window_ns = window_ns
        self.deadline_ns = start_ns + window_ns
        self.clock = clock
        self.flags: set[str] = {"late_attach"} if late_attach else set()
        self.files: dict[bytes, list] = {}
        self.seq = 0
        self.events = 0
        self.first_event_ns: int | None = None
        self.last_event_ns: int | None = None
        self.ready_ns: int | None = None
        self.ready_source: str | None = None
        self.end_ns: int | None = None
        self.end_reason: str | None = None
        self.pending_end: str | None = None  # the run has ended; its queue is still being drained
        self.drained = False
        self.ended = threading.Event()
        self.root: ContainerRoot | None = None
        self._prefixes: tuple[bytes, ...] = ()
        self.size_on_read = True
        self._marker_raws: frozenset[bytes] = frozenset()
        marker = meta.readiness.marker if meta.readiness else None
        self.marker: bytes | None = os.fsencode(marker) if marker else None
        self.next_marker_poll_ns = start_ns

    def attach_root(self, root: ContainerRoot | None) -> None:
        """Learn the overlay layout (reader thread, before the group's first read)."""
        self.root = root
        if root is not None:
            # Longest first so a nested mount point wins; "/" would strip nothing useful.
            self._prefixes = tuple(sorted((p for p in root.host_mount_points if p != b"/"), key=len, reverse=True))
        # With the layers known, sizes come from them at finalisation; otherwise from the event fd.
        self.size_on_read = root is None or not root.lowerdirs
        if self.marker is not None:
            self._marker_raws = frozenset((self.marker, *(p + self.marker for p in self._prefixes)))

    def set_ready(self, now_ns: int, source: str) -> None:
        if self.ready_ns is None:
            self.ready_ns = max(0, now_ns - self.start_ns)
            self.ready_source = source

    def normalise(self, path: bytes) -> bytes:
        """Host-visible path -> path inside the image (strip the rootfs mount point if present)."""
        for p in self._prefixes:
            if path.startswith(p) and path[len(p) : len(p) + 1] == b"/":
                return path[len(p) :]
        return path

    def _first_sight(self, raw: bytes, efd: int, mask: int, now: int) -> list:
        # Kept minimal: from_image and (for overlays) size are resolved off the reader thread at
        # finalisation from the layer dirs, see finalise.resolve_files.
        size = -1
        if self.size_on_read:
            try:
                size = os.lseek(efd, 0, os.SEEK_END)
            except OSError:
                pass
        rec = [now - self.start_ns, self.seq, KIND_OF.get(mask & fan.TRACE_MASK, 0), 1 if mask & fan.FAN_OPEN else 0, size, None, raw]
        self.seq += 1
        if raw in self._marker_raws:
            self.set_ready(now, "marker")
        return rec

    def drain(self, bufsize: int, max_reads: int, own_pid: int, fd_paths: dict[int, bytes]) -> int:
        """Read and record up to max_reads buffers; returns events handled.

        Sets self.drained: True when the queue was seen empty, False when max_reads ran out first.
        """
        fd = self.group_fd
        handled = 0
        self.drained = False
        for _ in range(max_reads):
            try:
                buf = os.read(fd, bufsize)
            except BlockingIOError:
                self.drained = True
                break
            except OSError as e:
                # EMFILE/ENFILE: the kernel dropped the event it could not install an fd for.
                log.warning("event=fanotify_read_failed run_id=%s error=%s", self.meta.run_id, e)
                self.flags.add("overflow")
                self.drained = True
                break
            if not buf:
                self.drained = True
                break
            handled += self._record(buf, own_pid, fd_paths)
            self.last_event_ns = self.clock()
            if self.first_event_ns is None:
                self.first_event_ns = self.last_event_ns
            if len(buf) < bufsize - fan.EVENT_LEN:
                self.drained = True  # short read: the queue was empty, skip the EAGAIN round trip
                break
        self.events += handled
        return handled

    def _record(self, buf: bytes, own_pid: int, fd_paths: dict[int, bytes]) -> int:
        n = len(buf) // fan.EVENT_LEN
        if len(buf) % fan.EVENT_LEN or buf[4] != fan.FANOTIFY_METADATA_VERSION:
            return self._record_slow(fan.iter_events(buf), own_pid, fd_paths)
        # Columns straight from the buffer: ints 2 (mask, low half), 4 (fd) and 5 (pid) of each
        # 6-int record. The common batch (no overflow record, none of our own accesses) then
        # goes through readlink and close with map(), which keeps the interpreter out of the loop.
        ints = memoryview(buf).cast("i")
        fds = ints[4::6].tolist()
        if min(fds) < 0 or own_pid in ints[5::6].tolist():
            return self._record_slow(fan.iter_events(buf), own_pid, fd_paths)
        get = fd_paths.get
        names = [get(efd) or fd_paths.setdefault(efd, b"/proc/self/fd/%d" % efd) for efd in fds]
        try:
            links = list(map(os.readlink, names))
        except OSError:
            return self._record_slow(zip(ints[2::6].tolist(), fds, ints[5::6].tolist()), own_pid, fd_paths)
        files = self.files
        kind_of = KIND_OF
        open_bit = fan.FAN_OPEN
        now = self.clock()
        try:
            for raw, mask, efd in zip(links, ints[2::6].tolist(), fds):
                rec = files.get(raw)
                if rec is None:
                    files[raw] = self._first_sight(raw, efd, mask, now)
                else:
                    rec[2] |= kind_of.get(mask, 0)
                    if mask & open_bit:
                        rec[3] += 1
        finally:
            list(map(os.close, fds))
        return n

    def _record_slow(self, events, own_pid: int, fd_paths: dict[int, bytes]) -> int:
        """Event by event: batches holding overflow records or our own accesses."""
        files = self.files
        now = self.clock()
        n = 0
        for mask, efd, pid in events:
            n += 1
            if efd < 0:
                if mask & fan.FAN_Q_OVERFLOW:
                    self.flags.add("overflow")
                continue
            try:
                if pid == own_pid:
                    continue
                raw = os.readlink(fd_paths.get(efd) or b"/proc/self/fd/%d" % efd)
                rec = files.get(raw)
                if rec is None:
                    files[raw] = self._first_sight(raw, efd, mask, now)
                else:
                    rec[2] |= KIND_OF.get(mask, 0)
                    if mask & fan.FAN_OPEN:
                        rec[3] += 1
            except OSError:
                pass
            finally:
                os.close(efd)
        return n

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.meta.run_id,
            container_id=self.meta.container_id,
            events=self.events,
            files=len(self.files),
            end_reason=self.end_reason or "",
            flags=frozenset(self.flags),
            first_event_ns=self.first_event_ns,
            last_event_ns=self.last_event_ns,
        )
