"""Sockets for the bridge: a listener the games connect to, and one connection per game instance.

Two transports carry the same payloads (``protocol``): ``tcp``, each payload preceded by its u32 LE length,
and ``websocket``, one binary message per payload (the ``websockets`` library's threaded server does the
RFC 6455 part). Both connections offer ``send(payload)``, ``recv(timeout) -> bytes`` and ``close()``;
``recv`` raises ``BridgeTimeout`` after ``timeout`` seconds, ``BridgeDisconnected`` when the game closed the
connection, and ``BridgeError(frame_too_large)`` for a payload above the size limit (never read).
"""

from __future__ import annotations

import os
import queue
import select
import socket
import struct
import threading
import time
from typing import Protocol

from .protocol import BridgeDisconnected, BridgeError, BridgeTimeout

_U32 = struct.Struct("<I")


class Connection(Protocol):
    peer: str

    def send(self, payload: bytes) -> None: ...

    def flush(self) -> None:
        """Send what ``send`` queued: a no-op for a connection of its own, one ``batch`` for an instance that
        shares its game's connection (mux.py)."""

    def recv(self, timeout: float | None) -> bytes: ...

    def close(self) -> None: ...


def _too_large(size: int, limit: int) -> BridgeError:
    return BridgeError(
        f"frame_too_large: the game sent a {size}-byte payload; the limit is {limit} bytes (env.max_frame_bytes).",
        code="frame_too_large", game=size, trainer=limit,
    )


class TcpConnection:
    """Length-prefixed frames over a TCP socket.

    The socket is non-blocking: a frame that has arrived is read with one ``recv`` (into a buffer that keeps
    what follows it), and ``poll`` waits only when nothing is there yet, so an answer that is already in costs
    one system call rather than a timeout set and a poll per read.

    ``spin`` (seconds, env.spin_us): how long a read that finds nothing keeps retrying before it blocks in
    ``poll``. A process that blocks lets its CPU halt, and waking a halted CPU when the answer comes costs more,
    on a virtual machine, than the game's step of a light game; with a core for each process, retrying for an
    answer that is due within a millisecond is cheaper. Each retry yields the CPU (``sched_yield``): on a
    machine busy with other work, the spin gives way to it rather than delaying it.
    """

    def __init__(self, sock: socket.socket, max_frame_bytes: int, spin: float = 0.0):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.max_frame_bytes = max_frame_bytes
        self.spin = spin
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._buf = bytearray(1 << 16)
        self._start = self._end = 0  # the bytes received and not yet handed out
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"

    def send(self, payload: bytes) -> None:
        data = memoryview(_U32.pack(len(payload)) + payload)
        try:
            while data:
                try:
                    data = data[self.sock.send(data):]
                except BlockingIOError:  # the game does not read: wait until its buffer has room
                    select.select([], [self.sock], [], 1.0)
        except OSError as exc:
            raise BridgeDisconnected(f"the connection from {self.peer} broke while sending ({exc})") from exc

    def flush(self) -> None:
        pass

    def _fill(self, need: int, deadline: float | None) -> None:
        """Receive until ``need`` bytes past ``_start`` are buffered."""
        if self._start + need > len(self._buf):  # move what is left to the front, in a larger buffer if needed
            kept = self._buf[self._start:self._end]
            if need > len(self._buf):
                self._buf = bytearray(max(need, 2 * len(self._buf)))
            self._buf[: len(kept)] = kept
            self._start, self._end = 0, len(kept)
        view = memoryview(self._buf)
        spin_until = None
        while self._end - self._start < need:
            try:
                k = self.sock.recv_into(view[self._end:])
            except BlockingIOError:
                now = time.monotonic()
                if spin_until is None:
                    spin_until = now + self.spin if deadline is None else min(now + self.spin, deadline)
                if now < spin_until:
                    os.sched_yield()
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise BridgeTimeout("timed out") from None
                self._poll.poll(None if left is None else max(1, int(left * 1000)))
                continue
            except OSError as exc:
                raise BridgeDisconnected(f"the connection from {self.peer} broke ({exc})") from exc
            if k == 0:
                raise BridgeDisconnected(f"the game at {self.peer} closed the connection")
            self._end += k

    def recv(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fill(4, deadline)
        (size,) = _U32.unpack_from(self._buf, self._start)
        if size > self.max_frame_bytes:
            raise _too_large(size, self.max_frame_bytes)
        self._fill(4 + size, deadline)
        payload = bytes(self._buf[self._start + 4 : self._start + 4 + size])
        self._start += 4 + size
        if self._start == self._end:
            self._start = self._end = 0
        return payload

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class WebSocketConnection:
    """One binary WebSocket message per payload (``websockets.sync``'s server connection)."""

    def __init__(self, ws, done: threading.Event, max_frame_bytes: int):
        self.ws = ws
        self._done = done  # set to let the server's handler thread return (which closes the socket)
        self.max_frame_bytes = max_frame_bytes
        host, port = ws.remote_address[:2]
        self.peer = f"{host}:{port}"

    def send(self, payload: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(payload)
        except ConnectionClosed as exc:
            raise BridgeDisconnected(f"the WebSocket from {self.peer} closed while sending ({exc})") from exc

    def flush(self) -> None:
        pass

    def recv(self, timeout: float | None) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            data = self.ws.recv(timeout=timeout)
        except TimeoutError as exc:
            raise BridgeTimeout("timed out") from exc
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:  # the library refused a message above max_size
                raise BridgeError(
                    f"frame_too_large: the game sent a message above the limit of {self.max_frame_bytes} bytes "
                    "(env.max_frame_bytes).", code="frame_too_large", trainer=self.max_frame_bytes,
                ) from exc
            raise BridgeDisconnected(f"the game at {self.peer} closed the WebSocket ({exc})") from exc
        if isinstance(data, str):
            raise BridgeError("bad_frame: the game sent a text WebSocket message; the bridge takes binary ones.",
                              field="websocket message")
        return data

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self._done.set()


# -- listeners --------------------------------------------------------------------------------------------


class TcpListener:
    def __init__(self, host: str, port: int, max_frame_bytes: int, spin: float = 0.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise BridgeError(f"env.port: cannot listen on {host}:{port} ({exc}); pick another port or 0.",
                              code="config") from exc
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.max_frame_bytes = max_frame_bytes
        self.spin = spin

    def accept(self, timeout: float) -> TcpConnection | None:
        """The next game that connects within ``timeout`` seconds, else None."""
        self.sock.settimeout(max(timeout, 0.0))
        try:
            sock, _ = self.sock.accept()
        except TimeoutError:
            return None
        sock.settimeout(None)
        return TcpConnection(sock, self.max_frame_bytes, self.spin)

    def close(self) -> None:
        self.sock.close()


class WebSocketListener:
    """``websockets.sync.server.serve`` on a background thread; accepted connections queue up for ``accept``."""

    def __init__(self, host: str, port: int, max_frame_bytes: int):
        from websockets.sync.server import serve

        self.max_frame_bytes = max_frame_bytes
        self._accepted: queue.Queue[WebSocketConnection] = queue.Queue()
        self._handlers: list[threading.Event] = []
        try:
            self.server = serve(
                self._handle, host, port, max_size=max_frame_bytes, compression=None,
                ping_interval=None, open_timeout=30, close_timeout=2,
            )
        except OSError as exc:
            raise BridgeError(f"env.port: cannot listen on {host}:{port} ({exc}); pick another port or 0.",
                              code="config") from exc
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="agentkit-bridge-ws", daemon=True)
        self._thread.start()

    def _handle(self, ws) -> None:
        done = threading.Event()
        self._handlers.append(done)
        self._accepted.put(WebSocketConnection(ws, done, self.max_frame_bytes))
        done.wait()  # the connection lives as long as this handler thread does

    def accept(self, timeout: float) -> WebSocketConnection | None:
        try:
            return self._accepted.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        for done in self._handlers:
            done.set()
        self.server.shutdown()


def listen(transport: str, host: str, port: int, max_frame_bytes: int,
           spin: float = 0.0) -> TcpListener | WebSocketListener:
    """``spin``: see ``TcpConnection`` (a WebSocket's reads are the library's, and do not spin)."""
    if transport == "tcp":
        return TcpListener(host, port, max_frame_bytes, spin)
    return WebSocketListener(host, port, max_frame_bytes)
