"""The WebSocket frame codec and handshake used by MQTT over WebSocket, without a network."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.bridges.mqtt.websocket import (
    OP_BINARY,
    WebSocketError,
    accept_key,
    encode_frame,
    handshake_response,
    parse_frames,
    parse_handshake,
)


def client_frame(payload: bytes, opcode: int = OP_BINARY, mask: bytes | None = None) -> bytes:
    mask = mask or os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_selects_the_mqtt_subprotocol() -> None:
    request = (
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    assert parse_handshake(request[:20]) is None
    headers, path = parse_handshake(request)
    assert path == "/mqtt"
    response = handshake_response(headers)
    assert response.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: mqtt\r\n" in response


def test_non_upgrade_request_is_rejected() -> None:
    with pytest.raises(WebSocketError):
        parse_handshake(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=3), st.integers(0, 10))
def test_masked_client_frames_decode_in_pieces(payloads: list[bytes], cut: int) -> None:
    wire = b"".join(client_frame(p) for p in payloads)
    cut = min(cut, len(wire))
    frames, used = parse_frames(wire[:cut], 1 << 20)
    rest_frames, rest_used = parse_frames(wire[used:], 1 << 20)
    assert [p for _, p in frames + rest_frames] == payloads
    assert used + rest_used == len(wire)


def test_unmasked_client_frame_is_an_error() -> None:
    with pytest.raises(WebSocketError):
        parse_frames(encode_frame(b"abc"), 1024)


def test_oversize_frame_is_an_error() -> None:
    with pytest.raises(WebSocketError):
        parse_frames(client_frame(b"x" * 200), 100)


@given(st.binary(max_size=70000))
def test_server_frame_length_forms(payload: bytes) -> None:
    frame = encode_frame(payload)
    assert frame[0] == 0x80 | OP_BINARY and frame.endswith(payload)
