"""ttrpc framing over mux conns: reassembly, request/response envelopes, status codes, limits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.nri import mux, ttrpc
from agent.nri.proto import ttrpc_pb2


def _wire(conn: int, *messages: bytes, frame: int = 4096) -> bytes:
    return mux.encode_frames(conn, b"".join(messages), max_payload=frame)


def _decode_all(data: bytes, chunk: int) -> list[ttrpc.Message | ttrpc.OversizedMessage]:
    frames = mux.FrameDecoder()
    conns: dict[int, ttrpc.MessageDecoder] = {}
    out = []
    for i in range(0, len(data), chunk):
        for conn, payload in frames.feed(data[i : i + chunk]):
            out.extend(conns.setdefault(conn, ttrpc.MessageDecoder()).feed(payload))
    return out


def test_header_layout() -> None:
    assert ttrpc.encode_message(3, ttrpc.TYPE_REQUEST, b"xyz") == b"\x00\x00\x00\x03\x00\x00\x00\x03\x01\x00xyz"


def test_request_roundtrip_with_wire_field_numbers() -> None:
    req = ttrpc.Request("nri.pkg.api.v1alpha1.Plugin", "Configure", b"\x0a\x01x", 2_000_000_000, {"k": ["v"]})
    raw = ttrpc.encode_request(5, req)
    (msg,) = ttrpc.MessageDecoder().feed(raw)
    assert (msg.stream_id, msg.type, msg.flags) == (5, ttrpc.TYPE_REQUEST, 0)
    # Field numbers as ttrpc defines them: service=1, method=2, payload=3, timeout_nano=4, metadata=5.
    assert msg.body.startswith(b"\x0a\x1bnri.pkg.api.v1alpha1.Plugin\x12\x09Configure\x1a\x03\x0a\x01x\x20")
    assert ttrpc.decode_request(msg.body) == req


def test_message_split_across_two_frames_like_containerd_sends() -> None:
    # containerd split one 9015-byte message into 4096 + 4919 byte frames.
    body = ttrpc_pb2.Request(service="s", method="Synchronize", payload=b"p" * 8980).SerializeToString()
    message = ttrpc.encode_message(1, ttrpc.TYPE_REQUEST, body)
    data = mux.encode_frames(1, message[:4096]) + mux.encode_frames(1, message[4096:], max_payload=1 << 20)
    assert len(message) - 4096 > 4096
    (msg,) = _decode_all(data, chunk=65536)
    assert ttrpc.decode_request(msg.body).payload == b"p" * 8980


@pytest.mark.parametrize("chunk", [1, 3, 4096, 1 << 20])
def test_any_read_split_gives_the_same_messages(chunk: int) -> None:
    msgs = [ttrpc.encode_message(i * 2 + 1, ttrpc.TYPE_REQUEST, bytes([i]) * (i * 997)) for i in range(8)]
    data = _wire(1, *msgs[:4]) + _wire(2, msgs[4]) + _wire(1, *msgs[5:], frame=333)
    got = _decode_all(data, chunk)
    assert [(m.stream_id, m.body) for m in got] == [(i * 2 + 1, bytes([i]) * (i * 997)) for i in range(8)]


def test_several_messages_in_one_frame() -> None:
    data = _wire(1, ttrpc.encode_response(1), ttrpc.encode_response(3, ttrpc.Code.UNIMPLEMENTED, "no"))
    frames = mux.FrameDecoder().feed(data)
    assert len(frames) == 1
    first, second = ttrpc.MessageDecoder().feed(frames[0][1])
    assert ttrpc.decode_response(first.body) == ttrpc.Response(0, "", b"")
    assert ttrpc.decode_response(second.body) == ttrpc.Response(12, "no", b"")


@given(st.lists(st.binary(max_size=3000), max_size=6), st.integers(min_value=1, max_value=5000))
def test_reassembly_property(bodies: list[bytes], chunk: int) -> None:
    data = _wire(1, *(ttrpc.encode_message(2 * i + 1, ttrpc.TYPE_RESPONSE, b) for i, b in enumerate(bodies)))
    assert [m.body for m in _decode_all(data, chunk)] == bodies


def test_status_codes_roundtrip_and_ok_flag() -> None:
    for code in (ttrpc.Code.OK, ttrpc.Code.INVALID_ARGUMENT, ttrpc.Code.RESOURCE_EXHAUSTED, ttrpc.Code.UNIMPLEMENTED):
        (msg,) = ttrpc.MessageDecoder().feed(ttrpc.encode_response(7, code, f"m{int(code)}", b"pl"))
        resp = ttrpc.decode_response(msg.body)
        assert (resp.code, resp.message, resp.payload, resp.ok) == (int(code), f"m{int(code)}", b"pl", code == 0)
    assert ttrpc.Code.UNIMPLEMENTED == 12


def test_response_without_status_means_ok() -> None:
    body = ttrpc_pb2.Response(payload=b"x").SerializeToString()
    assert ttrpc.decode_response(body) == ttrpc.Response(0, "", b"x")


def test_rpc_error_names_the_code() -> None:
    assert str(ttrpc.RpcError(2, "invalid plugin index")) == "ttrpc status UNKNOWN (2): invalid plugin index"


def test_outbound_oversize_is_a_clear_error() -> None:
    with pytest.raises(ttrpc.OversizedMessageError, match="exceeds the 4194304 byte maximum"):
        ttrpc.encode_message(1, ttrpc.TYPE_RESPONSE, b"x" * (ttrpc.MAX_MESSAGE_LEN + 1))
    assert len(ttrpc.encode_message(1, ttrpc.TYPE_RESPONSE, b"x" * ttrpc.MAX_MESSAGE_LEN)) == 10 + (4 << 20)


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 23])
def test_inbound_oversize_is_skipped_and_reported_then_stream_continues(chunk: int) -> None:
    length = ttrpc.MAX_MESSAGE_LEN + 5
    big = struct.pack(">IIBB", length, 9, ttrpc.TYPE_REQUEST, 0) + b"z" * length
    after = ttrpc.encode_message(11, ttrpc.TYPE_REQUEST, b"fine")
    dec = ttrpc.MessageDecoder()
    out = []
    data = big + after
    for i in range(0, len(data), chunk):
        out.extend(dec.feed(data[i : i + chunk]))
    assert out == [ttrpc.OversizedMessage(9, ttrpc.TYPE_REQUEST, length), ttrpc.Message(11, 1, 0, b"fine")]


def test_undecodable_bodies_raise_protocol_error() -> None:
    with pytest.raises(ttrpc.TtrpcProtocolError, match="undecodable ttrpc request"):
        ttrpc.decode_request(b"\xff\xff\xff")
    with pytest.raises(ttrpc.TtrpcProtocolError, match="undecodable ttrpc response"):
        ttrpc.decode_response(b"\x0a\x05ab")


def test_client_stream_ids_are_odd_and_increasing_and_wrap() -> None:
    ids = ttrpc.StreamIds()
    assert [next(ids) for _ in range(4)] == [1, 3, 5, 7]
    ids._next = 0xFFFF_FFFD
    assert [next(ids), next(ids)] == [0xFFFF_FFFD, 1]
