"""Agent logging: key=value lines, written by a thread of their own, never blocking the logger."""

import io
import logging
import threading
import time

import pytest

from agent import logs


class BlockedStream(io.StringIO):
    """A stderr whose consumer has stalled until release()."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.writing = threading.Event()

    def write(self, s: str) -> int:
        self.writing.set()
        self.released.wait()
        return super().write(s)


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if logs._active is not None:
        logs._active.stop()
        logs._active = None
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_lines_are_key_value_and_one_per_record_even_with_a_traceback(restore_root):
    out = io.StringIO()
    active = logs.setup("DEBUG", out)
    log = logging.getLogger("agent.test")
    log.debug("event=one n=%d", 1)
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("event=two")
    active.stop()
    lines = _lines(out)
    assert len(lines) == 2
    assert lines[0].startswith("ts=") and lines[0].endswith("level=debug logger=agent.test event=one n=1")
    assert " level=error logger=agent.test event=two exc='Traceback" in lines[1] and "bad\\\\nthing" in lines[1]


def test_a_stalled_stderr_does_not_block_the_logging_thread(restore_root):
    out = BlockedStream()
    active = logs.setup("INFO", out)
    log = logging.getLogger("agent.test")
    log.info("event=first")
    assert out.writing.wait(5)  # the writer thread is now stuck in write()
    done = threading.Event()

    def handler_thread() -> None:
        for i in range(100):
            log.info("event=while_stalled i=%d", i)
        done.set()

    threading.Thread(target=handler_thread, daemon=True).start()
    assert done.wait(5), "logging blocked behind a stalled stream"
    assert out.getvalue() == ""
    out.released.set()
    active.stop()
    lines = _lines(out)
    assert len(lines) == 101 and lines[-1].endswith("event=while_stalled i=99")


def test_a_full_queue_drops_lines_and_says_how_many(restore_root):
    out = BlockedStream()
    root = logging.getLogger()
    active = logs.QueuedLogging(out, maxsize=3)
    root.handlers[:] = [active.handler]
    root.setLevel(logging.INFO)
    log = logging.getLogger("agent.test")
    log.info("event=stuck")  # taken by the writer, which then blocks in write()
    assert out.writing.wait(5)
    for i in range(10):
        log.info("event=burst i=%d", i)  # 3 fit in the queue, 7 are dropped
    out.released.set()
    while not active.queue.empty():
        time.sleep(0.01)
    log.info("event=after")
    active.stop()
    msgs = [line.split(" logger=agent.test ", 1)[-1].split(" logger=agent.logs ", 1)[-1] for line in _lines(out)]
    assert msgs == ["event=stuck", "event=burst i=0", "event=burst i=1", "event=burst i=2",
                    "event=log_records_dropped count=7", "event=after"]
