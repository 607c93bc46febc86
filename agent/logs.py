"""Structured key=value logging for the agent, written by a thread of its own.

A thread that logs only formats its line and queues it. The write to stderr happens on the log
writer thread, so a slow or stalled consumer of stderr (a full pipe, a throttled journal, a disk
busy with fsyncs) can never hold up an NRI handler, and so never a pod.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import IO

QUEUE_RECORDS = 10_000


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=… logger=… <message>`: messages are already written as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            # One line per record keeps logs greppable; the traceback goes on as an escaped field.
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Queues each formatted line without ever blocking; when the queue is full the line is dropped,
    and the next line that fits is preceded by one saying how many were."""

    def __init__(self, q: "queue.Queue[logging.LogRecord]") -> None:
        super().__init__(q)
        self.dropped = 0
        self._lock = threading.Lock()

    def enqueue(self, record: logging.LogRecord) -> None:
        with self._lock:
            try:
                if self.dropped:
                    self.queue.put_nowait(self._dropped_record(record))
                    self.dropped = 0
                self.queue.put_nowait(record)
            except queue.Full:
                self.dropped += 1

    def _dropped_record(self, like: logging.LogRecord) -> logging.LogRecord:
        rec = logging.LogRecord(__name__, logging.WARNING, __file__, 0,
                                f"event=log_records_dropped count={self.dropped}", None, None)
        rec.created, rec.msecs = like.created, like.msecs
        rec.msg = rec.message = self.format(rec)
        return rec


class _Writer(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # blocking: at exit the queue may be full; the writer drains it


class QueuedLogging:
    """The agent's root handler and its writer thread; stop() writes out what is queued."""

    def __init__(self, stream: IO[str], maxsize: int = QUEUE_RECORDS) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(maxsize)
        self.handler = DroppingQueueHandler(self.queue)
        # The caller's thread formats the whole line (so a record's objects are not read later, on
        # another thread); the writer only writes it.
        self.handler.setFormatter(KeyValueFormatter())
        writer = logging.StreamHandler(stream)
        writer.setFormatter(logging.Formatter("%(message)s"))
        self.listener = _Writer(self.queue, writer)
        self.listener.start()
        self._running = True

    def stop(self) -> None:
        """Write out what is queued and end the writer thread (once; later calls do nothing)."""
        if self._running:
            self._running = False
            self.listener.stop()


_active: QueuedLogging | None = None


def setup(level: str = "INFO", stream: IO[str] | None = None) -> QueuedLogging:
    """Route every record through one queue to `stream` (stderr); replaces an earlier setup."""
    global _active
    if _active is not None:
        _active.stop()
    _active = QueuedLogging(stream if stream is not None else sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [_active.handler]
    root.setLevel(level.upper())
    return _active


@atexit.register
def _flush_at_exit() -> None:
    if _active is not None:
        _active.stop()
