"""RunRecorder: the state of one traced container start and the hot loop that drains its group.

Everything here runs on the tracer's single reader thread except construction (in start_run) and
the few attribute writes documented on Tracer. Keep drain() lean: it is what the throughput bench
measures against a C reader.
"""

from __future__ import annotations

import collections
import itertools
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

# Per-path record slots of file_records() (a list: finalisation mutates it in place). F_PATH holds
# the path as readlink gave it until finalisation normalises it; F_SIZE is -1 and F_FROM_IMAGE None
# until resolved.
F_FIRST_NS, F_SEQ, F_KINDS, F_OPENS, F_SIZE, F_FROM_IMAGE, F_PATH = range(7)


def close_all(fds: list[int]) -> None:
    """Close every fd in the list; one that is not open (EBADF) does not stop the rest.

    The fds of one read are all open at once, so they are distinct. When they also fill a range
    (the kernel hands out the lowest free numbers, so they usually do), no other fd can sit inside
    it, and one close_range(2) closes them all instead of one close(2) per event.
    """
    if not fds:
        return
    lo, hi = min(fds), max(fds)
    if hi - lo + 1 == len(fds):
        os.closerange(lo, hi + 1)
        return
    it = iter(fds)
    while True:
        try:
            collections.deque(map(os.close, it), maxlen=0)
            return
        except OSError:
            continue  # the iterator resumes after the fd that failed


def fd_link_names(names: list[bytes], upto: int) -> list[bytes]:
    """Grow `names` (index = fd number) so it holds b"/proc/self/fd/N" for every N <= upto."""
    names.extend(b"/proc/self/fd/%d" % fd for fd in range(len(names), upto + 1))
    return names


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
        # Hot-path state, kept as dicts of bytes -> int so the reader never creates an object the
        # cyclic GC must track (per-path lists made full collections a visible share of the drain):
        # first_seen: raw path -> clock of the read that first returned it; insertion order is the
        # order of first access. counts: event mask -> raw path -> events with that mask.
        self.first_seen: dict[bytes, int] = {}
        self.counts: dict[int, collections.Counter[bytes]] = {}
        self.sizes: dict[bytes, int] = {}  # only while size_on_read: from the event fd at first sight
        self.files: dict[bytes, list] | None = None  # per-path records, built at finalisation
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
        self.attached = threading.Event()  # the reader has taken the run over (Tracer.wait_attached)
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

    def drain(self, bufsize: int, max_reads: int, own_pid: int, fd_names: list[bytes]) -> int:
        """Read and record up to max_reads buffers; returns events handled.

        Sets self.drained: True when the queue was seen empty, False when max_reads ran out first.
        `fd_names` is the reader's shared cache of b"/proc/self/fd/N" names, indexed by fd.
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
            handled += self._record(buf, own_pid, fd_names)
            self.last_event_ns = self.clock()
            if self.first_event_ns is None:
                self.first_event_ns = self.last_event_ns
            if len(buf) < bufsize - fan.EVENT_LEN:
                self.drained = True  # short read: the queue was empty, skip the EAGAIN round trip
                break
        self.events += handled
        return handled

    def _record(self, buf: bytes, own_pid: int, fd_names: list[bytes]) -> int:
        n = len(buf) // fan.EVENT_LEN
        if len(buf) % fan.EVENT_LEN or buf[4] != fan.FANOTIFY_METADATA_VERSION:
            return self._record_slow(fan.iter_events(buf), own_pid, fd_names)
        # Columns straight from the buffer: ints 2 (mask, low half), 4 (fd) and 5 (pid) of each
        # 6-int record. The common batch (no overflow record, none of our own accesses) then goes
        # through readlink, bookkeeping and close with C-level iteration only: no Python code runs
        # per event.
        ints = memoryview(buf).cast("i")
        fds = ints[4::6].tolist()
        if min(fds) < 0 or own_pid in ints[5::6].tolist():
            return self._record_slow(fan.iter_events(buf), own_pid, fd_names)
        top = max(fds)
        if top >= len(fd_names):
            fd_link_names(fd_names, top)
        try:
            try:
                links = list(map(os.readlink, map(fd_names.__getitem__, fds)))
            except OSError:
                return self._record_slow(zip(ints[2::6].tolist(), fds, ints[5::6].tolist()), own_pid, fd_names, close=False)
            now = self.clock()
            first_seen = self.first_seen
            known = len(first_seen)
            collections.deque(map(first_seen.setdefault, links, itertools.repeat(now)), maxlen=0)
            masks = ints[2::6].tolist()
            m0 = masks[0]
            if masks.count(m0) == n:
                self._counter(m0).update(links)
            else:
                for m in set(masks):
                    self._counter(m).update(itertools.compress(links, map(m.__eq__, masks)))
            if len(first_seen) > known:
                if self.size_on_read:
                    self._read_sizes(links, fds)
                if self._marker_raws and not self._marker_raws.isdisjoint(links):
                    self.set_ready(now, "marker")
        finally:
            close_all(fds)
        return n

    def _counter(self, mask: int) -> collections.Counter[bytes]:
        c = self.counts.get(mask)
        if c is None:
            c = self.counts[mask] = collections.Counter()
        return c

    def _read_sizes(self, links: list[bytes], fds: list[int]) -> None:
        # Without the overlay layers, the size comes from the event fd, which is gone after close.
        sizes = self.sizes
        for raw, efd in zip(links, fds):
            if raw not in sizes:
                try:
                    sizes[raw] = os.lseek(efd, 0, os.SEEK_END)
                except OSError:
                    sizes[raw] = -1

    def _record_slow(self, events, own_pid: int, fd_names: list[bytes], close: bool = True) -> int:
        """Event by event: batches holding overflow records or our own accesses."""
        first_seen = self.first_seen
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
                raw = os.readlink(fd_names[efd] if efd < len(fd_names) else b"/proc/self/fd/%d" % efd)
                if raw not in first_seen:
                    first_seen[raw] = now
                    if self.size_on_read:
                        self._read_sizes([raw], [efd])
                    if raw in self._marker_raws:
                        self.set_ready(now, "marker")
                self._counter(mask)[raw] += 1
            except OSError:
                pass
            finally:
                if close:
                    os.close(efd)
        return n

    def file_records(self) -> dict[bytes, list]:
        """Per-path records (F_* slots) from the hot-path state, built once, in first-access order."""
        if self.files is None:
            records: dict[bytes, list] = {}
            sizes = self.sizes
            for seq, (raw, first) in enumerate(self.first_seen.items()):
                records[raw] = [first - self.start_ns, seq, 0, 0, sizes.get(raw, -1), None, raw]
            open_bit = fan.FAN_OPEN
            for mask, counter in self.counts.items():
                kind = KIND_OF.get(mask & fan.TRACE_MASK, 0)
                opens = mask & open_bit
                for raw, count in counter.items():
                    r = records[raw]
                    r[F_KINDS] |= kind
                    if opens:
                        r[F_OPENS] += count
            self.files = records
        return self.files

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.meta.run_id,
            container_id=self.meta.container_id,
            events=self.events,
            files=len(self.first_seen) if self.files is None else len(self.files),
            end_reason=self.end_reason or "",
            flags=frozenset(self.flags),
            first_event_ns=self.first_event_ns,
            last_event_ns=self.last_event_ns,
        )
