"""Thin fanotify binding: ctypes over libc's fanotify_init/fanotify_mark, events parsed from big reads.

Only what the tracer needs: notification-class groups in fd mode (no FID reporting, which overlay
mounts without nfs_export refuse), filesystem marks, and a fast parser for the fixed 24-byte event
records such a group produces. See docs/decisions.md ("fanotify binding") for why not pyfanotify.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Iterator

# <linux/fanotify.h>
FAN_ACCESS = 0x0000_0001
FAN_MODIFY = 0x0000_0002
FAN_CLOSE_WRITE = 0x0000_0008
FAN_CLOSE_NOWRITE = 0x0000_0010
FAN_OPEN = 0x0000_0020
FAN_OPEN_EXEC = 0x0000_1000
FAN_Q_OVERFLOW = 0x0000_4000
FAN_ONDIR = 0x4000_0000

FAN_CLOEXEC = 0x0000_0001
FAN_NONBLOCK = 0x0000_0002
FAN_CLASS_NOTIF = 0x0000_0000
FAN_UNLIMITED_QUEUE = 0x0000_0010
FAN_UNLIMITED_MARKS = 0x0000_0020
FAN_REPORT_FID = 0x0000_0200  # not used: overlay refuses filesystem marks for it (docs/decisions.md)

FAN_MARK_ADD = 0x0000_0001
FAN_MARK_REMOVE = 0x0000_0002
FAN_MARK_INODE = 0x0000_0000
FAN_MARK_MOUNT = 0x0000_0010
FAN_MARK_FILESYSTEM = 0x0000_0100

FANOTIFY_METADATA_VERSION = 3
FAN_NOFD = -1

# struct fanotify_event_metadata {u32 event_len; u8 vers; u8 reserved; u16 metadata_len;
#                                 u64 mask; s32 fd; s32 pid}
EVENT = struct.Struct("=IBBHQii")
EVENT_LEN = EVENT.size  # 24
# Groups created here never request info records, so every record is exactly EVENT_LEN bytes and a
# whole read buffer can be split by struct.iter_unpack in C, skipping the length/version fields.
_MASK_FD_PID = struct.Struct("=8xQii")

TRACE_MASK = FAN_OPEN | FAN_OPEN_EXEC | FAN_ACCESS

# PyDLL, not CDLL: these calls keep the GIL. They take microseconds, and giving the GIL up would let
# the reader or finaliser thread hold it for up to a switch interval (5 ms) before the NRI handler
# calling start_run gets it back.
_libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fanotify_init = _libc.fanotify_init
_fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_fanotify_init.restype = ctypes.c_int
_fanotify_mark = _libc.fanotify_mark
_fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_fanotify_mark.restype = ctypes.c_int
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_write = _libc.write
_write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_write.restype = ctypes.c_ssize_t
_SYS_PIDFD_OPEN = 434  # the same number on every architecture (unified syscall table)
_ONE = (1).to_bytes(8, sys.byteorder)

AT_FDCWD = -100


class FanotifyError(OSError):
    """fanotify_init/fanotify_mark failed; errno and the operation are in the message."""


def fanotify_init(flags: int, event_f_flags: int) -> int:
    fd = _fanotify_init(flags, event_f_flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise FanotifyError(err, f"fanotify_init(flags={flags:#x}): {os.strerror(err)}")
    return fd


def fanotify_mark(fd: int, flags: int, mask: int, path: str | bytes, dirfd: int = AT_FDCWD) -> None:
    p = os.fsencode(path)
    if _fanotify_mark(fd, flags, mask, dirfd, p) < 0:
        err = ctypes.get_errno()
        raise FanotifyError(err, f"fanotify_mark({os.fsdecode(p)}, flags={flags:#x}): {os.strerror(err)}", os.fsdecode(p))


def pidfd_open(pid: int) -> int:
    """os.pidfd_open without releasing the GIL (see _libc)."""
    fd = _syscall(ctypes.c_long(_SYS_PIDFD_OPEN), ctypes.c_long(pid), ctypes.c_long(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise ProcessLookupError(err, f"pidfd_open({pid}): {os.strerror(err)}") if err == errno.ESRCH else OSError(err, f"pidfd_open({pid}): {os.strerror(err)}")
    return fd


def eventfd_signal(fd: int) -> None:
    """Add 1 to an eventfd without releasing the GIL; a full counter (EAGAIN) already means "wake"."""
    _write(fd, _ONE, 8)


def open_filesystem_group(path: str | bytes, mask: int = TRACE_MASK, *, unlimited_queue: bool = True) -> int:
    """A non-blocking notification group with one filesystem mark on the fs holding `path`.

    Returns the group fd; the caller owns it (closing it drops the mark). Events carry an O_RDONLY
    fd opened with O_NOATIME so our readlink/fstat leave the traced files' atimes alone.
    """
    flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
    if unlimited_queue:
        flags |= FAN_UNLIMITED_QUEUE
    fd = fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC | os.O_NOATIME)
    try:
        fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def iter_events(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """(mask, fd, pid) for each record in a buffer returned by os.read on a group fd.

    Every event fd yielded must be closed by the caller (FAN_NOFD = -1 for overflow records).
    """
    if len(buf) % EVENT_LEN == 0 and (not buf or buf[4] == FANOTIFY_METADATA_VERSION):
        return _MASK_FD_PID.iter_unpack(buf)
    return _iter_events_slow(buf)


def _iter_events_slow(buf: bytes) -> Iterator[tuple[int, int, int]]:
    # Defensive path for records with info blocks (not produced by our groups); walks event_len.
    off = 0
    n = len(buf)
    while off + EVENT_LEN <= n:
        event_len, vers, _res, _mlen, mask, fd, pid = EVENT.unpack_from(buf, off)
        if vers != FANOTIFY_METADATA_VERSION or event_len < EVENT_LEN:
            raise FanotifyError(errno.EPROTO, f"fanotify metadata version {vers}, expected {FANOTIFY_METADATA_VERSION}")
        yield mask, fd, pid
        off += event_len


def reserve_fd_table(upto: int) -> int:
    """Grow this process's fd table now so it holds fd numbers up to `upto`; returns the size reached.

    A read on an fd-mode group installs up to one fd per event. Whenever that outgrows the table, a
    multi-threaded process's kernel waits an RCU grace period before it swaps tables, and meanwhile
    every thread that opens an fd waits too: an NRI handler, or the reader in the middle of a burst
    (a quarter of the live-burst rate here). Tables never shrink, so doing it once at start-up
    takes that wait off the hot paths. F_DUPFD, not dup2: it never replaces an fd in use.
    """
    import fcntl

    src = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        fd = fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, upto)
        os.close(fd)
    finally:
        os.close(src)
    return fd


def raise_nofile_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (capped at the hard limit); return it.

    A read on an fd-mode group installs one fd per returned event; when that fails the kernel
    drops the event, so the read buffer must stay well below the free fd count.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
