"""ttrpc message framing and the Request/Response envelope, without sockets.

A message is a 10-byte header (uint32 BE body length, uint32 BE stream id, uint8 type, uint8
flags) followed by a protobuf body. Requests and responses are matched by stream id; a client
uses odd ids. Bodies larger than 4 MiB are refused in both directions, as ttrpc does.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from agent.nri.proto import ttrpc_pb2

MESSAGE_HEADER = struct.Struct(">IIBB")
HEADER_LEN = MESSAGE_HEADER.size  # 10
MAX_MESSAGE_LEN = 4 << 20

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3  # streaming; NRI never uses it


class Code(enum.IntEnum):
    """gRPC status codes, which ttrpc reuses."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcProtocolError(ValueError):
    """Bytes that are not valid ttrpc; the connection should be dropped."""


class OversizedMessageError(ValueError):
    """A message body over ttrpc's 4 MiB limit."""

    def __init__(self, length: int) -> None:
        super().__init__(f"ttrpc message of {length} bytes exceeds the {MAX_MESSAGE_LEN} byte maximum")
        self.length = length


class RpcError(Exception):
    """A ttrpc call that the peer answered with a non-OK status."""

    def __init__(self, code: int, message: str) -> None:
        try:
            name = Code(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"ttrpc status {name} ({code}): {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Message:
    stream_id: int
    type: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class OversizedMessage:
    """An inbound message whose body was skipped because it exceeded the limit."""

    stream_id: int
    type: int
    length: int


@dataclass(frozen=True, slots=True)
class Request:
    service: str
    method: str
    payload: bytes
    timeout_nano: int = 0
    metadata: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    message: str
    payload: bytes

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


def encode_message(stream_id: int, msg_type: int, body: bytes, flags: int = 0) -> bytes:
    if len(body) > MAX_MESSAGE_LEN:
        raise OversizedMessageError(len(body))
    return MESSAGE_HEADER.pack(len(body), stream_id, msg_type, flags) + body


def encode_request(stream_id: int, request: Request) -> bytes:
    pb = ttrpc_pb2.Request(
        service=request.service,
        method=request.method,
        payload=request.payload,
        timeout_nano=request.timeout_nano,
    )
    for key, values in request.metadata.items():
        for value in values:
            pb.metadata.add(key=key, value=value)
    return encode_message(stream_id, TYPE_REQUEST, pb.SerializeToString())


def encode_response(stream_id: int, code: int = Code.OK, message: str = "", payload: bytes = b"") -> bytes:
    pb = ttrpc_pb2.Response(payload=payload)
    # ttrpc servers always set status, OK included; clients accept either.
    pb.status.code = int(code)
    pb.status.message = message
    return encode_message(stream_id, TYPE_RESPONSE, pb.SerializeToString())


def decode_request(body: bytes) -> Request:
    pb = ttrpc_pb2.Request()
    try:
        pb.ParseFromString(body)
    except DecodeError as exc:
        raise TtrpcProtocolError(f"undecodable ttrpc request: {exc}") from exc
    metadata: dict[str, list[str]] = {}
    for kv in pb.metadata:
        metadata.setdefault(kv.key, []).append(kv.value)
    return Request(pb.service, pb.method, pb.payload, pb.timeout_nano, metadata)


def decode_response(body: bytes) -> Response:
    pb = ttrpc_pb2.Response()
    try:
        pb.ParseFromString(body)
    except DecodeError as exc:
        raise TtrpcProtocolError(f"undecodable ttrpc response: {exc}") from exc
    return Response(pb.status.code, pb.status.message, pb.payload)


class MessageDecoder:
    """Reassembles ttrpc messages from one conn's byte stream.

    Oversized bodies are skipped as they stream past (never buffered) and reported as
    :class:`OversizedMessage`, so a server can answer RESOURCE_EXHAUSTED and keep the connection.
    """

    __slots__ = ("_buf", "_skip", "_max_len")

    def __init__(self, max_len: int = MAX_MESSAGE_LEN) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._max_len = max_len

    def feed(self, data: bytes) -> list[Message | OversizedMessage]:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        buf += data
        out: list[Message | OversizedMessage] = []
        pos = 0
        while len(buf) - pos >= HEADER_LEN:
            length, stream_id, msg_type, flags = MESSAGE_HEADER.unpack_from(buf, pos)
            body_start = pos + HEADER_LEN
            if length > self._max_len:
                out.append(OversizedMessage(stream_id, msg_type, length))
                available = len(buf) - body_start
                if available >= length:
                    pos = body_start + length
                    continue
                self._skip = length - available
                pos = len(buf)
                break
            if len(buf) - body_start < length:
                break
            out.append(Message(stream_id, msg_type, flags, bytes(buf[body_start : body_start + length])))
            pos = body_start + length
        if pos:
            del buf[:pos]
        return out


class StreamIds:
    """Odd stream ids for the client side of one conn: 1, 3, 5, ..., wrapping before 2**32."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 1

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        sid = self._next
        self._next = sid + 2 if sid < 0xFFFF_FFFD else 1
        return sid
