"""NRI's connection multiplexer: two logical byte streams over one unix stream socket.

Each frame is an 8-byte header (uint32 BE conn id, uint32 BE payload length) and the payload. The
payloads of one conn form a byte stream: a message may be split across frames, and one frame may
hold several messages. Pure code: bytes in, frames out; no sockets.
"""

from __future__ import annotations

import struct

PLUGIN_SERVICE_CONN = 1
"""Conn on which the runtime is the client and the plugin serves ``Plugin``."""

RUNTIME_SERVICE_CONN = 2
"""Conn on which the plugin is the client of the runtime's ``Runtime`` service."""

FRAME_HEADER = struct.Struct(">II")
HEADER_LEN = FRAME_HEADER.size

MAX_OUTBOUND_PAYLOAD = 4096
"""containerd 1.7.24 rejects larger frames ("cannot allocate memory"), so we never send one."""

MAX_INBOUND_PAYLOAD = 10 + (4 << 20)
"""The largest frame a well-behaved runtime sends: a whole maximal ttrpc message with its header."""


class MuxProtocolError(ValueError):
    """The peer sent something no NRI runtime sends; the connection cannot be trusted further."""


def encode_frames(conn_id: int, data: bytes, max_payload: int = MAX_OUTBOUND_PAYLOAD) -> bytes:
    """Wrap ``data`` for ``conn_id`` in as many frames as needed, each at most ``max_payload``."""
    if max_payload <= 0:
        raise ValueError(f"max_payload must be positive, got {max_payload}")
    if len(data) <= max_payload:
        return FRAME_HEADER.pack(conn_id, len(data)) + data
    view = memoryview(data)
    parts: list[bytes] = []
    for start in range(0, len(data), max_payload):
        chunk = view[start : start + max_payload]
        parts.append(FRAME_HEADER.pack(conn_id, len(chunk)))
        parts.append(chunk.tobytes())
    return b"".join(parts)


class FrameDecoder:
    """Turns the raw socket byte stream into ``(conn_id, payload)`` frames.

    Feed it whatever ``recv`` returned, in any split; it keeps partial frames until complete.
    """

    __slots__ = ("_buf", "_max_payload")

    def __init__(self, max_payload: int = MAX_INBOUND_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            conn_id, length = FRAME_HEADER.unpack_from(buf, pos)
            if length > self._max_payload:
                raise MuxProtocolError(
                    f"mux frame for conn {conn_id} announces {length} bytes, "
                    f"more than the {self._max_payload} allowed"
                )
            if end - pos - HEADER_LEN < length:
                break
            start = pos + HEADER_LEN
            frames.append((conn_id, bytes(buf[start : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)
