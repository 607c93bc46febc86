"""RunRecorder's hot path, fed real fds in hand-made event buffers (no fanotify group needed).

Each event record carries an fd the recorder must readlink and close, as the kernel's would.
"""

import os

import pytest

from agent.trace import fanotify as fan
from agent.trace.model import Readiness, RunMeta
from agent.trace.mounts import ContainerRoot
from agent.trace.recorder import (
    F_FIRST_NS,
    F_KINDS,
    F_OPENS,
    F_SEQ,
    F_SIZE,
    KIND_EXEC,
    KIND_OPEN,
    KIND_READ,
    RunRecorder,
    close_all,
    fd_link_names,
)

OPEN, ACCESS, EXEC = fan.FAN_OPEN, fan.FAN_ACCESS, fan.FAN_OPEN_EXEC
OTHER_PID = 4242


def _meta(readiness=None) -> RunMeta:
    return RunMeta(run_id="r", service="ns/w/c", namespace="ns", pod="p", pod_uid="u", container="c",
                   container_id="cid", image_ref="img", image_ref_normalized="docker.io/library/img:latest",
                   node="n", readiness=readiness)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def _recorder(clock: Clock, *, overlay: bool = True, readiness=None) -> RunRecorder:
    rec = RunRecorder(_meta(readiness), 1, -1, -1, start_ns=clock.now, started_at_ns=0, window_ns=10**9, clock=clock)
    root = ContainerRoot(dev="0:1", fstype="overlay", upperdir=b"/u", lowerdirs=(b"/l",)) if overlay else None
    rec.attach_root(root)
    return rec


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, body in (("a", b"12345"), ("b", b""), ("c", b"xy"), ("ready", b"")):
        p = tmp_path / name
        p.write_bytes(body)
        paths[name] = os.fsencode(p)
    return paths


def _event(mask: int, path: bytes | None, pid: int = OTHER_PID) -> tuple[bytes, int]:
    fd = os.open(path, os.O_RDONLY) if path is not None else fan.FAN_NOFD
    return fan.EVENT.pack(fan.EVENT_LEN, fan.FANOTIFY_METADATA_VERSION, 0, fan.EVENT_LEN, mask, fd, pid), fd


def _batch(*events: tuple[int, bytes | None] | tuple[int, bytes | None, int]) -> tuple[bytes, list[int]]:
    made = [_event(*e) for e in events]
    return b"".join(b for b, _ in made), [fd for _, fd in made if fd >= 0]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_uniform_batch_records_first_access_order_and_opens_and_closes_every_fd(files):
    clock = Clock()
    rec = _recorder(clock)
    buf, fds = _batch((OPEN, files["b"]), (OPEN, files["a"]), (OPEN, files["b"]), (OPEN, files["c"]))
    clock.now = 5_000
    assert rec._record(buf, os.getpid(), []) == 4
    assert not any(map(_is_open, fds))
    recs = rec.file_records()
    assert list(recs) == [files["b"], files["a"], files["c"]]
    assert [r[F_SEQ] for r in recs.values()] == [0, 1, 2]
    assert [r[F_OPENS] for r in recs.values()] == [2, 1, 1]
    assert all(r[F_KINDS] == KIND_OPEN and r[F_FIRST_NS] == 4_000 for r in recs.values())
    assert all(r[F_SIZE] == -1 for r in recs.values())  # overlay known: sizes come from the layers later


def test_mixed_masks_or_their_kinds_and_count_only_open_events(files):
    clock = Clock()
    rec = _recorder(clock)
    buf, _ = _batch((EXEC | OPEN, files["a"]), (ACCESS, files["a"]), (OPEN, files["b"]), (ACCESS, files["b"]),
                    (OPEN | ACCESS, files["c"]))
    rec._record(buf, os.getpid(), [])
    clock.now = 9_000
    buf, _ = _batch((ACCESS, files["c"]), (OPEN, files["a"]))
    rec._record(buf, os.getpid(), [])
    recs = rec.file_records()
    assert recs[files["a"]][F_KINDS] == KIND_EXEC | KIND_OPEN | KIND_READ and recs[files["a"]][F_OPENS] == 2
    assert recs[files["b"]][F_KINDS] == KIND_OPEN | KIND_READ and recs[files["b"]][F_OPENS] == 1
    assert recs[files["c"]][F_KINDS] == KIND_OPEN | KIND_READ and recs[files["c"]][F_OPENS] == 1
    assert recs[files["a"]][F_FIRST_NS] == 0  # first seen in the first batch, not the later one


def test_own_accesses_are_skipped_and_overflow_is_flagged(files):
    clock = Clock()
    rec = _recorder(clock)
    buf, fds = _batch((OPEN, files["a"], os.getpid()), (fan.FAN_Q_OVERFLOW, None), (OPEN, files["b"]))
    assert rec._record(buf, os.getpid(), []) == 3
    assert not any(map(_is_open, fds))
    assert list(rec.file_records()) == [files["b"]]
    assert rec.flags == {"overflow"}


def test_without_overlay_layers_sizes_come_from_the_event_fd(files):
    clock = Clock()
    rec = _recorder(clock, overlay=False)
    buf, _ = _batch((OPEN, files["a"]), (OPEN, files["c"]), (OPEN, files["a"]))
    rec._record(buf, os.getpid(), [])
    buf, _ = _batch((OPEN, files["c"], os.getpid()), (OPEN, files["b"]))  # event by event (own access)
    rec._record(buf, os.getpid(), [])
    recs = rec.file_records()
    assert {os.path.basename(p): r[F_SIZE] for p, r in recs.items()} == {b"a": 5, b"c": 2, b"b": 0}


def test_the_readiness_marker_is_seen_in_a_batch(files):
    clock = Clock()
    rec = _recorder(clock, readiness=Readiness(marker=os.fsdecode(files["ready"])))
    buf, _ = _batch((OPEN, files["a"]))
    clock.now = 2_000
    rec._record(buf, os.getpid(), [])
    assert rec.ready_ns is None
    buf, _ = _batch((OPEN, files["b"]), (OPEN, files["ready"]))
    clock.now = 7_000
    rec._record(buf, os.getpid(), [])
    assert rec.ready_ns == 6_000 and rec.ready_source == "marker"


def test_an_fd_that_cannot_be_read_does_not_lose_the_others(files, tmp_path):
    clock = Clock()
    rec = _recorder(clock)
    good, fds = _batch((OPEN, files["a"]), (OPEN, files["b"]))
    closed = os.open(files["c"], os.O_RDONLY)
    os.close(closed)  # a record naming an fd that is not open: readlink and close both fail
    bad = fan.EVENT.pack(fan.EVENT_LEN, fan.FANOTIFY_METADATA_VERSION, 0, fan.EVENT_LEN, OPEN, closed, OTHER_PID)
    assert rec._record(good[: fan.EVENT_LEN] + bad + good[fan.EVENT_LEN :], os.getpid(), []) == 3
    assert not any(map(_is_open, fds))
    assert list(rec.file_records()) == [files["a"], files["b"]]


def test_close_all_goes_past_an_fd_that_is_not_open(tmp_path):
    fds = [os.open(tmp_path, os.O_RDONLY) for _ in range(3)]
    os.close(fds[1])
    close_all(fds)
    assert not any(map(_is_open, fds))


def test_close_all_closes_a_whole_range_and_nothing_next_to_it(tmp_path):
    fds = [os.open(tmp_path, os.O_RDONLY) for _ in range(5)]
    close_all([fds[2], fds[0], fds[1]])  # a whole range, in any order
    assert [_is_open(fd) for fd in fds] == [False, False, False, True, True]
    close_all(fds[3:])
    assert not any(map(_is_open, fds))
    close_all([])


def test_close_all_leaves_an_fd_inside_a_gap_open(tmp_path):
    fds = [os.open(tmp_path, os.O_RDONLY) for _ in range(3)]
    close_all([fds[0], fds[2]])  # not a range: fds[1] belongs to someone else
    assert [_is_open(fd) for fd in fds] == [False, True, False]
    os.close(fds[1])


def test_fd_link_names_grow_to_cover_the_highest_fd():
    names = fd_link_names([], 3)
    assert names == [b"/proc/self/fd/0", b"/proc/self/fd/1", b"/proc/self/fd/2", b"/proc/self/fd/3"]
    assert fd_link_names(names, 2) is names and len(names) == 4
    assert fd_link_names(names, 5)[5] == b"/proc/self/fd/5"


def test_drain_reads_until_the_queue_is_empty(files):
    # A pipe stands in for the group fd: its reads return whole buffers of records, then EAGAIN.
    clock = Clock()
    rec = _recorder(clock)
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        buf, fds = _batch(*[(OPEN, files["a"])] * 3, (OPEN, files["b"]))
        os.write(w, buf)
        rec.group_fd = r
        clock.now = 3_000
        assert rec.drain(2 * fan.EVENT_LEN, 16, os.getpid(), []) == 4
        assert rec.drained and rec.events == 4 and rec.first_event_ns == rec.last_event_ns == 3_000
        assert not any(map(_is_open, fds))
        assert rec.summary().files == 2
    finally:
        os.close(r)
        os.close(w)
