"""agentkit bridge client for games written in Python (protocol version 2, docs/bridge.md).

One file, numpy only (plus the ``websockets`` package for ``transport="websocket"``). Copy it into your
game. The game describes its agents, then hands the client an object with two methods and lets it serve:

    import agentkit_bridge as bridge

    class MyGame:
        def reset(self, seed, params):            # -> bridge.Reset
            ...
            return bridge.Reset(obs=[obs_of_agent_0, ...], alive=[True, ...], mask=[...])
        def step(self, actions):                  # actions: one per agent, in declaration order
            ...
            return bridge.Step(obs=[...], reward=[...], terminated=[...], truncated=[...], alive=[...],
                               info={"win": [1.0, 0.0]})

    agents = [bridge.agent("hero", obs_shape=[9], action=bridge.discrete(6), mask=True)]
    bridge.serve(MyGame(), name="my-game", agents=agents, port=11008)

An observation is float32 values of any shape by default; ``dtype="uint8"`` (a camera image ``[H, W, 3]``) or
``"int32"`` sends it in that type, and ``bridge.dict_obs({"image": bridge.obs_box([64, 64, 3], "uint8"),
"speed": bridge.obs_box([1])})`` declares a Dict observation, whose value is then a dict of arrays. A game with
a ``render()`` method returning an ``[H, W, 3]`` uint8 picture sends it when the trainer asks (``eval --gif``).

``serve`` connects to the trainer (``agentkit train`` with ``env.plugin: remote``), says hello, answers
every reset and step, and returns when the trainer sends ``close`` (or raises ``BridgeError`` when the
trainer refuses the game or the connection breaks). ``parse_args()`` reads the usual command line
(``--port``, ``--host``, ``--instance``, ``--instances``, ``--seed``, ``--transport``, ``--token``) with the
``AGENTKIT_BRIDGE_*`` environment variables as defaults, as a launched game gets them. ``serve_many([game, ...],
...)`` serves several instances from one process on one connection: what ``env.instances_per_process`` launches.

An action reaches ``step`` as: discrete → ``int``; multi_discrete → int array ``[branches]``; box → float32
array of the declared shape; hybrid → ``(type_index, params float32 [P])`` (parameters the type does not
own are 0). Rows of agents that are not alive hold zeros.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

PROTOCOL_VERSION = 2
_U32 = struct.Struct("<I")
_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "uint8": np.dtype("u1")}


class BridgeError(Exception):
    """The trainer refused the game, sent something unexpected, or the connection broke."""


# -- declaring agents -------------------------------------------------------------------------------------


def discrete(n: int, start: int = 0) -> dict[str, Any]:
    return {"kind": "discrete", "n": int(n), "start": int(start)}


def multi_discrete(nvec: list[int]) -> dict[str, Any]:
    return {"kind": "multi_discrete", "nvec": [int(v) for v in nvec]}


def box(shape: list[int], low: float | list[float], high: float | list[float]) -> dict[str, Any]:
    return {"kind": "box", "shape": list(shape), "low": _json_numbers(low), "high": _json_numbers(high)}


def hybrid(types: dict[str, list[str]], params: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """``types``: type name → the parameters it owns; ``params``: parameter name → (low, high)."""
    return {
        "kind": "hybrid",
        "types": [{"name": t, "params": list(p)} for t, p in types.items()],
        "params": [{"name": p, "low": float(lo), "high": float(hi)} for p, (lo, hi) in params.items()],
    }


def obs_box(shape: list[int], dtype: str = "float32", low: float | list[float] | None = None,
            high: float | list[float] | None = None) -> dict[str, Any]:
    """An observation Box of any shape: ``dtype`` float32, uint8 (pixels) or int32; bounds optional."""
    if dtype not in _DTYPES:
        raise ValueError(f"observation dtype {dtype!r}: give one of {', '.join(_DTYPES)}")
    return {"shape": [int(d) for d in shape], "dtype": dtype, "low": _json_numbers(low), "high": _json_numbers(high)}


def dict_obs(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A Dict observation of named Boxes (``obs_box``), sent in this order; its value is a dict of arrays."""
    return {"kind": "dict", "entries": [{"name": k, **v} for k, v in entries.items()]}


def agent(name: str, obs_shape: list[int] | dict[str, Any], action: dict[str, Any], mask: bool = False,
          low: float | list[float] | None = None, high: float | list[float] | None = None,
          dtype: str = "float32") -> dict[str, Any]:
    """One agent's declaration for ``hello``: the observation as a shape (a Box of ``dtype``, bounds optional)
    or as what ``obs_box``/``dict_obs`` return."""
    obs = dict(obs_shape) if isinstance(obs_shape, dict) else obs_box(obs_shape, dtype, low, high)
    return {"name": name, "observation": obs, "action": action, "mask": bool(mask)}


def _json_numbers(v: Any) -> Any:
    if v is None:
        return None
    arr = np.asarray(v, dtype=np.float64)
    if arr.size and (arr == arr.flat[0]).all():  # one number for every element (an image's 0..255)
        arr = arr.reshape(-1)[0]
    if arr.ndim == 0:
        return float(arr) if math.isfinite(float(arr)) else None
    return [float(x) if math.isfinite(x) else None for x in arr.reshape(-1)]


@dataclass
class Reset:
    obs: Any  # one observation per agent (a list of arrays), or one array [A, ...] when all have one shape
    alive: Any = None  # bool per agent; default: all alive
    mask: Any = None  # per masked agent its mask (1 = allowed), in agent order; None: no agent has a mask
    state: Any = None  # float32 [state_dim] when the game declared state_dim


@dataclass
class Step:
    obs: Any
    reward: Any
    terminated: Any
    truncated: Any
    alive: Any = None  # default: the agents that are neither terminated nor truncated
    mask: Any = None
    state: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # key -> one number per agent (NaN: none)


# -- frames -----------------------------------------------------------------------------------------------


def encode(header: dict[str, Any], blobs: dict[str, tuple[str, Any]] | None = None) -> bytes:
    """One payload from a header and blobs ``{name: (dtype, values)}`` (dtype: float32, int32 or uint8)."""
    listed, parts = [], []
    for name, (dtype, array) in (blobs or {}).items():
        data = np.ascontiguousarray(array, dtype=_DTYPES[dtype]).reshape(-1)
        listed.append({"name": name, "dtype": dtype, "count": int(data.size)})
        parts.append(data.tobytes())
    body = json.dumps({**header, "blobs": listed}, separators=(",", ":")).encode()
    return b"".join([_U32.pack(len(body)), body, *parts])


class Frame:
    """An outgoing message whose header and blob sizes are fixed (a game's ``step_result``), built once: one
    buffer holds the TCP length prefix, the payload's header and the blobs, and ``views[name]`` is a numpy array
    over each blob's bytes. A step writes its values into the views and sends the buffer as it is."""

    def __init__(self, header: dict[str, Any], blobs: list[tuple[str, str, int]]):
        self.header = header
        self.dtypes = {name: dtype for name, dtype, _ in blobs}
        text = json.dumps({**header, "blobs": [{"name": n, "dtype": d, "count": c} for n, d, c in blobs]},
                          separators=(",", ":")).encode()
        size = 4 + len(text) + sum(c * _DTYPES[d].itemsize for _, d, c in blobs)
        self.buf = bytearray(4 + size)
        _U32.pack_into(self.buf, 0, size)
        _U32.pack_into(self.buf, 4, len(text))
        self.buf[8 : 8 + len(text)] = text
        offset = 8 + len(text)
        self.views: dict[str, np.ndarray] = {}
        self.offsets: dict[str, int] = {}  # each blob's first byte in ``buf``
        for name, dtype, count in blobs:
            self.views[name] = np.frombuffer(self.buf, _DTYPES[dtype], count, offset)
            self.offsets[name] = offset
            offset += count * _DTYPES[dtype].itemsize
        # the per-agent numbers that follow the observations (alive, and for a step reward, terminated,
        # truncated: adjacent blobs) and the info values, each written with one struct call (``_Layout.fill``)
        n = self.views["alive"].size if "alive" in self.views else 0
        self.flags = struct.Struct(f"<{n}?{n}f{n}?{n}?" if "reward" in self.views else f"<{n}?")
        self.info = struct.Struct(f"<{self.views['info'].size}f") if "info" in self.views else None

    @property
    def payload(self) -> memoryview:
        return memoryview(self.buf)[4:]


class _Parsed:
    """A header text from the trainer, parsed once (the trainer repeats its step header): the header, each
    blob's (name, dtype, count, offset in the body), the body's size, and, for the integers of a step's
    actions, one struct that reads them as Python ints."""

    def __init__(self, text: bytes):
        self.header = json.loads(text.decode())
        self.layout, offset = [], 0
        for entry in self.header.get("blobs", []):
            dtype = _DTYPES[entry["dtype"]]
            self.layout.append((entry["name"], dtype, entry["count"], offset))
            offset += entry["count"] * dtype.itemsize
        self.size = offset
        at = {name: (count, off) for name, _, count, off in self.layout}
        n_int, self.int_at = at.get("action_int", (0, 0))
        self.ints = struct.Struct(f"<{n_int}i")
        self.n_float, self.float_at = at.get("action_float", (0, 0))


def _parse(payload: bytes) -> tuple[_Parsed, int]:
    """The parsed header of one payload and where its body starts (the sizes checked)."""
    (hlen,) = _U32.unpack_from(payload, 0)
    text = bytes(payload[4 : 4 + hlen])
    parsed = _PARSED.get(text)
    if parsed is None:
        parsed = _Parsed(text)
        if len(_PARSED) < 256:
            _PARSED[text] = parsed
    if 4 + hlen + parsed.size != len(payload):
        raise BridgeError(f"bad_frame: the trainer's {parsed.header.get('type')!r} message has "
                          f"{len(payload) - 4 - hlen} bytes of blobs, its header lists {parsed.size}")
    return parsed, 4 + hlen


def decode(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and blobs (numpy arrays) of one payload from the trainer."""
    parsed, start = _parse(payload)
    blobs = {name: np.frombuffer(payload, dtype=dtype, count=count, offset=start + off)
             for name, dtype, count, off in parsed.layout}
    return parsed.header, blobs


_PARSED: dict[bytes, _Parsed] = {}


_T = TypeVar("_T")


def _retry_refused(open_: Callable[[float], _T], where: str, timeout: float) -> _T:
    """``open_(seconds left)`` until it connects: a refused connection (nothing listens yet: a game started before
    `agentkit train` in listen mode) is tried again every 0.2 s until ``timeout`` seconds have passed, then one
    message naming the address and the fix, as the JavaScript, C# and GDScript clients give."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_(max(deadline - time.monotonic(), 0.001))
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise BridgeError(f"cannot connect to {where}: nothing listened there for {timeout:g} s (connection "
                                  "refused): start `agentkit train` with env.mode: listen first, or raise "
                                  "--connect-timeout") from None
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))


class _Tcp:
    """Length-prefixed frames. A message from the trainer usually arrives whole: one ``recv`` reads it (into a
    buffer that keeps whatever follows), and a ``Frame`` goes out in one ``send``. ``spin`` (seconds, the
    welcome's ``spin_us``): how long a read keeps retrying (yielding the CPU between tries) before it blocks,
    which spares the trainer's answer the wake-up of a halted CPU when each process has a core of its own."""

    def __init__(self, host: str, port: int, timeout: float):
        self.sock = _retry_refused(lambda left: socket.create_connection((host, port), timeout=left),
                                   f"{host}:{port}", timeout)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame_bytes = 1 << 30
        self.spin = 0.0
        self._buf = bytearray(1 << 16)
        self._start = self._end = 0

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self._write(_U32.pack(len(payload)) + payload)

    def send_frame(self, frame: Frame) -> None:
        self._write(frame.buf)

    def _fill(self, need: int) -> None:
        if self._start + need > len(self._buf):
            kept = self._buf[self._start : self._end]
            if need > len(self._buf):
                self._buf = bytearray(max(need, 2 * len(self._buf)))
            self._buf[: len(kept)] = kept
            self._start, self._end = 0, len(kept)
        view = memoryview(self._buf)
        spin_until = time.perf_counter() + self.spin
        while self._end - self._start < need:
            try:
                flags = socket.MSG_DONTWAIT if time.perf_counter() < spin_until else 0
                k = self.sock.recv_into(view[self._end :], 0, flags)
            except BlockingIOError:
                os.sched_yield()
                continue
            if k == 0:
                raise BridgeError("the trainer closed the connection")
            self._end += k

    def recv(self) -> bytes:
        self._fill(4)
        (size,) = _U32.unpack_from(self._buf, self._start)
        if size > self.max_frame_bytes:
            raise BridgeError(f"frame_too_large: the trainer sent {size} bytes")
        self._fill(4 + size)
        payload = bytes(self._buf[self._start + 4 : self._start + 4 + size])
        self._start += 4 + size
        if self._start == self._end:
            self._start = self._end = 0
        return payload

    def close(self) -> None:
        self.sock.close()


class _WebSocket:
    def __init__(self, host: str, port: int, timeout: float):
        from websockets.sync.client import connect

        self.ws = _retry_refused(lambda left: connect(f"ws://{host}:{port}/", open_timeout=left, max_size=None,
                                                      compression=None, ping_interval=None),
                                 f"{host}:{port}", timeout)

    def send(self, payload: bytes) -> None:
        self.ws.send(payload)

    def send_frame(self, frame: Frame) -> None:
        self.ws.send(bytes(frame.payload))

    def recv(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            data = self.ws.recv()
        except ConnectionClosed as exc:
            raise BridgeError(f"the trainer closed the connection ({exc})") from exc
        if isinstance(data, str):
            raise BridgeError("bad_frame: the trainer sent a text message")
        return data

    def close(self) -> None:
        self.ws.close()


# -- the client -------------------------------------------------------------------------------------------


class _Layout:
    """Each agent's slice of the flat arrays, from its declaration, and the frames of its answers."""

    def __init__(self, agents: list[dict[str, Any]], state_dim: int):
        self.agents = agents
        self.n = len(agents)
        self.state_dim = state_dim
        self.kinds = [a["action"]["kind"] for a in agents]
        self.n_int, self.n_float, self.mask_dim = [], [], []
        for a in agents:
            act = a["action"]
            kind = act["kind"]
            self.n_int.append({"discrete": 1, "multi_discrete": len(act.get("nvec", [])), "box": 0, "hybrid": 1}[kind])
            self.n_float.append(math.prod(act["shape"]) if kind == "box" else len(act["params"]) if kind == "hybrid" else 0)
            width = act.get("n", 0) if kind == "discrete" else sum(act.get("nvec", [])) if kind == "multi_discrete" \
                else len(act.get("types", []))
            self.mask_dim.append(width if a.get("mask") else 0)
        self.masked = any(self.mask_dim)
        self.all_discrete = all(k == "discrete" for k in self.kinds)
        # every observation Box: (agent, Dict key or None, wire dtype, start, stop) in wire order
        self.obs_counts = dict.fromkeys(_DTYPES, 0)
        self.entries: list[tuple[int, str | None, str, int, int]] = []
        self.simple = True  # one float32 Box per agent
        for i, a in enumerate(agents):
            obs = a["observation"]
            boxes = [(e["name"], e) for e in obs["entries"]] if obs.get("kind") == "dict" else [(None, obs)]
            self.simple &= len(boxes) == 1 and boxes[0][0] is None and boxes[0][1].get("dtype", "float32") == "float32"
            for key, box in boxes:
                dtype, size = box.get("dtype", "float32"), math.prod(box["shape"])
                start = self.obs_counts[dtype]
                self.entries.append((i, key, dtype, start, start + size))
                self.obs_counts[dtype] += size
        self.protocol = PROTOCOL_VERSION
        self._frames: dict[tuple, Frame] = {}

    def frame(self, kind: str, info_keys: tuple[str, ...] = (), image: tuple[int, ...] | None = None) -> Frame:
        """The answer of ``kind`` with these info keys (and a rendered ``image`` of this shape)."""
        key = (kind, info_keys, image)
        frame = self._frames.get(key)
        if frame is None:
            n = self.n
            blobs = [(_OBS_BLOB[d], d, c) for d, c in self.obs_counts.items() if c]
            blobs.append(("alive", "uint8", n))
            if kind == "step_result":
                blobs += [("reward", "float32", n), ("terminated", "uint8", n), ("truncated", "uint8", n)]
            if self.masked:
                blobs.append(("mask", "uint8", sum(self.mask_dim)))
            if self.state_dim:
                blobs.append(("state", "float32", self.state_dim))
            header: dict[str, Any] = {"type": kind}
            if info_keys:
                header["info_keys"] = list(info_keys)
                blobs.append(("info", "float32", n * len(info_keys)))
            if image is not None:
                header["frame_shape"] = list(image)
                blobs.append(("frame", "uint8", math.prod(image)))
            frame = self._frames[key] = Frame(header, blobs)
        return frame

    def actions(self, ints: Any, floats: np.ndarray) -> list[Any]:
        """Each agent's action from the step's integers (a sequence of ints) and floats (float32)."""
        if self.all_discrete:
            return [int(v) for v in ints]
        out, i, f = [], 0, 0
        for a, kind in enumerate(self.kinds):
            ni, nf = self.n_int[a], self.n_float[a]
            if kind == "discrete":
                out.append(int(ints[i]))
            elif kind == "multi_discrete":
                out.append(np.array(ints[i : i + ni], np.int64))
            elif kind == "box":
                out.append(floats[f : f + nf].reshape(self.agents[a]["action"]["shape"]).copy())
            else:
                out.append((int(ints[i]), floats[f : f + nf].copy()))
            i, f = i + ni, f + nf
        return out

    def fill(self, frame: Frame, r: Reset | Step, image: np.ndarray | None) -> None:
        """Write a reset's or step's values into ``frame``. The per-agent flags, rewards and info numbers go in
        with one struct call each when they are plain sequences of one number per agent (what a game usually
        gives); anything else (a scalar for every agent, arrays of another shape) takes numpy's way, which
        broadcasts and says what does not fit."""
        v = frame.views
        self.write_obs(v, r.obs)
        step = isinstance(r, Step)
        try:
            alive = r.alive
            if step:
                if alive is None:  # the agents that neither terminated nor were truncated
                    alive = [not (t or u) for t, u in zip(r.terminated, r.truncated, strict=True)]
                frame.flags.pack_into(frame.buf, frame.offsets["alive"], *alive, *r.reward, *r.terminated,
                                      *r.truncated)
            elif alive is None:
                v["alive"][:] = 1
            else:
                frame.flags.pack_into(frame.buf, frame.offsets["alive"], *alive)
        except (struct.error, TypeError, ValueError, OverflowError):
            self._write_flags(v, r, step)
        if self.masked:
            self.write_mask(v["mask"], r.mask)
        if self.state_dim:
            v["state"][:] = r.state
        info = r.info if step else None
        if info:
            try:  # one number per key for every agent
                frame.info.pack_into(frame.buf, frame.offsets["info"], *(list(info.values()) * self.n))
            except (struct.error, TypeError, OverflowError):
                values = v["info"].reshape(self.n, len(info))
                for k, value in enumerate(info.values()):
                    values[:, k] = value  # one number per agent, or one for all
        if image is not None:
            v["frame"][:] = image.reshape(-1)

    @staticmethod
    def _write_flags(v: dict[str, np.ndarray], r: Reset | Step, step: bool) -> None:
        if step:
            v["reward"][:] = r.reward
            v["terminated"][:] = r.terminated
            v["truncated"][:] = r.truncated
        if r.alive is not None:
            v["alive"][:] = np.asarray(r.alive, bool)
        elif step:
            np.logical_not(np.logical_or(v["terminated"], v["truncated"]), out=v["alive"], casting="unsafe")
        else:
            v["alive"][:] = 1

    def write_obs(self, views: dict[str, np.ndarray], obs: Any) -> None:
        """Write every agent's observation (a list, one per agent, or one array ``[A, ...]``; a Dict agent's is a
        dict of arrays) into the frame's observation blobs."""
        if isinstance(obs, list | tuple) and len(obs) == self.n:
            pass
        elif isinstance(obs, np.ndarray) and obs.ndim > 0 and obs.shape[0] == self.n and (
                self.n > 1 or obs.size == self.entries[0][4] - self.entries[0][3]):
            pass
        elif self.n == 1:  # a single agent's observation, given on its own
            obs = [obs]
        else:
            raise BridgeError(f"the game gave {type(obs).__name__} observations; give one per agent ({self.n})")
        if self.simple:  # one float32 Box per agent, given as flat arrays of its size: no reshaping
            view = views["obs"]
            try:
                for (_, _, _, start, stop), value in zip(self.entries, obs, strict=True):
                    view[start:stop] = value
                return
            except ValueError:
                pass
        for agent, key, dtype, start, stop in self.entries:
            value = obs[agent] if key is None else obs[agent][key]
            try:
                views[_OBS_BLOB[dtype]][start:stop] = np.asarray(value).reshape(-1)
            except ValueError as exc:
                name = self.agents[agent]["name"] + ("" if key is None else f"[{key!r}]")
                raise BridgeError(f"the observation of agent {name} has {np.size(value)} values; it declared "
                                  f"{stop - start}") from exc

    def write_mask(self, view: np.ndarray, mask: Any) -> None:
        """Write the masks (one per masked agent, in agent order, or one array) as 0/1 into the frame's blob."""
        if mask is None:
            view[:] = 1
        elif isinstance(mask, np.ndarray) and mask.dtype != object:
            np.not_equal(mask.reshape(-1), 0, out=view, casting="unsafe")
        elif len(mask) == 1 and isinstance(mask[0], np.ndarray) and mask[0].shape == view.shape:
            np.not_equal(mask[0], 0, out=view, casting="unsafe")
        else:
            start = 0
            for m in mask:
                m = np.asarray(m).reshape(-1)
                np.not_equal(m, 0, out=view[start : start + m.size], casting="unsafe")
                start += m.size
            if start != view.size:
                raise BridgeError(f"the game's masks have {start} values; the masked agents need {view.size}")


def _render(game: Any) -> np.ndarray | None:
    """The game's picture after a reset or step, when the trainer asks (``agentkit eval --gif``) and the game has
    ``render()`` returning ``[H, W, 3]`` (or 4) uint8; else None (the trainer then has no frame)."""
    render = getattr(game, "render", None)
    image = render() if render is not None else None
    if image is None:
        return None
    image = np.asarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BridgeError(f"render() gave an image of shape {image.shape}; give [H, W, 3] uint8")
    return image


_OBS_BLOB = {"float32": "obs", "uint8": "obs_uint8", "int32": "obs_int32"}


class _Session:
    """One instance's connection: its hello and welcome, then one answer to each request from the trainer."""

    def __init__(self, game: Any, layout: _Layout, conn: _Tcp | _WebSocket):
        self.game, self.layout, self.conn = game, layout, conn
        self._no_floats = np.zeros(0, np.float32)
        self._answer: Frame | None = None

    def handshake(self, name: str, instance: int | None, token: str | None, agents: list[dict[str, Any]],
                  state_dim: int, instances: int = 1) -> dict[str, Any]:
        """Say hello (for ``instances`` instances on this connection); returns the trainer's ``welcome`` header
        (raises ``BridgeError`` if it refuses)."""
        conn = self.conn
        hello = {"type": "hello", "protocol": self.layout.protocol, "game": name, "instance": instance,
                 "token": token, "agents": agents, "state_dim": state_dim}
        if instances > 1:
            hello["instances"] = instances
        conn.send(encode(hello))
        welcome, _ = decode(conn.recv())
        if welcome["type"] == "error":
            raise BridgeError(f"the trainer refused the game: {welcome.get('message')}")
        if welcome["type"] != "welcome":
            raise BridgeError(f"expected welcome, got {welcome['type']!r}")
        if isinstance(conn, _Tcp):
            conn.max_frame_bytes = max(int(welcome.get("max_frame_bytes", conn.max_frame_bytes)), 1 << 20)
            conn.spin = int(welcome.get("spin_us", 0)) * 1e-6
        return welcome

    def answer(self) -> Frame:
        """The answer ``handle`` made to the last reset or step (sent by the caller: alone, or in a batch)."""
        return self._answer

    def handle(self, payload: bytes) -> bool:
        """Make the answer to one request (``answer()``); False once the trainer has sent ``close``."""
        game, layout, conn = self.game, self.layout, self.conn
        parsed, start = _parse(payload)
        header = parsed.header
        kind = header["type"]
        if kind == "step":
            ints = parsed.ints.unpack_from(payload, start + parsed.int_at)
            floats = (np.frombuffer(payload, np.float32, parsed.n_float, start + parsed.float_at)
                      if parsed.n_float else self._no_floats)
            s = game.step(layout.actions(ints, floats))
            image = _render(game) if header.get("render") else None
            frame = layout.frame("step_result", tuple(s.info) if s.info else (), None if image is None else image.shape)
            layout.fill(frame, s, image)
            self._answer = frame
        elif kind == "reset":
            r = game.reset(header.get("seed"), header.get("params") or {})
            image = _render(game) if header.get("render") else None
            frame = layout.frame("reset_result", (), None if image is None else image.shape)
            layout.fill(frame, r, image)
            self._answer = frame
        elif kind == "close":
            return False
        elif kind == "error":
            raise BridgeError(f"the trainer stopped: {header.get('message')}")
        else:
            conn.send(encode({"type": "error", "code": "unexpected_message",
                              "message": f"the game does not know the message {kind!r}"}))
            raise BridgeError(f"unexpected message {kind!r}")
        return True


def serve(game: Any, *, name: str, agents: list[dict[str, Any]], host: str = "127.0.0.1",
          port: int = 11008, transport: str = "tcp", instance: int | None = None, token: str | None = None,
          state_dim: int = 0, connect_timeout: float = 30.0) -> dict[str, Any]:
    """Connect, say hello as ``name`` with ``agents``, and serve ``game``'s ``reset``/``step`` until the trainer
    sends ``close``. Returns the ``welcome`` header."""
    conn = (_Tcp if transport == "tcp" else _WebSocket)(host, port, connect_timeout)
    try:
        session = _Session(game, _Layout(agents, state_dim), conn)
        welcome = session.handshake(name, instance, token, agents, state_dim)
        while session.handle(conn.recv()):
            conn.send_frame(session.answer())
        return welcome
    finally:
        conn.close()


def serve_many(games: list[Any], *, name: str, agents: list[dict[str, Any]], host: str = "127.0.0.1",
               port: int = 11008, transport: str = "tcp", instance: int | None = None, token: str | None = None,
               state_dim: int = 0, connect_timeout: float = 30.0) -> dict[str, Any]:
    """Serve several instances of a game from one process on one connection: ``games[k]`` is instance
    ``instance + k`` (launched with ``env.instances_per_process``, the process gets the first one's ``{instance}``
    and ``{instances}`` = ``len(games)``). The hello says ``"instances": len(games)``; then the trainer sends each
    vector step's requests in one ``batch`` frame and this answers them in one (docs/bridge.md, "Several instances
    on one connection"): two frames per step instead of two per instance. Returns the ``welcome`` header once the
    trainer has closed every instance. One game: ``serve`` (what ``parse_args().instances`` is by default)."""
    if len(games) == 1:  # a hello without "instances": the trainer then sends plain messages, not batches
        return serve(games[0], name=name, agents=agents, host=host, port=port, transport=transport, instance=instance,
                     token=token, state_dim=state_dim, connect_timeout=connect_timeout)
    conn = (_Tcp if transport == "tcp" else _WebSocket)(host, port, connect_timeout)
    try:  # a layout each: its answer frames are reused buffers, and a batch holds every instance's at once
        sessions = [_Session(game, _Layout(agents, state_dim), conn) for game in games]
        welcome = sessions[0].handshake(name, instance, token, agents, state_dim, instances=len(games))
        live = set(range(len(games)))
        while live:
            payload = conn.recv()
            parsed, start = _parse(payload)
            if parsed.header["type"] != "batch":  # the trainer's error, or a message this client does not know
                sessions[0].handle(payload)
                raise BridgeError(f"expected a batch, got {parsed.header['type']!r}")
            slots, sizes = parsed.header["slots"], parsed.header["sizes"]
            answered, parts, at = [], [], start
            for slot, size in zip(slots, sizes, strict=True):
                session = sessions[slot]
                if session.handle(payload[at:at + size]):
                    answered.append(slot)
                    parts.append(session.answer().payload)
                else:
                    live.discard(slot)
                at += size
            if answered:
                conn.send(_batch(answered, parts))
        return welcome
    finally:
        conn.close()


def _batch(slots: list[int], payloads: list[memoryview]) -> bytes:
    """One ``batch`` payload: ``payloads[i]`` (whole payloads) for slot ``slots[i]``, one after the other."""
    sizes = tuple(len(p) for p in payloads)
    key = (tuple(slots), sizes)
    head = _BATCH_HEADERS.get(key)
    if head is None:  # most steps' batches have the slots and sizes of the one before
        text = json.dumps({"type": "batch", "slots": slots, "sizes": sizes,
                           "blobs": [{"name": "parts", "dtype": "uint8", "count": sum(sizes)}]},
                          separators=(",", ":")).encode()
        head = _U32.pack(len(text)) + text
        if len(_BATCH_HEADERS) < 256:
            _BATCH_HEADERS[key] = head
    return b"".join([head, *payloads])


_BATCH_HEADERS: dict[tuple, bytes] = {}


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``--host --port --transport --instance --instances --seed --token --connect-timeout``, defaulting to the ``AGENTKIT_BRIDGE_*``
    environment variables a launched game finds (and to 127.0.0.1:11008 over TCP)."""
    env = os.environ.get
    p = parser or argparse.ArgumentParser(description="an agentkit bridge game")
    p.add_argument("--host", default=env("AGENTKIT_BRIDGE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("AGENTKIT_BRIDGE_PORT", "11008")))
    p.add_argument("--transport", choices=["tcp", "websocket"], default=env("AGENTKIT_BRIDGE_TRANSPORT", "tcp"))
    instance = env("AGENTKIT_BRIDGE_INSTANCE")
    p.add_argument("--instance", type=int, default=int(instance) if instance is not None else None)
    p.add_argument("--instances", type=int, default=int(env("AGENTKIT_BRIDGE_INSTANCES", "1")),
                   help="instances this process serves (serve_many), numbered from --instance")
    p.add_argument("--seed", type=int, default=int(env("AGENTKIT_BRIDGE_SEED", "0")))
    p.add_argument("--token", default=env("AGENTKIT_BRIDGE_TOKEN"))
    p.add_argument("--connect-timeout", type=float, default=float(env("AGENTKIT_BRIDGE_CONNECT_TIMEOUT", "30")),
                   help="seconds to keep trying while nothing listens (a game started before the trainer)")
    return p.parse_args(argv)
