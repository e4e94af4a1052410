"""A TCP relay between Kafka clients and a gateway that can lose one Produce answer on its way
back to the client, as a network that cuts a connection after the request went through does:
the pool has the batch and has acknowledged it to the gateway, the client never hears so and
sends the batch again on a new connection.

One listener per gateway lane (lane l on `port + l`, forwarding to the gateway's lane l); the
gateway is started with `--advertise 127.0.0.1:<port>` so that clients come back through it.
"""

from __future__ import annotations

import socket
import struct
import threading

PRODUCE = 0


class AnswerDropper:
    def __init__(self, port: int, gateway_port: int, lanes: int):
        self.port, self.gateway_port, self.lanes = port, gateway_port, lanes
        self.dropped = 0
        self._armed = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._closed = False

    def start(self) -> "AnswerDropper":
        for lane in range(self.lanes):
            listener = socket.create_server(("127.0.0.1", self.port + lane))
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, lane), daemon=True).start()
        return self

    def arm(self) -> None:
        """The next Produce answer to come back is lost and its connection cut."""
        self._armed.set()

    def close(self) -> None:
        self._closed = True
        for listener in self._listeners:
            listener.close()

    def _accept(self, listener: socket.socket, lane: int) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                gateway = socket.create_connection(("127.0.0.1", self.gateway_port + lane))
            except OSError:
                client.close()
                continue
            apis: dict[int, int] = {}  # correlation id -> api key of requests on the way
            threading.Thread(target=self._requests, args=(client, gateway, apis), daemon=True).start()
            threading.Thread(target=self._answers, args=(gateway, client, apis), daemon=True).start()

    @staticmethod
    def _frame(sock: socket.socket) -> bytes | None:
        head = _read(sock, 4)
        if head is None:
            return None
        body = _read(sock, struct.unpack(">i", head)[0])
        return None if body is None else head + body

    def _requests(self, client: socket.socket, gateway: socket.socket, apis: dict) -> None:
        try:
            while (frame := self._frame(client)) is not None:
                api, _version, correlation = struct.unpack(">hhi", frame[4:12])
                apis[correlation] = api
                gateway.sendall(frame)
        except OSError:
            pass
        _close(client, gateway)

    def _answers(self, gateway: socket.socket, client: socket.socket, apis: dict) -> None:
        try:
            while (frame := self._frame(gateway)) is not None:
                correlation = struct.unpack(">i", frame[4:8])[0]
                if apis.pop(correlation, None) == PRODUCE and self._armed.is_set():
                    with self._lock:
                        self._armed.clear()
                        self.dropped += 1
                    break  # the answer is lost with the connection
                client.sendall(frame)
        except OSError:
            pass
        _close(client, gateway)


def _read(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
