"""SnapshotterClient against the fake system-controller socket: contract, bounded wait, retries,
record, resend after a restart. Also checks the fake itself follows the upstream contract."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from agent.inject import snapshotter as S
from agent.inject.snapshotter import PrefetchEntry, SnapshotterClient, UnixHTTPConnection
from testbed.fake_snapshotter import FakeSnapshotter, read_record
from tests.e2e.agent_harness import wait_for

NGINX = "docker.io/library/nginx:latest"
REDIS = "docker.io/library/redis:7"


def short_sock(tmp_path: Path) -> str:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp paths can be longer.
    d = Path("/tmp") / f"pa-{abs(hash(tmp_path)) % 10**8}"
    d.mkdir(exist_ok=True)
    return str(d / "system.sock")


@pytest.fixture()
def sock(tmp_path: Path):
    path = short_sock(tmp_path)
    yield path
    Path(path).unlink(missing_ok=True)


def raw(sock: str, method: str, path: str, body: bytes) -> int:
    conn = UnixHTTPConnection(sock, 2.0)
    try:
        conn.request(method, path, body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def list_file(tmp_path: Path, name: str, body: str = "/a\n") -> str:
    p = tmp_path / name
    p.write_text(body)
    return str(p)


# ------------------------------------------------------------------------ the fake's contract


def test_fake_follows_upstream_contract(sock, tmp_path) -> None:
    record = tmp_path / "record.jsonl"
    with FakeSnapshotter(sock, record) as fake:
        assert raw(sock, "PUT", "/api/v1/prefetch", b'[{"image": "a", "prefetch": "/x"}]') == 200
        assert raw(sock, "PUT", "/api/v1/prefetch", b'[{"image":') == 200  # malformed still 200
        assert raw(sock, "PUT", "/api/v1/prefetch", b'{"image": "a"}') == 200
        assert raw(sock, "PUT", "/api/v1/prefetch", b'[{"image": "a", "prefetch": "/y"}]') == 200
        assert raw(sock, "GET", "/api/v1/prefetch", b"") == 405
        assert raw(sock, "PUT", "/api/v1/other", b"[]") == 404
        assert fake.entries == {"a": "/y"}  # last writer wins
        assert fake.consume("a") == "/y"
        assert fake.consume("a") is None  # one use
        assert [r.status for r in read_record(record)] == [200, 200, 200, 200, 405, 404]
        stamps = [r.wall_ns for r in fake.requests]
        assert stamps == sorted(stamps)


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        # Upstream decodes into []map[string]string, all or nothing, then stores each element.
        (b'[{"image": "a", "prefetch": "/x"}, {"image": 1, "prefetch": "/y"}]', {"old": "/o"}),
        (b'[{"image": "a", "prefetch": "/x"}, "b"]', {"old": "/o"}),
        (b'[{"image": "a", "prefetch": null}]', {"old": "/o", "a": ""}),
        (b'[{"image": "old"}]', {"old": ""}),  # a missing path reads as "" and overwrites
        (b'[{"prefetch": "/z"}]', {"old": "/o", "": "/z"}),
        (b'[null]', {"old": "/o", "": ""}),
        (b'null', {"old": "/o"}),
        (b'[{"image": "a", "prefetch": "/x", "extra": "ignored"}]', {"old": "/o", "a": "/x"}),
        (b'[{"image": "a", "prefetch": "/x"}] trailing', {"old": "/o"}),
    ],
)
def test_fake_decodes_bodies_like_upstream(sock, body: bytes, stored: dict[str, str]) -> None:
    with FakeSnapshotter(sock) as fake:
        assert raw(sock, "PUT", "/api/v1/prefetch", b'[{"image": "old", "prefetch": "/o"}]') == 200
        assert raw(sock, "PUT", "/api/v1/prefetch", body) == 200  # 200 whatever the body
        assert fake.entries == stored


def test_fake_restart_loses_entries_and_changes_socket(sock) -> None:
    with FakeSnapshotter(sock) as fake:
        raw(sock, "PUT", "/api/v1/prefetch", b'[{"image": "a", "prefetch": "/x"}]')
        ino = Path(sock).stat().st_ino
        fake.restart()
        assert fake.entries == {} and fake.epoch == 1
        assert raw(sock, "PUT", "/api/v1/prefetch", b"[]") == 200
        # a new file; inode numbers can be reused, so also compare ctime
        st = Path(sock).stat()
        assert (st.st_ino, st.st_ctime_ns) != (ino, 0)


def test_fake_modes(sock) -> None:
    with FakeSnapshotter(sock, mode="absent"):
        assert not Path(sock).exists()
    with FakeSnapshotter(sock, mode="refuse"):
        s = socket.socket(socket.AF_UNIX)
        with pytest.raises(ConnectionRefusedError):
            s.connect(sock)
        s.close()
    with FakeSnapshotter(sock, mode="hang") as fake:
        conn = UnixHTTPConnection(sock, 0.3)
        conn.request("PUT", "/api/v1/prefetch", body=b"[]")
        with pytest.raises(TimeoutError):
            conn.getresponse()
        conn.close()
        assert fake.requests[0].status is None


# ------------------------------------------------------------------------ the client


def _on_disk(state: Path) -> dict:
    try:
        return json.loads((state / "sent.json").read_text())
    except FileNotFoundError:
        return {}


def test_the_answer_does_not_wait_for_the_record_file(sock, tmp_path, monkeypatch) -> None:
    lp = list_file(tmp_path, "a.list")
    release = threading.Event()
    real_write = S.write_bytes_atomic

    def stalled_write(path, data, **kw):
        release.wait(10)
        return real_write(path, data, **kw)

    monkeypatch.setattr(S, "write_bytes_atomic", stalled_write)
    with FakeSnapshotter(sock):
        client = SnapshotterClient(sock, tmp_path / "state")
        try:
            assert client.send([PrefetchEntry(NGINX, lp, "default/web/nginx")]) == S.SendResult(S.OUTCOME_OK)
            assert client.records()[NGINX]["status"] == "sent"  # in memory at once
            assert _on_disk(tmp_path / "state") == {}  # the file waits on the stalled disk
            release.set()
            wait_for(lambda: _on_disk(tmp_path / "state").get(NGINX, {}).get("status") == "sent", 5, "the record on disk")
        finally:
            release.set()
            client.close()


def test_put_has_upstream_shape(sock, tmp_path) -> None:
    lp = list_file(tmp_path, "a.list")
    with FakeSnapshotter(sock) as fake:
        client = SnapshotterClient(sock, tmp_path / "state")
        try:
            res = client.send([PrefetchEntry(NGINX, lp, "default/web/nginx")])
            assert res == S.SendResult(S.OUTCOME_OK)
            (put,) = fake.prefetch_puts()
            assert put.method == "PUT" and put.path == "/api/v1/prefetch"
            assert json.loads(put.body) == [{"image": NGINX, "prefetch": lp}]  # no extra fields
            assert fake.entries == {NGINX: lp}
            rec = client.records()[NGINX]
            assert (rec["status"], rec["service"], rec["list_path"], rec["sends"]) == ("sent", "default/web/nginx", lp, 1)
            # Written after the answer, by the sender thread.
            wait_for(lambda: _on_disk(tmp_path / "state").get(NGINX, {}).get("status") == "sent", 5, "the record on disk")
        finally:
            client.close()


@pytest.mark.parametrize("mode,reason", [("absent", "absent"), ("refuse", "refused")])
def test_unreachable_fails_fast_counts_and_retries(sock, tmp_path, mode: str, reason: str) -> None:
    lp = list_file(tmp_path, "a.list")
    before = S.PUT_FAILURES.labels(reason)._value.get()
    with FakeSnapshotter(sock, mode=mode) as fake:
        client = SnapshotterClient(sock, tmp_path, backoff_s=(0.3, 0.3, 0.3, 0.3))
        try:
            t0 = time.monotonic()
            res = client.send([PrefetchEntry(NGINX, lp)])
            assert time.monotonic() - t0 < 0.5
            assert res.outcome == S.OUTCOME_FAILED and res.reason == reason
            # background retries, then the snapshotter comes (back) up: the entry arrives
            fake.restart(mode="serve")
            puts = fake.wait_for_puts(1, timeout_s=3)
            assert [json.loads(p.body) for p in puts] == [[{"image": NGINX, "prefetch": lp}]]
            assert S.PUT_FAILURES.labels(reason)._value.get() > before
        finally:
            client.close()


def test_retry_reaches_a_snapshotter_that_comes_up_late(sock, tmp_path) -> None:
    lp = list_file(tmp_path, "a.list")
    fake = FakeSnapshotter(sock, mode="absent").start()
    client = SnapshotterClient(sock, tmp_path, backoff_s=(0.2, 0.2, 0.2, 0.2, 0.2))
    try:
        assert client.send([PrefetchEntry(NGINX, lp)]).reason == "absent"
        fake.restart(mode="serve")
        puts = fake.wait_for_puts(1, timeout_s=3)
        assert len(puts) == 1 and fake.entries == {NGINX: lp}
        assert client.idle(3)
        assert client.records()[NGINX]["status"] == "sent"
    finally:
        client.close()
        fake.stop()


def test_hang_is_bounded_and_pending(sock, tmp_path) -> None:
    lp = list_file(tmp_path, "a.list")
    with FakeSnapshotter(sock, mode="hang"):
        client = SnapshotterClient(sock, tmp_path, wait_s=0.2, request_timeout_s=0.5, backoff_s=())
        try:
            t0 = time.monotonic()
            res = client.send([PrefetchEntry(NGINX, lp)])
            took = time.monotonic() - t0
            assert res.outcome == S.OUTCOME_PENDING
            assert 0.15 < took < 0.4
            assert client.idle(3)
            assert client.records()[NGINX]["status"] == "failed"
            assert client.records()[NGINX]["last_error"] == "timeout"
        finally:
            client.close()


def test_newer_send_supersedes_queued_retry(sock, tmp_path) -> None:
    old, new = list_file(tmp_path, "old.list", "/old\n"), list_file(tmp_path, "new.list", "/new\n")
    fake = FakeSnapshotter(sock, mode="absent").start()
    client = SnapshotterClient(sock, tmp_path, backoff_s=(0.3,))
    try:
        client.send([PrefetchEntry(NGINX, old)])  # fails, retry queued for +0.3 s
        fake.restart(mode="serve")
        assert client.send([PrefetchEntry(NGINX, new)]).outcome == S.OUTCOME_OK
        time.sleep(0.5)
        assert client.idle(2)
        assert [json.loads(p.body)[0]["prefetch"] for p in fake.prefetch_puts()] == [new]
        assert fake.entries == {NGINX: new}
    finally:
        client.close()
        fake.stop()


def test_restart_triggers_resend_of_recent_entries(sock, tmp_path) -> None:
    a, b = list_file(tmp_path, "a.list"), list_file(tmp_path, "b.list")
    with FakeSnapshotter(sock) as fake:
        client = SnapshotterClient(sock, tmp_path, watch_interval_s=0.05)
        try:
            assert client.send([PrefetchEntry(NGINX, a), PrefetchEntry(REDIS, b)]).outcome == S.OUTCOME_OK
            fake.restart()  # entries lost
            assert fake.entries == {}
            deadline = time.monotonic() + 3
            while fake.entries != {NGINX: a, REDIS: b} and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fake.entries == {NGINX: a, REDIS: b}
            assert [p.epoch for p in fake.prefetch_puts()] == [0, 1]
            assert client.idle(2)
            assert client.records()[NGINX]["sends"] == 2
        finally:
            client.close()


def test_no_resend_outside_window(sock, tmp_path) -> None:
    a = list_file(tmp_path, "a.list")
    with FakeSnapshotter(sock) as fake:
        client = SnapshotterClient(sock, tmp_path, watch_interval_s=0.05, resend_window_s=0.0)
        try:
            client.send([PrefetchEntry(NGINX, a)])
            time.sleep(0.05)
            fake.restart()
            time.sleep(0.4)
            assert len(fake.prefetch_puts()) == 1
        finally:
            client.close()


def test_record_survives_client_restart_and_bad_record_is_ignored(sock, tmp_path) -> None:
    a = list_file(tmp_path, "a.list")
    with FakeSnapshotter(sock):
        c1 = SnapshotterClient(sock, tmp_path)
        c1.send([PrefetchEntry(NGINX, a, "s")])
        c1.close()
        c2 = SnapshotterClient(sock, tmp_path)
        assert c2.last_sent(NGINX)["service"] == "s"
        c2.close()
    (tmp_path / "sent.json").write_text("{not json")
    c3 = SnapshotterClient(sock, tmp_path)
    assert c3.records() == {}
    c3.close()


def test_non_200_is_a_failure(sock, tmp_path) -> None:
    # A server that answers 500, to make sure we do not treat any answer as success.
    import threading

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        data = b""
        while not data.endswith(b"]"):  # the whole request, headers and JSON body
            data += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = S.put_prefetch(sock, [PrefetchEntry(NGINX, "/x")], 1.0)
        assert res == S.SendResult(S.OUTCOME_FAILED, "http_500")
    finally:
        srv.close()
