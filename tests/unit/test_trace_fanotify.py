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


def test_reserve_fd_table_grows_the_table_once_and_leaves_no_fd_open():
    # In a fresh interpreter: this one's table may have grown already.
    import subprocess
    import sys

    code = (
        "import os\n"
        "from agent.trace import fanotify as fan\n"
        "size = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('FDSize:')).split()[1])\n"
        "fds = lambda: len(os.listdir('/proc/self/fd'))\n"
        "fan.raise_nofile_limit(2048)\n"
        "before, n = size(), fds()\n"
        "got = fan.reserve_fd_table(1000)\n"
        "print(before, size(), got, fds() - n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, got, leaked = map(int, out)
    assert before < 1000 <= got < after and leaked == 0
