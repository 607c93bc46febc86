"""Test double of nydus-snapshotter's system controller socket (the project's only test double).

It follows the upstream contract in shared/reference/nydus-handoff.md and nothing more:
  * HTTP/1.1 over a unix socket (default /run/containerd-nydus/system.sock);
  * `PUT /api/v1/prefetch` with a JSON array of {"image", "prefetch"}; the entries go into an
    in-memory map image -> path, the last writer for an image wins;
  * the handler answers 200 even when the body is malformed; the body is decoded the way Go's
    json.Unmarshal into []map[string]string does, all or nothing (see `_store`);
  * an entry is used once (`consume`, what starting a dedicated nydusd does) and every entry is
    lost on restart.
Other paths answer 404 and other methods on the prefetch path 405, as a Go mux would.

For the tests it records every request (wall-clock and monotonic ns, method, path, body, status)
in memory and, optionally, as JSON lines in a file so a test in another process can assert order.

Modes: "serve" (normal), "hang" (accepts, reads, never answers), "refuse" (socket file exists, no
listener: connect gets ECONNREFUSED), "absent" (no socket file). `restart()` drops every entry
and recreates the socket file (a new inode, as a real restart does).

Run standalone:  python -m testbed.fake_snapshotter --socket PATH --record FILE [--mode serve]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import signal
import socket
import socketserver
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFETCH_PATH = "/api/v1/prefetch"
MODES = ("serve", "hang", "refuse", "absent")


@dataclass(frozen=True)
class RecordedRequest:
    wall_ns: int
    mono_ns: int
    method: str
    path: str
    body: str  # decoded with errors="replace": the raw bytes may be anything
    status: int | None  # None when the mode never answered
    parsed: Any = None  # the entries stored from this body (upstream's decoding), else None
    epoch: int = 0  # which incarnation (restarts) of the snapshotter saw it


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeSnapshotter


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake_snapshotter " + format, *args)

    def address_string(self) -> str:  # unix peers have no host/port
        return "unix"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        owner = self.server.owner
        body = self._body()
        if owner.mode == "hang":
            owner._record(self.command, self.path, body, None, None)
            owner._hang_event.wait()  # until stop(): never answers
            self.close_connection = True
            return
        if self.path.split("?", 1)[0] != PREFETCH_PATH:
            status, parsed = 404, None
        elif self.command != "PUT":
            status, parsed = 405, None
        else:
            status, parsed = 200, owner._store(body)
        owner._record(self.command, self.path, body, status, parsed)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_GET = do_POST = do_DELETE = _handle


class FakeSnapshotter:
    """In-process fake; also usable from another process via `main` and the JSON-lines record."""

    def __init__(self, socket_path: str | os.PathLike[str], record_path: str | os.PathLike[str] | None = None,
                 mode: str = "serve") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.socket_path = str(socket_path)
        self.record_path = Path(record_path) if record_path else None
        self.mode = mode
        self.epoch = 0
        self.requests: list[RecordedRequest] = []
        self.entries: dict[str, str] = {}
        self.consumed: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._refuse_sock: socket.socket | None = None
        self._hang_event = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeSnapshotter:
        Path(self.socket_path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._hang_event.clear()
        if self.mode == "absent":
            return self
        if self.mode == "refuse":
            # Bound but never listening: connect() fails with ECONNREFUSED, like a dead server.
            self._refuse_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._refuse_sock.bind(self.socket_path)
            return self
        self._server = _Server(self.socket_path, _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-snapshotter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._hang_event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._refuse_sock is not None:
            self._refuse_sock.close()
            self._refuse_sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def restart(self, mode: str | None = None) -> None:
        """Like a snapshotter restart: every entry is lost and the socket is a new file."""
        self.stop()
        with self._lock:
            self.entries.clear()
            self.epoch += 1
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}")
            self.mode = mode
        self.start()

    def __enter__(self) -> FakeSnapshotter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the upstream behaviour ------------------------------------------------------------------
    def _store(self, body: bytes) -> Any:
        """What upstream's handler does with the body; it answers 200 whatever happens here.

        Upstream decodes the whole body into a Go `[]map[string]string` and, only if that succeeds,
        sets `map[item["image"]] = item["prefetch"]` for every element. So: any decode error (bad
        JSON, not an array, an element that is not an object or null, a value that is not a string
        or null) stores nothing at all; a missing field or a null reads as "" and is stored as such
        (an empty path overwrites an earlier entry for that image, an empty image is a key too);
        extra fields are ignored; a top-level null is an empty array. Returns the decoded elements
        (what was stored), or None when nothing was.
        """
        decoded = _go_decode_entries(body)
        if decoded is None:
            return None
        with self._lock:
            for item in decoded:
                self.entries[item.get("image", "")] = item.get("prefetch", "")  # last writer wins
        return decoded

    def consume(self, image: str) -> str | None:
        """What starting a dedicated nydusd for `image` does: take the entry, once."""
        with self._lock:
            path = self.entries.pop(image, None)
            if path is not None:
                self.consumed.append((image, path))
            return path

    # -- the test record -------------------------------------------------------------------------
    def _record(self, method: str, path: str, body: bytes, status: int | None, parsed: Any) -> None:
        req = RecordedRequest(time.time_ns(), time.monotonic_ns(), method, path,
                              body.decode("utf-8", "replace"), status, parsed, self.epoch)
        with self._lock:
            self.requests.append(req)
            if self.record_path is not None:
                with open(self.record_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(req)) + "\n")

    def prefetch_puts(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "PUT" and r.path == PREFETCH_PATH]

    def wait_for_puts(self, n: int, timeout_s: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            puts = self.prefetch_puts()
            if len(puts) >= n:
                return puts
            time.sleep(0.01)
        return self.prefetch_puts()


def _go_decode_entries(body: bytes) -> list[dict[str, str]] | None:
    """json.Unmarshal(body, &[]map[string]string{}): the decoded elements, or None on any error."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))  # Go replaces invalid UTF-8, no error
    except ValueError:
        return None
    if data is None:
        return []
    if not isinstance(data, list):
        return None
    out = []
    for item in data:
        if item is None:
            out.append({})  # a nil map: both fields read as ""
            continue
        if not isinstance(item, dict) or not all(v is None or isinstance(v, str) for v in item.values()):
            return None
        out.append({k: ("" if v is None else v) for k, v in item.items()})
    return out


def read_record(path: str | os.PathLike[str]) -> list[RecordedRequest]:
    """Requests a standalone fake recorded, in arrival order."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        if line.strip():
            out.append(RecordedRequest(**json.loads(line)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", default="/run/containerd-nydus/system.sock")
    parser.add_argument("--record", help="append every request as a JSON line here")
    parser.add_argument("--mode", choices=MODES, default="serve")
    args = parser.parse_args(argv)
    fake = FakeSnapshotter(args.socket, args.record, args.mode).start()
    stop = threading.Event()
    # SIGHUP: restart (entries lost, new socket), as the e2e tests need from another process.
    signal.signal(signal.SIGHUP, lambda *_: fake.restart())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"fake-snapshotter mode={fake.mode} socket={fake.socket_path}", flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
