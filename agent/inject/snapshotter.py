"""Client for nydus-snapshotter's system controller: `PUT /api/v1/prefetch` on a unix socket.

Contract (shared/reference/nydus-handoff.md): the body is a JSON array of {"image", "prefetch"};
the snapshotter keeps image -> path in memory, last writer wins, each entry is used once, and all
are lost when it restarts. It answers 200 even to a malformed body, so validity is on us.

Failure policy: fail open. `send` waits at most `wait_s` (well inside NRI's 2 s budget) and then
returns; the PUT goes on in the background, failures are retried with backoff, logged and counted.
A PUT never blocks a pod. One sender thread keeps PUTs in order, so a retry can never overwrite a
newer list for the same image (newer sends also strip their images from queued retries).

A durable record (JSON, atomic) says what was sent for which service and image. When the socket's
identity changes (the snapshotter restarted), entries sent within `resend_window_s` are sent again,
since their pulls may not have happened yet and the new process has forgotten them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import http.client
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from advisor.lists import write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/containerd-nydus/system.sock"
PREFETCH_PATH = "/api/v1/prefetch"

PUTS = Counter("prefetch_agent_snapshotter_puts_total", "PUT attempts to the snapshotter", ["outcome"])
PUT_FAILURES = Counter("prefetch_agent_snapshotter_put_failures_total", "Failed PUT attempts, by reason", ["reason"])
RESENDS = Counter("prefetch_agent_snapshotter_resends_total", "Entries sent again after a snapshotter restart")

OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"
OUTCOME_PENDING = "pending"  # not answered within wait_s; still going in the background


@dataclasses.dataclass(frozen=True, slots=True)
class PrefetchEntry:
    image: str  # normalised image ref
    list_path: str  # host path nydusd will read
    service: str | None = None  # for the record only; never sent


@dataclasses.dataclass(frozen=True, slots=True)
class SendResult:
    outcome: str  # OUTCOME_*
    reason: str = ""  # failure reason, e.g. "absent", "refused", "timeout", "http_500"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX: the stdlib's HTTP/1.1 framing, only the transport differs."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def body_for(entries: Sequence[PrefetchEntry]) -> bytes:
    """Exactly upstream's shape: [{"image": ..., "prefetch": ...}, ...]."""
    return json.dumps([{"image": e.image, "prefetch": e.list_path} for e in entries]).encode("utf-8")


def put_prefetch(socket_path: str, entries: Sequence[PrefetchEntry], timeout_s: float) -> SendResult:
    """One synchronous PUT; never raises."""
    conn = UnixHTTPConnection(socket_path, timeout_s)
    try:
        conn.request("PUT", PREFETCH_PATH, body=body_for(entries), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read(64 * 1024)
        if resp.status == 200:
            return SendResult(OUTCOME_OK)
        return SendResult(OUTCOME_FAILED, f"http_{resp.status}")
    except FileNotFoundError:
        return SendResult(OUTCOME_FAILED, "absent")
    except ConnectionRefusedError:
        return SendResult(OUTCOME_FAILED, "refused")
    except (TimeoutError, socket.timeout):
        return SendResult(OUTCOME_FAILED, "timeout")
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return SendResult(OUTCOME_FAILED, type(exc).__name__.lower())
    finally:
        conn.close()


@dataclasses.dataclass(eq=False)
class _Job:
    entries: list[PrefetchEntry]
    attempt: int = 0
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: SendResult | None = None
    resend: bool = False


class SnapshotterClient:
    """Bounded-wait, retrying, recording sender of prefetch entries."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        wait_s: float = 0.2,
        request_timeout_s: float = 2.0,
        backoff_s: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        resend_window_s: float = 120.0,
        watch_interval_s: float = 1.0,
        max_records: int = 2000,
    ) -> None:
        self.socket_path = socket_path
        self.wait_s = wait_s
        self.request_timeout_s = request_timeout_s
        self.backoff_s = tuple(backoff_s)
        self.resend_window_s = resend_window_s
        self.watch_interval_s = watch_interval_s
        self.max_records = max_records
        self._record_path = Path(state_dir) / "sent.json" if state_dir is not None else None
        self._records: dict[str, dict[str, Any]] = self._load_records()
        self._cv = threading.Condition()
        self._queue: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._peer_id: tuple[int, int, int] | None = None  # socket identity at the last success
        self._thread = threading.Thread(target=self._run, name="snapshotter-sender", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------------
    def send(self, entries: Sequence[PrefetchEntry]) -> SendResult:
        """Queue one PUT for these entries; wait at most wait_s for its answer. Never raises."""
        if not entries:
            return SendResult(OUTCOME_OK)
        job = _Job(list(entries))
        with self._cv:
            self._supersede({e.image for e in entries})
            heapq.heappush(self._queue, (time.monotonic(), next(self._seq), job))
            self._cv.notify_all()
        if job.done.wait(self.wait_s) and job.result is not None:
            return job.result
        log.warning("event=snapshotter_put_pending images=%s waited_ms=%d", ",".join(e.image for e in entries),
                    int(self.wait_s * 1000))
        return SendResult(OUTCOME_PENDING, "slow")

    def records(self) -> dict[str, dict[str, Any]]:
        with self._cv:
            return json.loads(json.dumps(self._records))

    def referenced_paths(self) -> set[str]:
        """List files a record still points at: the latest for each image and what the snapshotter holds."""
        with self._cv:
            return {p for rec in self._records.values() for p in (rec.get("list_path"), rec.get("held_path")) if p}

    def last_sent(self, image: str) -> dict[str, Any] | None:
        with self._cv:
            rec = self._records.get(image)
            return dict(rec) if rec else None

    def idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until nothing is queued (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=self.request_timeout_s + 1)

    # -- sender thread ----------------------------------------------------------------------------
    _busy = False

    def _supersede(self, images: set[str]) -> None:
        # Caller holds the lock. Last writer wins at the snapshotter, so an older queued retry
        # must not land after this newer send.
        kept = []
        for when, seq, job in self._queue:
            job.entries = [e for e in job.entries if e.image not in images]
            if job.entries:
                kept.append((when, seq, job))
            else:
                job.result = job.result or SendResult(OUTCOME_FAILED, "superseded")
                job.done.set()
        heapq.heapify(kept)
        self._queue = kept

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    wait = self._queue[0][0] - now if self._queue else self.watch_interval_s
                    if not self._cv.wait(min(wait, self.watch_interval_s)):
                        self._check_restart_locked()
                if self._stopping:
                    return
                _, _, job = heapq.heappop(self._queue)
                self._busy = True
            try:
                self._attempt(job)
            except Exception:  # the sender thread must survive anything
                log.exception("event=snapshotter_sender_error")
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _attempt(self, job: _Job) -> None:
        job.attempt += 1
        started = time.monotonic()
        result = put_prefetch(self.socket_path, job.entries, self.request_timeout_s)
        took_ms = int((time.monotonic() - started) * 1000)
        images = ",".join(e.image for e in job.entries)
        PUTS.labels(result.outcome).inc()
        with self._cv:
            if result.outcome == OUTCOME_OK:
                self._note_peer(self._socket_id(), exclude={e.image for e in job.entries})
                self._record(job.entries, "sent", "")
                log.info("event=snapshotter_put_ok images=%s attempt=%d took_ms=%d resend=%s", images, job.attempt,
                         took_ms, str(job.resend).lower())
            else:
                PUT_FAILURES.labels(result.reason).inc()
                retry = job.attempt <= len(self.backoff_s)
                self._record(job.entries, "retrying" if retry else "failed", result.reason)
                log.warning("event=snapshotter_put_failed images=%s reason=%s attempt=%d took_ms=%d retry=%s socket=%s",
                            images, result.reason, job.attempt, took_ms, str(retry).lower(), self.socket_path)
                if retry:
                    delay = self.backoff_s[job.attempt - 1]
                    heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), job))
            if job.result is None:
                job.result = result
                job.done.set()
            records = self._records_bytes()
        # After the answer: the handler waiting in send() need not wait for a JSON write and fsync.
        # The record is no less safe for it, as a crash can come between the PUT and the write.
        self._persist(records)

    # -- restart detection ------------------------------------------------------------------------
    def _socket_id(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.socket_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)

    def _check_restart_locked(self) -> None:
        current = self._socket_id()
        if current is not None:
            self._note_peer(current, exclude=set())

    def _note_peer(self, current: tuple[int, int, int] | None, exclude: set[str]) -> None:
        # Caller holds the lock.
        previous, self._peer_id = self._peer_id, current
        if previous is None or current is None or current == previous:
            return
        # A new socket file: the snapshotter restarted and forgot every entry.
        cutoff = time.time() - self.resend_window_s
        recent = [
            PrefetchEntry(image, rec["list_path"], rec.get("service"))
            for image, rec in self._records.items()
            if image not in exclude and rec.get("status") == "sent" and (rec.get("sent_at") or 0) >= cutoff
            and os.path.exists(rec["list_path"])
        ]
        log.warning("event=snapshotter_restarted socket=%s resend=%d", self.socket_path, len(recent))
        if recent:
            RESENDS.inc(len(recent))
            self._supersede({e.image for e in recent})
            heapq.heappush(self._queue, (time.monotonic(), next(self._seq), _Job(recent, resend=True)))

    # -- durable record ---------------------------------------------------------------------------
    def _load_records(self) -> dict[str, dict[str, Any]]:
        if self._record_path is None:
            return {}
        try:
            data = json.loads(self._record_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("event=sent_record_unreadable path=%s error=%s", self._record_path, exc)
            return {}

    def _record(self, entries: Sequence[PrefetchEntry], status: str, reason: str) -> None:
        now = time.time()
        for e in entries:
            prev = self._records.pop(e.image, {})
            self._records[e.image] = {
                "service": e.service,
                "list_path": e.list_path,
                "list_sha256": _file_sha256(e.list_path),
                "status": status,
                "last_error": reason,
                "sent_at": now if status == "sent" else prev.get("sent_at"),
                # What the snapshotter may still hold for this image (last writer wins, one use):
                # its file must outlive any later failed send.
                "held_path": e.list_path if status == "sent" else prev.get("held_path"),
                "updated_at": now,
                "sends": prev.get("sends", 0) + (status == "sent"),
            }
        while len(self._records) > self.max_records:
            self._records.pop(next(iter(self._records)))

    def _records_bytes(self) -> bytes | None:
        # Caller holds the lock; the file itself is written after it is released (_persist).
        return json.dumps(self._records, indent=1).encode() if self._record_path is not None else None

    def _persist(self, data: bytes | None) -> None:
        """Write the records file. Only the sender thread calls it, so writes land in order."""
        if data is None or self._record_path is None:
            return
        try:
            write_bytes_atomic(self._record_path, data)
        except OSError as exc:
            log.warning("event=sent_record_write_failed path=%s error=%s", self._record_path, exc)


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(16 * 1024 * 1024)).hexdigest()
    except OSError:
        return None
