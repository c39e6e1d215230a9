"""The console's own WebSocket framing (fast tier): what a browser sends, masked and split
anyhow, arrives whole; what the bridge sends is what a WebSocket client reads."""
import os
import socket
import threading

import pytest
from wsproto.connection import Connection as WsConnection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection
from wsproto.frame_protocol import FrameProtocol

from limen.console import frames as websocket


def client_frames(*events) -> bytes:
    """Frames as a browser writes them: masked, by wsproto acting as the client."""
    proto = FrameProtocol(client=True, extensions=[])
    out = b""
    for kind, payload in events:
        if kind == "data":
            out += proto.send_data(payload, fin=True)
        elif kind == "ping":
            out += proto.ping(payload)
        elif kind == "close":
            out += proto.close(code=payload)
    return out


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_masked_frames_of_every_length_arrive_whole_however_they_are_split(size):
    payload = os.urandom(size)
    wire = client_frames(("data", payload), ("data", b"next"))
    ours, browser = socket.socketpair()
    with ours, browser:
        conn = websocket.Connection(ours)

        def write():  # odd-sized pieces cut through headers and masks
            for i in range(0, len(wire), 7001):
                browser.sendall(wire[i:i + 7001])
            browser.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        assert list(conn.frames()) == [(websocket.BINARY, payload), (websocket.BINARY, b"next")]
        writer.join(10)


def test_control_frames_and_an_oversized_frame():
    ours, browser = socket.socketpair()
    with ours, browser:
        conn = websocket.Connection(ours)
        browser.sendall(client_frames(("ping", b"hi"), ("close", 1000)))
        frames = conn.frames()
        assert next(frames) == (websocket.PING, b"hi")
        opcode, payload = next(frames)
        assert opcode == websocket.CLOSE and payload[:2] == (1000).to_bytes(2, "big")
        browser.sendall(bytes([0x82, 0xFF]) + (websocket.MAX_MESSAGE + 1).to_bytes(8, "big"))
        with pytest.raises(websocket.FrameError) as refused:
            next(frames)
        assert refused.value.close_code == 1009  # message too big


def test_what_the_bridge_sends_is_what_a_client_reads():
    client = WsConnection(ConnectionType.CLIENT)
    data = os.urandom(70_000)
    client.receive_data(websocket.frame(websocket.BINARY, data)
                        + websocket.frame(websocket.CLOSE, websocket.close_payload(4409, "VM_START_FAILED")))
    events = list(client.events())
    assert isinstance(events[0], BytesMessage) and events[0].data == data
    assert isinstance(events[1], CloseConnection) and (events[1].code, events[1].reason) == (4409, "VM_START_FAILED")


MASK = b"\x01\x02\x03\x04"


def masked(first: int, payload: bytes = b"") -> bytes:
    """One frame from a client: first byte (FIN, RSV, opcode) as given, masked payload."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([first]) + length + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("wire, close_code", [
    (bytes([0x82, 0x02]) + b"hi", 1002),  # unmasked: a client masks every frame
    (masked(0x89, b"x" * 126), 1002),  # a ping over 125 bytes
    (masked(0x09, b"hi"), 1002),  # a fragmented ping
    (masked(0xC2, b"hi"), 1002),  # RSV1 set, and no extension was agreed
    (masked(0x83, b"hi"), 1002),  # opcode 3 is reserved
    (masked(0x80, b"hi"), 1002),  # a continuation with no message to continue
    (masked(0x02, b"hi") + masked(0x82, b"again"), 1002),  # a new message inside a fragmented one
    (masked(0x02, b"x" * 100) + masked(0x00, b"y" * 100)
     + bytes([0x00, 0xFF]) + (websocket.MAX_MESSAGE - 199).to_bytes(8, "big"), 1009),  # fragments past the limit
])
def test_frames_rfc_6455_forbids_are_refused_with_its_close_code(wire, close_code):
    ours, browser = socket.socketpair()
    with ours, browser:
        conn = websocket.Connection(ours)
        browser.sendall(wire)
        browser.shutdown(socket.SHUT_WR)
        with pytest.raises(websocket.FrameError) as refused:
            list(conn.frames())
        assert refused.value.close_code == close_code


def test_a_fragmented_message_with_a_ping_between_arrives_in_order():
    ours, browser = socket.socketpair()
    with ours, browser:
        conn = websocket.Connection(ours)
        browser.sendall(masked(0x02, b"one") + masked(0x89, b"p") + masked(0x80, b"two"))
        browser.shutdown(socket.SHUT_WR)
        assert list(conn.frames()) == [(websocket.BINARY, b"one"), (websocket.PING, b"p"),
                                       (websocket.CONTINUATION, b"two")]
