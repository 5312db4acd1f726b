"""Several game instances on one connection: ``batch`` frames (docs/bridge.md, "Several instances on one
connection").

A game process that serves K instances (``env.instances_per_process``, the clients' ``serve_many``) says so in
its hello (``"instances": K``) and gets one welcome. From then on every message on that connection, both ways, is
a ``batch``: the usual payloads of its instances' messages (a ``step`` each, a ``reset``, a ``close``) one after
the other in one blob, ``parts``, and in the header their ``slots`` (0 .. K-1) and ``sizes`` (bytes).

Why: on this machine each frame costs a system call and often a wake-up of the other side, tens of microseconds
on loopback TCP (benchmarks/RESULTS.md, "Bridge overhead"); a vector step of 8 one-instance connections pays 16 of
them, a batch pays 2.

``Multiplexed.channels`` are ``transport.Connection``s, one per slot, so an ``Instance`` (server.py) and the
vector env use them as they use a connection of their own: ``send`` queues the message, the first ``recv``
that finds nothing for its slot sends the queue as one batch and reads the game's batch of answers.
"""

from __future__ import annotations

import functools
import time
from collections import deque

from .protocol import BridgeDisconnected, BridgeError, BridgeTimeout, Layout, header_text, split
from .transport import Connection


def encode_batch(slots: list[int], payloads: list[bytes | memoryview]) -> bytes:
    """One ``batch`` payload carrying ``payloads[i]`` for slot ``slots[i]``."""
    return b"".join([_batch_header(tuple(slots), tuple(len(p) for p in payloads)), *payloads])


@functools.lru_cache(maxsize=64)
def _batch_header(slots: tuple[int, ...], sizes: tuple[int, ...]) -> bytes:
    """(A vector step's batch has the same slots and sizes as the one before.)"""
    return header_text({"type": "batch", "slots": list(slots), "sizes": list(sizes)}, [("parts", "uint8", sum(sizes))])


def decode_batch(payload: bytes | memoryview, k: int) -> list[tuple[int, memoryview]]:
    """``(slot, payload)`` of each message in a ``batch`` payload from a connection of ``k`` slots."""
    return _parts(*split(payload), k)


def _parts(header: dict, layout: Layout, body: memoryview, k: int) -> list[tuple[int, memoryview]]:
    """``decode_batch`` of a payload already split (``protocol.split``)."""
    if header.get("type") != "batch":
        raise BridgeError(f"unexpected_message: a connection of {k} instances sent {header.get('type')!r}; after "
                          "the welcome every message is a 'batch'.", code="unexpected_message")
    slots, sizes = header.get("slots"), header.get("sizes")
    if (not isinstance(slots, list) or not isinstance(sizes, list) or len(slots) != len(sizes)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < k for s in slots)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes)):
        raise BridgeError(f"bad_frame: a batch needs 'slots' (each 0 .. {k - 1}) and 'sizes' (bytes), lists of the "
                          f"same length; got slots {slots!r}, sizes {sizes!r}.", field="slots")
    names = [name for name, *_ in layout]
    if names not in ([], ["parts"]) or sum(sizes) != len(body):
        raise BridgeError(f"bad_frame: a batch's one blob is 'parts' with sum(sizes) = {sum(sizes)} bytes; got blobs "
                          f"{names} of {len(body)} bytes.", field="parts")
    out, at = [], 0
    for slot, size in zip(slots, sizes, strict=True):
        out.append((slot, body[at:at + size]))
        at += size
    return out


class Multiplexed:
    """One connection carrying ``k`` instances' messages in batches; ``channels[slot]`` is each one's end."""

    def __init__(self, conn: Connection, k: int):
        self.conn = conn
        self.k = k
        self.channels = [Channel(self, slot) for slot in range(k)]
        self._outbox: list[tuple[int, bytes]] = []
        self._inbox: list[deque[memoryview]] = [deque() for _ in range(k)]
        self._open = set(range(k))
        self._broken: BridgeError | None = None  # once the connection failed, every slot fails alike

    def queue(self, slot: int, payload: bytes) -> None:
        """Keep ``slot``'s message for the next batch (``flush``)."""
        if self._broken is not None:
            raise BridgeDisconnected(str(self._broken))
        self._outbox.append((slot, payload))

    def flush(self) -> None:
        """Send the queued messages as one batch."""
        if self._outbox and self._broken is None:
            slots, payloads = zip(*self._outbox, strict=True)
            self._outbox = []
            try:
                self.conn.send(encode_batch(list(slots), list(payloads)))
            except BridgeError as exc:
                self._broken = exc
                raise

    def recv(self, slot: int, timeout: float | None) -> memoryview:
        if self._inbox[slot]:
            return self._inbox[slot].popleft()
        if self._broken is not None:
            raise self._broken
        self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox[slot]:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise BridgeTimeout("timed out")
            try:
                payload = self.conn.recv(left)
            except BridgeTimeout:  # the game is slow, not gone: the run stops with the instance's message
                raise
            except BridgeError as exc:
                self._broken = exc
                raise
            header, layout, body = split(payload)
            if header.get("type") == "error":  # the game stops all its instances: every slot reads it
                for box in self._inbox:
                    box.append(memoryview(payload))
                continue
            for s, part in _parts(header, layout, body, self.k):
                self._inbox[s].append(part)
        return self._inbox[slot].popleft()

    def close(self, slot: int) -> None:
        """Close ``slot``'s end; the connection closes with the last (after sending what is queued)."""
        self._open.discard(slot)
        if not self._open:
            try:
                self.flush()
            except BridgeError:
                pass
            self.conn.close()


class Channel:
    """One instance's end of a ``Multiplexed`` connection (a ``transport.Connection``)."""

    def __init__(self, mux: Multiplexed, slot: int):
        self.mux = mux
        self.slot = slot
        self.peer = f"{mux.conn.peer} (slot {slot})"

    def send(self, payload: bytes) -> None:
        self.mux.queue(self.slot, payload)

    def flush(self) -> None:
        self.mux.flush()

    def recv(self, timeout: float | None) -> bytes | memoryview:
        return self.mux.recv(self.slot, timeout)

    def close(self) -> None:
        self.mux.close(self.slot)
