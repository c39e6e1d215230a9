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
        browser.sendall(bytes([0x82, 0xFF]) + (websocket.MAX_FRAME + 1).to_bytes(8, "big"))
        with pytest.raises(websocket.FrameError):
            next(frames)


def test_what_the_bridge_sends_is_what_a_client_reads():
    client = WsConnection(ConnectionType.CLIENT)
    data = os.urandom(70_000)
    client.receive_data(websocket.frame(websocket.BINARY, data)
                        + websocket.frame(websocket.CLOSE, websocket.close_payload(4409, "VM_START_FAILED")))
    events = list(client.events())
    assert isinstance(events[0], BytesMessage) and events[0].data == data
    assert isinstance(events[1], CloseConnection) and (events[1].code, events[1].reason) == (4409, "VM_START_FAILED")
