"""agentkit bridge client for games written in Python (protocol version 1, docs/bridge.md).

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

``serve`` connects to the trainer (``agentkit train`` with ``env.plugin: remote``), says hello, answers
every reset and step, and returns when the trainer sends ``close`` (or raises ``BridgeError`` when the
trainer refuses the game or the connection breaks). ``parse_args()`` reads the usual command line
(``--port``, ``--host``, ``--instance``, ``--seed``, ``--transport``, ``--token``) with the
``AGENTKIT_BRIDGE_*`` environment variables as defaults, as a launched game gets them.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
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


def agent(name: str, obs_shape: list[int], action: dict[str, Any], mask: bool = False,
          low: float | list[float] | None = None, high: float | list[float] | None = None) -> dict[str, Any]:
    """One agent's declaration for ``hello`` (observation bounds optional)."""
    obs = {"shape": list(obs_shape), "low": _json_numbers(low), "high": _json_numbers(high)}
    return {"name": name, "observation": obs, "action": action, "mask": bool(mask)}


def _json_numbers(v: Any) -> Any:
    if v is None:
        return None
    arr = np.asarray(v, dtype=np.float64)
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


def encode(header: dict[str, Any], blobs: dict[str, np.ndarray] | None = None) -> bytes:
    """One payload from a header and blobs ``{name: (dtype, values)}`` (dtype: float32, int32 or uint8)."""
    listed, parts = [], []
    for name, (dtype, array) in (blobs or {}).items():
        data = np.ascontiguousarray(array, dtype=_DTYPES[dtype]).reshape(-1)
        listed.append((name, dtype, int(data.size)))
        parts.append(data.tobytes())
    key = (json.dumps(header, sort_keys=True), tuple(listed))
    text = _HEADERS.get(key)
    if text is None:  # the same header comes back at every step: build its bytes once
        body = json.dumps({**header, "blobs": [{"name": n, "dtype": d, "count": c} for n, d, c in listed]},
                          separators=(",", ":")).encode()
        text = _U32.pack(len(body)) + body
        if len(_HEADERS) < 256:
            _HEADERS[key] = text
    return b"".join([text, *parts])


_HEADERS: dict[tuple, bytes] = {}


def decode(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and blobs (numpy arrays) of one payload from the trainer."""
    (hlen,) = _U32.unpack_from(payload, 0)
    text = payload[4 : 4 + hlen]
    parsed = _PARSED.get(text)
    if parsed is None:  # the trainer repeats its step header: parse it once
        header = json.loads(text.decode())
        layout, offset = [], 0
        for entry in header.get("blobs", []):
            dtype = _DTYPES[entry["dtype"]]
            layout.append((entry["name"], dtype, entry["count"], offset))
            offset += entry["count"] * dtype.itemsize
        parsed = (header, layout, offset)
        if len(_PARSED) < 256:
            _PARSED[text] = parsed
    header, layout, size = parsed
    if 4 + hlen + size != len(payload):
        raise BridgeError(f"bad_frame: the trainer's {header.get('type')!r} message has {len(payload) - 4 - hlen} "
                          f"bytes of blobs, its header lists {size}")
    start = 4 + hlen
    blobs = {name: np.frombuffer(payload, dtype=dtype, count=count, offset=start + off)
             for name, dtype, count, off in layout}
    return header, blobs


_PARSED: dict[bytes, tuple] = {}


class _Tcp:
    def __init__(self, host: str, port: int, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame_bytes = 1 << 30

    def send(self, payload: bytes) -> None:
        self.sock.sendall(_U32.pack(len(payload)) + payload)

    def _read(self, n: int) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise BridgeError("the trainer closed the connection")
            got += k
        return bytes(buf)

    def recv(self) -> bytes:
        (size,) = _U32.unpack(self._read(4))
        if size > self.max_frame_bytes:
            raise BridgeError(f"frame_too_large: the trainer sent {size} bytes")
        return self._read(size)

    def close(self) -> None:
        self.sock.close()


class _WebSocket:
    def __init__(self, host: str, port: int, timeout: float):
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{host}:{port}/", open_timeout=timeout, max_size=None, compression=None,
                          ping_interval=None)

    def send(self, payload: bytes) -> None:
        self.ws.send(payload)

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
    """Each agent's slice of the flat arrays, from its declaration."""

    def __init__(self, agents: list[dict[str, Any]]):
        self.agents = agents
        self.obs_shape = [tuple(a["observation"]["shape"]) for a in agents]
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

    def actions(self, ints: np.ndarray, floats: np.ndarray) -> list[Any]:
        out, i, f = [], 0, 0
        for a, kind in enumerate(self.kinds):
            ni, nf = self.n_int[a], self.n_float[a]
            if kind == "discrete":
                out.append(int(ints[i]))
            elif kind == "multi_discrete":
                out.append(ints[i : i + ni].astype(np.int64))
            elif kind == "box":
                out.append(floats[f : f + nf].reshape(self.agents[a]["action"]["shape"]).copy())
            else:
                out.append((int(ints[i]), floats[f : f + nf].copy()))
            i, f = i + ni, f + nf
        return out

    def obs(self, obs: Any) -> np.ndarray:
        if isinstance(obs, np.ndarray) and obs.dtype != object:
            flat = obs.astype(np.float32, copy=False).reshape(-1)
        else:
            flat = np.concatenate([np.asarray(o, np.float32).reshape(-1) for o in obs])
        want = sum(math.prod(s) for s in self.obs_shape)
        if flat.size != want:
            raise BridgeError(f"the game's observations have {flat.size} numbers; the declared agents need {want}")
        return flat

    def mask(self, mask: Any) -> np.ndarray:
        if not self.masked:
            return np.zeros(0, np.uint8)
        if mask is None:
            return np.ones(sum(self.mask_dim), np.uint8)
        if isinstance(mask, np.ndarray) and mask.dtype != object:
            flat = mask.reshape(-1)
        else:
            flat = np.concatenate([np.asarray(m).reshape(-1) for m in mask])
        return (flat != 0).astype(np.uint8)


def serve(game: Any, *, name: str, agents: list[dict[str, Any]], host: str = "127.0.0.1",
          port: int = 11008, transport: str = "tcp", instance: int | None = None, token: str | None = None,
          state_dim: int = 0, connect_timeout: float = 30.0) -> dict[str, Any]:
    """Connect, say hello as ``name`` with ``agents``, and serve ``game``'s ``reset``/``step`` until the trainer
    sends ``close``. Returns the ``welcome`` header."""
    conn = (_Tcp if transport == "tcp" else _WebSocket)(host, port, connect_timeout)
    layout = _Layout(agents)
    n = len(agents)
    try:
        conn.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION, "game": name, "instance": instance,
                          "token": token, "agents": agents, "state_dim": state_dim}))
        welcome, _ = decode(conn.recv())
        if welcome["type"] == "error":
            raise BridgeError(f"the trainer refused the game: {welcome.get('message')}")
        if welcome["type"] != "welcome":
            raise BridgeError(f"expected welcome, got {welcome['type']!r}")
        if isinstance(conn, _Tcp):
            conn.max_frame_bytes = max(int(welcome.get("max_frame_bytes", conn.max_frame_bytes)), 1 << 20)
        while True:
            header, blobs = decode(conn.recv())
            kind = header["type"]
            if kind == "reset":
                r = game.reset(header.get("seed"), header.get("params") or {})
                alive = np.ones(n, bool) if r.alive is None else np.asarray(r.alive, bool)
                out = {"obs": ("float32", layout.obs(r.obs)), "alive": ("uint8", alive)}
                if layout.masked:
                    out["mask"] = ("uint8", layout.mask(r.mask))
                if state_dim:
                    out["state"] = ("float32", r.state)
                conn.send(encode({"type": "reset_result"}, out))
            elif kind == "step":
                s = game.step(layout.actions(blobs["action_int"], blobs["action_float"]))
                term = np.asarray(s.terminated, bool).reshape(n)
                trunc = np.asarray(s.truncated, bool).reshape(n)
                alive = ~(term | trunc) if s.alive is None else np.asarray(s.alive, bool)
                out = {
                    "obs": ("float32", layout.obs(s.obs)), "reward": ("float32", np.asarray(s.reward, np.float32)),
                    "terminated": ("uint8", term), "truncated": ("uint8", trunc), "alive": ("uint8", alive),
                }
                if layout.masked:
                    out["mask"] = ("uint8", layout.mask(s.mask))
                if state_dim:
                    out["state"] = ("float32", s.state)
                head: dict[str, Any] = {"type": "step_result"}
                if s.info:
                    head["info_keys"] = list(s.info)
                    values = np.empty((n, len(s.info)), np.float32)
                    for k, v in enumerate(s.info.values()):
                        values[:, k] = v  # one number per agent, or one for all
                    out["info"] = ("float32", values)
                conn.send(encode(head, out))
            elif kind == "close":
                return welcome
            elif kind == "error":
                raise BridgeError(f"the trainer stopped: {header.get('message')}")
            else:
                conn.send(encode({"type": "error", "code": "unexpected_message",
                                  "message": f"the game does not know the message {kind!r}"}))
                raise BridgeError(f"unexpected message {kind!r}")
    finally:
        conn.close()


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``--host --port --transport --instance --seed --token``, defaulting to the ``AGENTKIT_BRIDGE_*``
    environment variables a launched game finds (and to 127.0.0.1:11008 over TCP)."""
    env = os.environ.get
    p = parser or argparse.ArgumentParser(description="an agentkit bridge game")
    p.add_argument("--host", default=env("AGENTKIT_BRIDGE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("AGENTKIT_BRIDGE_PORT", "11008")))
    p.add_argument("--transport", choices=["tcp", "websocket"], default=env("AGENTKIT_BRIDGE_TRANSPORT", "tcp"))
    instance = env("AGENTKIT_BRIDGE_INSTANCE")
    p.add_argument("--instance", type=int, default=int(instance) if instance is not None else None)
    p.add_argument("--seed", type=int, default=int(env("AGENTKIT_BRIDGE_SEED", "0")))
    p.add_argument("--token", default=env("AGENTKIT_BRIDGE_TOKEN"))
    return p.parse_args(argv)
