"""Mux framing: conn id + length frames, per-conn byte streams, 4096-byte outbound frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.nri import mux


def _parse_frames(data: bytes) -> list[tuple[int, int]]:
    """(conn, length) of each frame in ``data``, checking it is exactly a sequence of frames."""
    out = []
    pos = 0
    while pos < len(data):
        conn, length = struct.unpack_from(">II", data, pos)
        pos += 8 + length
        out.append((conn, length))
    assert pos == len(data)
    return out


def test_small_message_is_one_frame_with_big_endian_header() -> None:
    data = mux.encode_frames(2, b"hello")
    assert data == b"\x00\x00\x00\x02\x00\x00\x00\x05hello"


def test_large_message_is_split_into_frames_of_at_most_4096_bytes() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes, like the registration containerd once refused
    data = mux.encode_frames(1, payload)
    frames = _parse_frames(data)
    assert [length for _, length in frames] == [4096, 4096, 2048]
    assert {conn for conn, _ in frames} == {1}
    assert b"".join(p for _, p in mux.FrameDecoder().feed(data)) == payload


def test_exactly_4096_bytes_stays_one_frame() -> None:
    assert _parse_frames(mux.encode_frames(1, b"x" * 4096)) == [(1, 4096)]
    assert _parse_frames(mux.encode_frames(1, b"x" * 4097)) == [(1, 4096), (1, 1)]


@given(st.binary(max_size=20000), st.integers(min_value=1, max_value=5000))
def test_outbound_frames_never_exceed_limit_and_roundtrip(payload: bytes, limit: int) -> None:
    data = mux.encode_frames(7, payload, max_payload=limit)
    frames = _parse_frames(data)
    assert all(length <= limit for _, length in frames)
    assert b"".join(p for _, p in mux.FrameDecoder().feed(data)) == payload


def test_byte_at_a_time_feed_yields_same_frames() -> None:
    data = mux.encode_frames(1, b"a" * 5000) + mux.encode_frames(2, b"bc")
    dec = mux.FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames.extend(dec.feed(data[i : i + 1]))
    assert frames == [(1, b"a" * 4096), (1, b"a" * 904), (2, b"bc")]
    assert dec.pending == 0


def test_several_frames_in_one_read_and_partial_tail_kept() -> None:
    data = mux.encode_frames(1, b"one") + mux.encode_frames(2, b"two") + mux.encode_frames(1, b"three")
    dec = mux.FrameDecoder()
    assert dec.feed(data[:-2]) == [(1, b"one"), (2, b"two")]
    assert dec.pending == 8 + 3
    assert dec.feed(data[-2:]) == [(1, b"three")]


def test_zero_length_frame_is_delivered() -> None:
    assert mux.FrameDecoder().feed(mux.encode_frames(1, b"")) == [(1, b"")]


def test_absurd_frame_length_is_a_protocol_error() -> None:
    dec = mux.FrameDecoder()
    with pytest.raises(mux.MuxProtocolError, match="announces 4294967295 bytes"):
        dec.feed(struct.pack(">II", 1, 0xFFFFFFFF))


def test_nonpositive_max_payload_is_refused() -> None:
    with pytest.raises(ValueError, match="max_payload must be positive"):
        mux.encode_frames(1, b"x", max_payload=0)
