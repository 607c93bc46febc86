"""Tracer: per-container fanotify groups, one reader thread, off-path finalisation.

Threads:
- callers (NRI handlers): start_run / stop_run / set_image_digest / runtime_disconnected. Each does
  a few syscalls at most and never waits on another thread.
- trace-reader: one epoll over every group fd, every container's pidfd and a wake-up eventfd. Drains
  events, ends runs (stop, process exit, window), polls readiness markers.
- trace-finaliser: in-flight journal, run rows and accesses to the store, digest waits, inventories.
- trace-probe-N: readiness probe commands, each bounded by probe_timeout_s.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import queue
import selectors
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from agent.trace import fanotify as fan
from agent.trace.finalise import agent_restart_run, build_run, inflight_record, resolve_files
from agent.trace.inventory import take_inventory
from agent.trace.model import RunMeta, TraceConfig
from agent.trace.mounts import ContainerRoot, find_container_root
from agent.trace.recorder import RunRecorder, RunSummary

if TYPE_CHECKING:
    from agent.store import TraceStore

log = logging.getLogger(__name__)

_WAKE, _GROUP, _PIDFD = "wake", "group", "pidfd"


class Tracer:
    """Records which files each container start touches. See module doc for the thread layout."""

    def __init__(
        self,
        store: "TraceStore",
        config: TraceConfig | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        *,
        wall_clock: Callable[[], int] = time.time_ns,
        on_finished: Callable[[RunSummary], None] | None = None,
        defer: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """``defer(fn)`` runs fn a little later; the agent passes ``agent.nri.after_answer`` so a new
        run's set-up on the reader thread waits until containerd has the StartContainer answer."""
        self.config = config or TraceConfig()
        self._defer = defer or (lambda fn: fn())
        self._clock = clock
        self._wall = wall_clock
        self._own_pid = os.getpid()
        self._bufsize = self.config.read_events * fan.EVENT_LEN
        nofile = fan.raise_nofile_limit(self.config.read_events * 4 + 1024)
        if nofile < self.config.read_events * 2:
            log.warning("event=nofile_limit_low limit=%d read_events=%d", nofile, self.config.read_events)
        try:
            fan.reserve_fd_table(min(nofile - 1, self.config.read_events * 2 + 256))
        except OSError as e:  # only slower: the table grows on demand instead
            log.warning("event=fd_table_reserve_failed error=%s", e)
        self._lock = threading.Lock()
        self._active: dict[str, RunRecorder] = {}
        self._commands: collections.deque[tuple[Any, ...]] = collections.deque()
        self._closed = False
        self._fd_names: list[bytes] = []  # b"/proc/self/fd/N" at index N, grown on demand
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sel = selectors.EpollSelector()
        self._sel.register(self._wake_fd, selectors.EVENT_READ, (_WAKE, None))
        self._registered: set[RunRecorder] = set()
        self._probes = ThreadPoolExecutor(max_workers=self.config.probe_workers, thread_name_prefix="trace-probe")
        self._finaliser = _Finaliser(store, self.config, self._clock, self._wall, on_finished)
        self._finaliser.submit(("recover",))
        self._finaliser.start()
        self._reader = threading.Thread(target=self._read_loop, name="trace-reader", daemon=True)
        self._reader.start()

    # --- caller API (NRI handler threads) --------------------------------------------------------
    def start_run(self, meta: RunMeta, pid: int, late_attach: bool = False) -> bool:
        """Mark the container's root filesystem and start recording. Never raises; False = not traced.

        Called at START_CONTAINER while the container's pid is still the blocked `runc init`, so the
        entrypoint's first exec is seen. Cost: pidfd_open + fanotify_init + fanotify_mark.
        """
        try:
            return self._start_run(meta, pid, late_attach)
        except Exception:  # fail open: the container starts untraced, the handler answers in time
            log.exception("event=trace_start_error container=%s pid=%s", getattr(meta, "container_id", "?"), pid)
            return False

    def _start_run(self, meta: RunMeta, pid: int, late_attach: bool) -> bool:
        start_ns = self._clock()
        started_at_ns = self._wall()
        if self._closed:
            return False
        pidfd = group_fd = -1
        try:
            pidfd = fan.pidfd_open(pid)
            group_fd = fan.open_filesystem_group(f"/proc/{pid}/root")
        except (OSError, ValueError) as e:
            for fd in (pidfd, group_fd):
                if fd >= 0:
                    os.close(fd)
            hint = ""
            if isinstance(e, OSError) and e.errno == errno.EMFILE and pidfd >= 0 and group_fd < 0:
                hint = " hint=fanotify_group_limit(sysctl fs.fanotify.max_user_groups)"
            log.warning("event=trace_start_failed container=%s pid=%s error=%s%s", meta.container_id, pid, e, hint)
            return False
        try:
            window_s = meta.window_s if meta.window_s and meta.window_s > 0 else self.config.window_s
            rec = RunRecorder(
                meta,
                pid,
                group_fd,
                pidfd,
                start_ns=start_ns,
                started_at_ns=started_at_ns,
                window_ns=int(window_s * 1e9),
                clock=self._clock,
                late_attach=late_attach,
            )
        except BaseException:
            os.close(group_fd)
            os.close(pidfd)
            raise
        with self._lock:
            previous = self._active.get(meta.container_id)
            self._active[meta.container_id] = rec
        if previous is not None:
            log.info("event=trace_run_replaced container=%s run_id=%s", meta.container_id, previous.meta.run_id)
            self._command(("end", previous, "stop"))
        # The events wait in the group's queue meanwhile: the entrypoint runs only after the answer.
        self._command(("add", rec), wake=False)
        self._defer(self._wake)
        return True

    def stop_run(self, container_id: str, reason: str = "stop") -> None:
        """End the container's run (its StopContainer); the final drain and the write happen off-path."""
        with self._lock:
            rec = self._active.get(container_id)
        if rec is not None:
            self._command(("end", rec, reason))

    def set_image_digest(self, container_id: str, digest: str) -> None:
        with self._lock:
            rec = self._active.get(container_id)
            if rec is not None:
                rec.meta = rec.meta.replace(image_digest=digest)
        self._finaliser.submit(("digest", container_id, digest))

    def runtime_disconnected(self) -> None:
        """containerd went away: runs in flight keep recording but can no longer be complete."""
        with self._lock:
            for rec in self._active.values():
                rec.flags.add("runtime_restart")
            n = len(self._active)
        log.info("event=trace_runtime_disconnected inflight_runs=%d", n)

    def reconfigure(self, config: TraceConfig) -> None:
        """Take new knobs (NRI Configure). Runs already started keep their window; buffer sizes,
        reads per wake-up and the probe pool stay as they were at start."""
        config = dataclasses.replace(config, read_events=self.config.read_events,
                                     reads_per_wake=self.config.reads_per_wake,
                                     probe_workers=self.config.probe_workers)
        self.config = config
        self._finaliser.config = config

    def wait_attached(self, container_id: str, timeout: float) -> bool:
        """Wait until the reader has set the container's run up (root layout read, fds watched).

        start_run returns before that: set-up waits for the deferred wake-up. False if there is no
        such run, it was refused, or the timeout passed.
        """
        with self._lock:
            rec = self._active.get(container_id)
        if rec is None or not rec.attached.wait(timeout):
            return False
        return rec.end_reason != "refused"

    def active_runs(self) -> int:
        with self._lock:
            return len(self._active)

    def is_tracing(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._active

    def close(self, timeout: float = 10.0) -> None:
        """End every run (end_reason agent_shutdown, incomplete), write them, join threads, close fds."""
        if self._closed:
            return
        self._closed = True
        self._command(("close",))
        self._reader.join(timeout)
        self._probes.shutdown(wait=True, cancel_futures=True)
        self._finaliser.submit(("stop",))
        self._finaliser.join(timeout)
        self._sel.close()
        with self._lock:
            os.close(self._wake_fd)
            self._wake_fd = -1

    # --- reader thread ------------------------------------------------------------------------------
    def _command(self, cmd: tuple[Any, ...], wake: bool = True) -> None:
        self._commands.append(cmd)
        if wake:
            self._wake()

    def _wake(self) -> None:
        with self._lock:  # a late deferred wake must not write to a closed (maybe reused) fd number
            if self._wake_fd >= 0:
                fan.eventfd_signal(self._wake_fd)

    def _read_loop(self) -> None:
        bufsize, reads, own, fd_names = self._bufsize, self.config.reads_per_wake, self._own_pid, self._fd_names
        while True:
            try:
                for key, _ in self._sel.select(self._next_timeout()):
                    kind, rec = key.data
                    if rec is not None and rec.end_reason is not None:
                        continue  # ended earlier in this batch: its fds are closed (maybe reused)
                    if kind is _GROUP:
                        rec.drain(bufsize, reads, own, fd_names)
                        if rec.pending_end is not None and rec.drained:
                            self._finish(rec)
                    elif kind is _PIDFD:
                        self._end(rec, "exit")
                    elif not self._run_commands():
                        return
                self._tick()
            except Exception:  # the reader must outlive any single bad run
                log.exception("trace_reader_error")
                time.sleep(0.01)

    def _run_commands(self) -> bool:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        while self._commands:
            cmd = self._commands.popleft()
            if cmd[0] == "add":
                self._add(cmd[1])
            elif cmd[0] == "end":
                self._end(cmd[1], cmd[2])
            elif cmd[0] == "close":
                for rec in list(self._registered):
                    self._end(rec, "agent_shutdown")
                for rec in list(self._registered):
                    self._finish(rec, drain_all=True)
                return False
        return True

    def _add(self, rec: RunRecorder) -> None:
        # Checks and mountinfo parsing happen here, not in start_run: events queue until the first drain.
        if self._is_host_root(rec.pid):
            # A filesystem mark on our own root would record the whole node; drop the run.
            log.error("event=trace_refused_host_root run_id=%s container=%s pid=%d", rec.meta.run_id, rec.meta.container_id, rec.pid)
            os.close(rec.group_fd)
            os.close(rec.pidfd)
            rec.end_reason = "refused"  # a later stop/end for it is a no-op (its fds are gone)
            rec.ended.set()
            rec.attached.set()
            with self._lock:
                if self._active.get(rec.meta.container_id) is rec:
                    del self._active[rec.meta.container_id]
            return
        rec.attach_root(find_container_root(rec.pid))
        try:
            self._sel.register(rec.group_fd, selectors.EVENT_READ, (_GROUP, rec))
            self._sel.register(rec.pidfd, selectors.EVENT_READ, (_PIDFD, rec))
        except (OSError, ValueError) as e:
            log.warning("event=trace_register_failed run_id=%s error=%s", rec.meta.run_id, e)
        self._registered.add(rec)
        self._finaliser.submit(("begin", rec))
        readiness = rec.meta.readiness
        if readiness is not None and getattr(readiness, "probe", None):
            self._probes.submit(self._probe_loop, rec, tuple(readiness.probe))
        log.info(
            "event=trace_run_started run_id=%s container=%s service=%s pid=%d overlay=%s late_attach=%s",
            rec.meta.run_id, rec.meta.container_id, rec.meta.service, rec.pid,
            bool(rec.root and rec.root.upperdir), "late_attach" in rec.flags,
        )
        rec.attached.set()

    @staticmethod
    def _is_host_root(pid: int) -> bool:
        try:
            theirs, ours = os.stat(f"/proc/{pid}/root"), os.stat("/")
        except OSError:
            return False  # gone already: its pidfd ends the run
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def _end(self, rec: RunRecorder, reason: str) -> None:
        """The run is over (stop, exit, window...). What it queued until now still belongs to it:
        drain it in the normal rotation (a flood must not stall other runs), then _finish."""
        if rec.pending_end is not None or rec.end_reason is not None:
            return
        rec.end_ns = self._clock()
        rec.pending_end = reason
        rec.ended.set()
        try:
            self._sel.unregister(rec.pidfd)
        except (KeyError, ValueError):
            pass
        rec.drain(self._bufsize, self.config.reads_per_wake, self._own_pid, self._fd_names)
        if rec.drained:
            self._finish(rec)

    def _finish(self, rec: RunRecorder, drain_all: bool = False) -> None:
        if rec.end_reason is not None:
            return
        if drain_all:
            for _ in range(100_000):
                rec.drain(self._bufsize, self.config.reads_per_wake, self._own_pid, self._fd_names)
                if rec.drained:
                    break
        rec.end_reason = rec.pending_end
        try:
            self._sel.unregister(rec.group_fd)
        except (KeyError, ValueError):
            pass
        os.close(rec.pidfd)
        self._registered.discard(rec)
        with self._lock:
            if self._active.get(rec.meta.container_id) is rec:
                del self._active[rec.meta.container_id]
        # Closing a group waits for an SRCU grace period (about 8 ms here, 20+ ms under load): the
        # finaliser does it, so the reader goes on serving the other runs meanwhile.
        self._finaliser.submit(("finish", rec))

    def _next_timeout(self) -> float | None:
        if not self._registered:
            return None
        now = self._clock()
        live = [r for r in self._registered if r.pending_end is None]
        if not live:
            return None
        nxt = min(r.deadline_ns for r in live)
        for r in live:
            if r.marker is not None and r.ready_ns is None:
                nxt = min(nxt, r.next_marker_poll_ns)
        return max(0.0, (nxt - now) / 1e9)

    def _tick(self) -> None:
        if not self._registered:
            return
        now = self._clock()
        poll_ns = int(self.config.marker_poll_s * 1e9)
        for rec in list(self._registered):
            if rec.pending_end is not None:
                continue
            if now >= rec.deadline_ns:
                self._end(rec, "window")
            elif rec.marker is not None and rec.ready_ns is None and now >= rec.next_marker_poll_ns:
                rec.next_marker_poll_ns = now + poll_ns
                # lexists: stat-family calls raise no fanotify event, and an absolute symlink in the
                # container must not be followed into the host's root.
                if os.path.lexists(b"/proc/%d/root%s" % (rec.pid, rec.marker)):
                    # Take what is queued first: those accesses happened before the marker appeared,
                    # and their first_ns (read time) must not come out later than ready_ns.
                    rec.drain(self._bufsize, self.config.reads_per_wake, self._own_pid, self._fd_names)
                    rec.set_ready(self._clock(), "marker")

    # --- probe threads --------------------------------------------------------------------------------
    def _probe_loop(self, rec: RunRecorder, argv: tuple[str, ...]) -> None:
        while not rec.ended.is_set() and rec.ready_ns is None:
            try:
                rc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    timeout=self.config.probe_timeout_s, close_fds=True,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = None
            except OSError as e:
                log.warning("event=trace_probe_unusable run_id=%s argv0=%s error=%s", rec.meta.run_id, argv[0], e)
                return
            if rc == 0:
                if not rec.ended.is_set():
                    rec.set_ready(self._clock(), "probe")
                return
            if rec.ended.wait(self.config.probe_interval_s):
                return


class _Finaliser(threading.Thread):
    """Serialises every store write; waits (bounded) for late digests; schedules inventories."""

    def __init__(self, store: "TraceStore", config: TraceConfig, clock, wall, on_finished) -> None:
        super().__init__(name="trace-finaliser", daemon=True)
        self.store = store
        self.config = config
        self.clock = clock
        self.wall = wall
        self.on_finished = on_finished
        self.tasks: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.pending: list[tuple[RunRecorder, int]] = []  # (run, write-anyway deadline)
        self.digests: collections.OrderedDict[str, str] = collections.OrderedDict()
        # container id -> its root mount (layers for the inventory), not the recorder: no file lists kept.
        self.roots: collections.OrderedDict[str, ContainerRoot] = collections.OrderedDict()
        self.inventories: set[str] = set()
        self.inventory_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-inventory")
        self.last_begin_ns = clock()
        self.stopping = False
        self.stopped = threading.Event()  # wakes an inventory waiting for a quiet node

    def submit(self, task: tuple[Any, ...]) -> None:
        self.tasks.put(task)

    def run(self) -> None:
        while True:
            timeout = None
            if self.pending:
                timeout = max(0.0, (min(d for _, d in self.pending) - self.clock()) / 1e9)
            try:
                task = self.tasks.get(timeout=timeout)
            except queue.Empty:
                task = None
            try:
                if task is not None and not self.handle(task):
                    break
                self.flush_pending(force=False)
            except Exception:
                log.exception("event=trace_finaliser_error task=%s", task[0] if task else None)
        self.flush_pending(force=True)
        self.inventory_pool.shutdown(wait=True, cancel_futures=False)

    def handle(self, task: tuple[Any, ...]) -> bool:
        kind = task[0]
        if kind == "recover":
            for inflight in self.store.recover_inflight():
                try:
                    run, accesses = agent_restart_run(inflight, self.config.agent_version)
                    self.store.write_run(run, accesses)
                    log.info("event=trace_run_recovered run_id=%s container=%s", run["run_id"], run.get("container_id"))
                except Exception as e:
                    log.error("event=trace_recover_failed run_id=%s error=%s", inflight.get("run_id"), e)
        elif kind == "begin":
            rec = task[1]
            self.last_begin_ns = self.clock()
            if rec.root is not None:
                self.remember(self.roots, rec.meta.container_id, rec.root)
            try:
                self.store.begin_inflight(inflight_record(rec))
            except Exception as e:
                log.error("event=trace_inflight_write_failed run_id=%s error=%s", rec.meta.run_id, e)
            if rec.meta.image_digest:
                self.maybe_inventory(rec.meta.image_digest, rec.root)
        elif kind == "digest":
            _, cid, digest = task
            self.remember(self.digests, cid, digest)
            for rec, _ in self.pending:
                if rec.meta.container_id == cid:
                    rec.meta = rec.meta.replace(image_digest=digest)
            self.maybe_inventory(digest, self.roots.get(cid))
        elif kind == "finish":
            rec = task[1]
            os.close(rec.group_fd)
            resolve_files(rec)  # now, before any digest wait: the upper dir goes with the container
            if rec.meta.image_digest is None and rec.meta.container_id in self.digests:
                rec.meta = rec.meta.replace(image_digest=self.digests[rec.meta.container_id])
            if rec.meta.image_digest is None and self.config.digest_wait_s > 0 and not self.stopping:
                self.pending.append((rec, self.clock() + int(self.config.digest_wait_s * 1e9)))
            else:
                self.write(rec)
        elif kind == "stop":
            self.stopping = True
            self.stopped.set()
            return False
        return True

    def flush_pending(self, force: bool) -> None:
        now = self.clock()
        keep = []
        for rec, deadline in self.pending:
            if force or rec.meta.image_digest is not None or now >= deadline:
                self.write(rec)
            else:
                keep.append((rec, deadline))
        self.pending = keep

    def write(self, rec: RunRecorder) -> None:
        c = self.config
        try:
            run, accesses = build_run(
                rec,
                gap_ns=int(c.quiescence_s * 1e9),
                min_run_ns=int(c.min_run_s * 1e9),
                agent_version=c.agent_version,
                wall_now_ns=self.wall(),
            )
            self.store.write_run(run, accesses)
        except Exception as e:
            log.error("event=trace_run_write_failed run_id=%s error=%s", rec.meta.run_id, e)
            return
        log.info(
            "event=trace_run_finished run_id=%s container=%s end=%s events=%d files=%d ready_source=%s complete=%s flags=%s",
            run["run_id"], run["container_id"], run["end_reason"], rec.events, accesses.num_rows,
            run["ready_source"], run["complete"],
            ",".join(f for f in sorted(k[5:] for k, v in run.items() if k.startswith("flag_") and v)) or "-",
        )
        if rec.meta.image_digest:
            self.maybe_inventory(rec.meta.image_digest, rec.root)
        if self.on_finished is not None:
            try:
                self.on_finished(rec.summary())
            except Exception:
                log.exception("event=trace_on_finished_failed run_id=%s", rec.meta.run_id)

    def maybe_inventory(self, digest: str, root: ContainerRoot | None) -> None:
        if not self.config.take_inventory or digest in self.inventories:
            return
        if root is None or not root.lowerdirs:
            return
        self.inventories.add(digest)
        self.inventory_pool.submit(self._inventory, digest, root.lowerdirs, self.clock())

    def _wait_quiet(self, queued_ns: int) -> bool:
        """Sleep until no run has started for inventory_quiet_s (or the longest delay passed);
        False if the tracer stops meanwhile."""
        quiet_ns = int(self.config.inventory_quiet_s * 1e9)
        latest_ns = queued_ns + int(self.config.inventory_max_delay_s * 1e9)
        while True:
            now = self.clock()
            wake_ns = min(self.last_begin_ns + quiet_ns, latest_ns)
            if now >= wake_ns:
                return True
            if self.stopped.wait((wake_ns - now) / 1e9):
                return False

    def _inventory(self, digest: str, lowerdirs: tuple[bytes, ...], queued_ns: int) -> None:
        try:
            if self.store.has_inventory(digest):
                return
            if not self._wait_quiet(queued_ns):
                self.inventories.discard(digest)  # not taken: the next run of the image asks again
                return
            started = time.monotonic()
            table = take_inventory(digest, lowerdirs)
            self.store.write_inventory(digest, table)
            log.info("event=trace_inventory_written digest=%s files=%d took_s=%.2f", digest, table.num_rows, time.monotonic() - started)
        except Exception as e:
            self.inventories.discard(digest)
            log.error("event=trace_inventory_failed digest=%s error=%s", digest, e)

    @staticmethod
    def remember(d: collections.OrderedDict, key: str, value: Any, limit: int = 4096) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > limit:
            d.popitem(last=False)
