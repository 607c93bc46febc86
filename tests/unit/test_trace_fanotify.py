"""Event record parsing (the kernel's struct fanotify_event_metadata), fast and defensive paths."""

import struct

import pytest

from agent.trace import fanotify as fan


def record(mask: int, fd: int, pid: int, vers: int = fan.FANOTIFY_METADATA_VERSION, extra: bytes = b"") -> bytes:
    return fan.EVENT.pack(fan.EVENT_LEN + len(extra), vers, 0, fan.EVENT_LEN, mask, fd, pid) + extra


def test_fixed_size_records():
    buf = record(fan.FAN_OPEN, 7, 100) + record(fan.FAN_OPEN | fan.FAN_OPEN_EXEC, 8, 101) + record(fan.FAN_Q_OVERFLOW, -1, 0)
    assert list(fan.iter_events(buf)) == [
        (fan.FAN_OPEN, 7, 100), (fan.FAN_OPEN | fan.FAN_OPEN_EXEC, 8, 101), (fan.FAN_Q_OVERFLOW, -1, 0)]
    assert list(fan.iter_events(b"")) == []


def test_records_with_info_blocks_take_the_walking_path():
    info = struct.pack("=BBH", 1, 0, 8) + b"\0" * 4
    buf = record(fan.FAN_ACCESS, 5, 9, extra=info) + record(fan.FAN_OPEN, 6, 9)
    assert list(fan.iter_events(buf)) == [(fan.FAN_ACCESS, 5, 9), (fan.FAN_OPEN, 6, 9)]


def test_unknown_metadata_version_is_refused():
    with pytest.raises(fan.FanotifyError):
        list(fan.iter_events(record(fan.FAN_OPEN, 5, 9, vers=2) + b"\0" * 8))


def test_trace_mask_is_open_exec_access():
    assert fan.TRACE_MASK == fan.FAN_OPEN | fan.FAN_OPEN_EXEC | fan.FAN_ACCESS == 0x1021
