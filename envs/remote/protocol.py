"""The bridge protocol, version 2 (docs/bridge.md; version 1 games are still accepted): payload encoding, the
``hello`` a game declares itself with, and the per-agent wire layout of observations, masks and actions.

A payload is ``u32 LE header length | JSON header | blobs``; ``header["blobs"]`` lists each blob's ``name``,
``dtype`` (float32, int32, uint8) and ``count`` (elements), in the order they follow, without padding. TCP
prefixes every payload with its own u32 LE length; WebSocket sends it as one binary message
(``transport``). This module never touches a socket.

Every failure to follow the protocol raises ``BridgeError`` (an ``InvalidInputError``: exit code 2) with
``code`` (the error code of docs/bridge.md) and, where one applies, ``field``.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from agentkit.errors import InvalidInputError
from agentkit.spaces import HybridSpace

PROTOCOL_VERSION = 2
#: the versions a game may speak: 1 (float32 observations only) and 2 (per-entry dtype, Box of any rank, Dict)
SUPPORTED_VERSIONS = (1, 2)
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_INSTANCES = 1024  # instances on one connection
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "uint8": np.dtype("u1")}
_WIRE = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32", np.dtype(np.uint8): "uint8",
         np.dtype(np.bool_): "uint8"}
_U32 = struct.Struct("<I")
#: the blob that carries the observation values of each wire dtype (agents in order, entries in declared order)
OBS_BLOBS = {"float32": "obs", "uint8": "obs_uint8", "int32": "obs_int32"}
_OBS_DTYPES = {"float32": np.float32, "uint8": np.uint8, "int32": np.int32}


class BridgeError(InvalidInputError):
    """A protocol violation or a failed game instance. ``code`` is the docs/bridge.md error code;
    ``details`` extra fields for the ``error`` message sent to the game (``field``, ``trainer``, ``game``)."""

    def __init__(self, message: str, code: str = "bad_frame", **details: Any):
        super().__init__(message)
        self.code = code
        self.details = details


class BridgeDisconnected(BridgeError):
    """The connection closed (the game exited, crashed or dropped it)."""

    def __init__(self, message: str):
        super().__init__(message, code="disconnected")


class BridgeTimeout(BridgeError):
    """The game did not answer in time."""

    def __init__(self, message: str):
        super().__init__(message, code="timeout")


# -- payloads ---------------------------------------------------------------------------------------------


def encode(header: dict[str, Any], blobs: dict[str, np.ndarray] | None = None) -> bytes:
    """One payload: ``header`` (a JSON object; its ``blobs`` list is written here) and the arrays of
    ``blobs`` in insertion order, each sent flat in its own dtype (float32, int32 or uint8)."""
    parts: list[bytes] = []
    listed = []
    for name, array in (blobs or {}).items():
        array = np.asarray(array)
        wire = _WIRE.get(array.dtype)
        if wire is None:
            raise TypeError(f"blob {name!r}: dtype {array.dtype} cannot travel; use float32, int32 or uint8")
        listed.append((name, wire, int(array.size)))
        parts.append(np.ascontiguousarray(array, dtype=DTYPES[wire]).tobytes())
    if header.keys() == {"type"}:  # a step: the same header every time
        text = _plain_header(header["type"], tuple(listed))
    else:
        text = header_text(header, listed)
    return b"".join([text, *parts])


def encode_rows(kind: str, blobs: dict[str, np.ndarray], render: bool = False) -> list[bytes]:
    """One payload per row of the ``[N, count]`` arrays of ``blobs`` (each already in its wire dtype), all with
    the header ``{"type": kind}`` (and ``"render": true`` with ``render``): the N ``step`` messages of a vector
    step, built in one go."""
    arrays = list(blobs.values())
    listed = tuple((name, _WIRE[a.dtype], int(a.shape[1])) for name, a in blobs.items())
    head = _plain_header(kind, listed, render)
    n = arrays[0].shape[0]
    widths = [a.shape[1] * a.itemsize for a in arrays]
    rows = np.empty((n, len(head) + sum(widths)), np.uint8)  # every payload side by side, written column-wise
    rows[:, : len(head)] = np.frombuffer(head, np.uint8)
    at = len(head)
    for a, width in zip(arrays, widths, strict=True):
        rows[:, at : at + width] = np.ascontiguousarray(a).view(np.uint8).reshape(n, width)
        at += width
    return [row.tobytes() for row in rows]


def header_text(header: dict[str, Any], listed: list[tuple[str, str, int]] | tuple) -> bytes:
    blobs = [{"name": n, "dtype": d, "count": c} for n, d, c in listed]
    text = json.dumps({**header, "blobs": blobs}, separators=(",", ":"), allow_nan=False).encode()
    return _U32.pack(len(text)) + text


@functools.lru_cache(maxsize=64)
def _plain_header(kind: str, listed: tuple[tuple[str, str, int], ...], render: bool = False) -> bytes:
    return header_text({"type": kind, "render": True} if render else {"type": kind}, listed)


Layout = tuple[tuple[str, np.dtype, int, int], ...]  # per blob: name, dtype, count, byte offset in the body


def decode(payload: bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header (shared between equal headers: read it, do not change it) and the blobs (flat numpy arrays,
    read-only views of ``payload``) of one payload."""
    header, layout, body = split(payload)
    return header, {name: np.frombuffer(body, dtype=dtype, count=count, offset=offset)
                    for name, dtype, count, offset in layout}


def split(payload: bytes | bytearray | memoryview) -> tuple[dict[str, Any], Layout, memoryview]:
    """A payload's header (shared between equal header texts: read it, do not change it), its blobs' layout
    (shared too) and the bytes of its blobs (the body), the sizes checked."""
    view = memoryview(payload)
    if len(view) < 4:
        raise BridgeError(f"bad_frame: a payload of {len(view)} bytes has no header length.", field="header")
    (hlen,) = _U32.unpack_from(view, 0)
    if 4 + hlen > len(view):
        raise BridgeError(
            f"bad_frame: the header length says {hlen} bytes but the payload has {len(view) - 4} after it.",
            field="header",
        )
    header, layout, body = _header(bytes(view[4 : 4 + hlen]))
    start = 4 + hlen
    if start + body == len(view):
        return header, layout, view[start:]
    for name, dtype, count, offset in layout:
        if start + offset + count * dtype.itemsize > len(view):
            raise BridgeError(
                f"bad_frame: blob {name!r} ({count} x {dtype.name} = {count * dtype.itemsize} bytes) runs past the "
                f"end of the payload ({len(view) - start - offset} bytes left).", field=name,
            )
    raise BridgeError(
        f"bad_frame: {len(view) - start - body} bytes follow the last blob; header.blobs must list every array.",
        field="header.blobs",
    )


@functools.lru_cache(maxsize=256)
def _header(text: bytes) -> tuple[dict[str, Any], tuple[tuple[str, np.dtype, int, int], ...], int]:
    """A header's JSON, checked, with its blobs' (name, dtype, count, offset after the header) and their total
    size. Cached: a game sends the same header bytes at every step."""
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BridgeError(f"bad_frame: the header is not UTF-8 JSON ({exc}).", field="header") from exc
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BridgeError("bad_frame: the header must be a JSON object with a string 'type'.", field="header.type")
    listed = header.get("blobs", [])
    if not isinstance(listed, list):
        raise BridgeError("bad_frame: header.blobs must be a list.", field="header.blobs")
    layout = []
    offset = 0
    for i, entry in enumerate(listed):
        where = f"header.blobs[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BridgeError(f"bad_frame: {where} must be {{name, dtype, count}}.", field=where)
        name = entry["name"]
        dtype = DTYPES.get(entry.get("dtype"))
        count = entry.get("count")
        if dtype is None:
            raise BridgeError(
                f"bad_frame: blob {name!r} has dtype {entry.get('dtype')!r}; the protocol knows "
                f"{', '.join(DTYPES)}.", field=name,
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BridgeError(f"bad_frame: blob {name!r} has count {count!r}; give a whole number >= 0.", field=name)
        if any(name == seen for seen, *_ in layout):
            raise BridgeError(f"bad_frame: blob {name!r} is listed twice.", field=name)
        layout.append((name, dtype, count, offset))
        offset += count * dtype.itemsize
    return header, tuple(layout), offset


# -- what the game declares -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObsEntry:
    """One Box of an agent's observation on the wire: ``key`` its Dict entry name (None: the observation is this
    Box), ``dtype`` its wire dtype, ``offset`` where its values start among the agent's values of that dtype."""

    key: str | None
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class AgentSpec:
    """One declared agent: its spaces (gymnasium's, as the trainer sees them) and its wire layout."""

    name: str
    observation: spaces.Box | spaces.Dict  # the declared Box (its dtype and shape), or a Dict of Boxes
    action: spaces.Space
    mask_dim: int  # 0: no mask
    n_int: int  # integers of one action on the wire
    n_float: int  # floats of one action on the wire
    declared: dict[str, Any] = field(repr=False, default_factory=dict)  # the agent's hello entry
    entries: tuple[ObsEntry, ...] = ()  # the observation's Boxes in declared (wire) order

    @property
    def obs_size(self) -> int:
        """All observation values of the agent, every dtype."""
        return sum(e.size for e in self.entries)

    def obs_count(self, dtype: str) -> int:
        """The agent's observation values of wire dtype ``dtype``."""
        return sum(e.size for e in self.entries if e.dtype == dtype)


@dataclass
class Hello:
    """A game's ``hello``, checked."""

    game: str
    instance: int | None
    token: str | None
    agents: list[AgentSpec]
    state_dim: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    protocol: int = PROTOCOL_VERSION
    instances: int = 1  # instances served on this one connection (``batch`` frames, mux.py), numbered from ``instance``

    def signature(self) -> dict[str, Any]:
        """What every instance of a run must declare alike (compared field by field)."""
        return {"game": self.game, "agents": [a.declared for a in self.agents], "state_dim": self.state_dim}


def _bad(field_: str, message: str) -> BridgeError:
    return BridgeError(f"bad_hello: {field_}: {message}", code="bad_hello", field=field_)


def _bounds(value: Any, size: int, where: str, default: float, dtype: Any = np.float32) -> np.ndarray:
    if value is None:
        return np.full(size, default, dtype)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return np.full(size, value, dtype)
    if isinstance(value, list) and len(value) == size and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value
    ):
        return np.array([default if v is None else v for v in value], np.float64).astype(dtype)
    raise _bad(where, f"give a number, a list of {size} numbers or null; got {value!r}.")


def _obs_box(spec: Any, where: str, version: int) -> tuple[spaces.Box, str, tuple[int, ...]]:
    """One observation Box ``{shape, dtype, low, high}``: its gymnasium space, wire dtype and shape."""
    if not isinstance(spec, dict):
        raise _bad(where, "give {shape, dtype, low, high}.")
    dtype = spec.get("dtype", "float32")
    if version < 2 and dtype != "float32":
        raise _bad(f"{where}.dtype", f"protocol 1 carries float32 observations; got {dtype!r}. Say protocol 2 in "
                   "the hello (docs/bridge.md) to send uint8 or int32 observations.")
    if dtype not in OBS_BLOBS:
        raise _bad(f"{where}.dtype", f"give one of {', '.join(OBS_BLOBS)}; got {dtype!r}.")
    shape = _shape(spec.get("shape"), f"{where}.shape")
    size = int(math.prod(shape))
    np_dtype = _OBS_DTYPES[dtype]
    if dtype == "float32":
        lo, hi = -np.inf, np.inf
    else:
        info = np.iinfo(np_dtype)
        lo, hi = int(info.min), int(info.max)
    low = _bounds(spec.get("low"), size, f"{where}.low", lo, np.float64)
    high = _bounds(spec.get("high"), size, f"{where}.high", hi, np.float64)
    if dtype != "float32" and not (np.all(low >= lo) and np.all(high <= hi)):
        raise _bad(where, f"{dtype} bounds must lie within [{lo}, {hi}].")
    box = spaces.Box(low.astype(np_dtype).reshape(shape), high.astype(np_dtype).reshape(shape), shape, np_dtype)
    return box, dtype, shape


def parse_observation(spec: Any, where: str, version: int) -> tuple[spaces.Box | spaces.Dict, tuple[ObsEntry, ...]]:
    """An agent's ``observation``: one Box, or (protocol 2) ``{"kind": "dict", "entries": [{name, ...Box}]}``;
    its gymnasium space and its Boxes in wire order."""
    if not isinstance(spec, dict):
        raise _bad(where, "give {shape, dtype, low, high}, or {kind: dict, entries: [...]}.")
    kind = spec.get("kind", "box")
    if kind == "box":
        box, dtype, shape = _obs_box(spec, where, version)
        return box, (ObsEntry(None, dtype, shape, 0),)
    if kind != "dict":
        raise _bad(f"{where}.kind", f"give box (the default) or dict; got {kind!r}.")
    if version < 2:
        raise _bad(f"{where}.kind", "protocol 1 carries one float32 Box per agent. Say protocol 2 in the hello "
                   "(docs/bridge.md) to send a Dict observation.")
    listed = spec.get("entries")
    if not isinstance(listed, list) or not listed:
        raise _bad(f"{where}.entries", "give a non-empty list of {name, shape, dtype, low, high}.")
    boxes: dict[str, spaces.Box] = {}
    entries: list[ObsEntry] = []
    offsets = dict.fromkeys(OBS_BLOBS, 0)
    for i, entry in enumerate(listed):
        at = f"{where}.entries[{i}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.name", f"give a non-empty string; got {name!r}.")
        if name in boxes:
            raise _bad(f"{at}.name", f"entry {name!r} is declared twice.")
        if name == "action_mask":
            raise _bad(f"{at}.name", "the mask is not an observation entry: declare mask: true on the agent.")
        box, dtype, shape = _obs_box(entry, at, version)
        boxes[name] = box
        entries.append(ObsEntry(name, dtype, shape, offsets[dtype]))
        offsets[dtype] += int(math.prod(shape))
    return spaces.Dict(boxes), tuple(entries)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                            for d in value):
        raise _bad(where, f"give a non-empty list of positive integers, e.g. [9]; got {value!r}.")
    return tuple(value)


def _int_list(value: Any, where: str, minimum: int) -> list[int]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise _bad(where, f"give a non-empty list of integers >= {minimum}; got {value!r}.")
    return value


def parse_action(spec: Any, where: str) -> tuple[spaces.Space, int, int, int]:
    """The gymnasium space of an action spec, its mask width, and its integer and float counts on the wire."""
    if not isinstance(spec, dict):
        raise _bad(where, f"an action is an object with a 'kind'; got {spec!r}.")
    kind = spec.get("kind")
    if kind == "discrete":
        n = spec.get("n")
        start = spec.get("start", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise _bad(f"{where}.n", f"give the number of actions (>= 1); got {n!r}.")
        if not isinstance(start, int) or isinstance(start, bool):
            raise _bad(f"{where}.start", f"give an integer; got {start!r}.")
        return spaces.Discrete(n, start=start), n, 1, 0
    if kind == "multi_discrete":
        nvec = _int_list(spec.get("nvec"), f"{where}.nvec", 1)
        start = spec.get("start", [0] * len(nvec))
        if not isinstance(start, list) or len(start) != len(nvec) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in start
        ):
            raise _bad(f"{where}.start", f"give {len(nvec)} integers, one per branch; got {start!r}.")
        space = spaces.MultiDiscrete(np.array(nvec, np.int64), start=np.array(start, np.int64))
        return space, int(sum(nvec)), len(nvec), 0
    if kind == "box":
        shape = _shape(spec.get("shape"), f"{where}.shape")
        size = int(math.prod(shape))
        low = _bounds(spec.get("low"), size, f"{where}.low", -np.inf)
        high = _bounds(spec.get("high"), size, f"{where}.high", np.inf)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise _bad(where, "a box action needs finite bounds with low < high in every dimension.")
        return spaces.Box(low.reshape(shape), high.reshape(shape), shape, np.float32), 0, 0, size
    if kind == "hybrid":
        types, params = spec.get("types"), spec.get("params")
        if not isinstance(types, list) or not types or not isinstance(params, list):
            raise _bad(where, "a hybrid action needs 'types' (a non-empty list) and 'params' (a list).")
        bounds: dict[str, tuple[float, float]] = {}
        for i, p in enumerate(params):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise _bad(f"{where}.params[{i}]", f"give {{name, low, high}}; got {p!r}.")
            low, high = p.get("low"), p.get("high")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
                raise _bad(f"{where}.params[{i}]", f"parameter {p['name']!r} needs numeric low and high.")
            bounds[p["name"]] = (float(low), float(high))
        owned: dict[str, list[str]] = {}
        for i, t in enumerate(types):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("params", []), list):
                raise _bad(f"{where}.types[{i}]", f"give {{name, params: [...]}}; got {t!r}.")
            owned[t["name"]] = list(t.get("params", []))
        try:
            space = HybridSpace(types=owned, params=bounds)
        except ValueError as exc:
            raise _bad(where, str(exc)) from exc
        return space, space.num_types, 1, space.num_params
    raise _bad(f"{where}.kind", f"{kind!r} is not an action kind; give discrete, multi_discrete, box or hybrid.")


def parse_hello(header: dict[str, Any]) -> Hello:
    """Check a ``hello`` header (the protocol version first) and build the agents' specs."""
    if header.get("type") != "hello":
        raise BridgeError(
            f"unexpected_message: the first message must be 'hello', got {header.get('type')!r}.",
            code="unexpected_message",
        )
    version = header.get("protocol")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise BridgeError(
            f"protocol_mismatch: the game speaks bridge protocol {version!r}, this trainer speaks "
            f"{' and '.join(map(str, SUPPORTED_VERSIONS))}; update the game's client (docs/bridge.md) or agentkit.",
            code="protocol_mismatch", trainer=list(SUPPORTED_VERSIONS), game=version,
        )
    game = header.get("game")
    if not isinstance(game, str) or not game:
        raise _bad("game", f"give the game's name (a non-empty string); got {game!r}.")
    instance = header.get("instance")
    if instance is not None and (not isinstance(instance, int) or isinstance(instance, bool) or instance < 0):
        raise _bad("instance", f"give the {{instance}} number the game was started with, or null; got {instance!r}.")
    token = header.get("token")
    if token is not None and not isinstance(token, str):
        raise _bad("token", "give a string or null.")
    instances = header.get("instances", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or not 1 <= instances <= MAX_INSTANCES:
        raise _bad("instances", f"give how many instances this connection serves, 1 .. {MAX_INSTANCES}; got {instances!r}.")
    state_dim = header.get("state_dim", 0)
    if not isinstance(state_dim, int) or isinstance(state_dim, bool) or state_dim < 0:
        raise _bad("state_dim", f"give a whole number >= 0; got {state_dim!r}.")
    declared = header.get("agents")
    if not isinstance(declared, list) or not declared:
        raise _bad("agents", "declare at least one agent: [{name, observation, action, mask}].")
    agents: list[AgentSpec] = []
    for i, entry in enumerate(declared):
        where = f"agents[{i}]"
        if not isinstance(entry, dict):
            raise _bad(where, f"an agent is {{name, observation, action, mask}}; got {entry!r}.")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.name", f"give a non-empty string; got {name!r}.")
        if any(a.name == name for a in agents):
            raise _bad(f"{where}.name", f"agent name {name!r} is declared twice; names must be unique.")
        observation, entries = parse_observation(entry.get("observation"), f"{where}.observation", version)
        action, mask_dim, n_int, n_float = parse_action(entry.get("action"), f"{where}.action")
        masked = entry.get("mask", False)
        if not isinstance(masked, bool):
            raise _bad(f"{where}.mask", f"give true or false; got {masked!r}.")
        if masked and isinstance(action, spaces.Box):
            raise _bad(f"{where}.mask", "a box action takes no mask; set mask: false.")
        agents.append(AgentSpec(
            name=name,
            observation=observation,
            action=action,
            mask_dim=mask_dim if masked else 0,
            n_int=n_int,
            n_float=n_float,
            declared=_canonical(entry),
            entries=entries,
        ))
    return Hello(game=game, instance=instance, token=token, agents=agents, state_dim=state_dim, raw=header,
                 protocol=version, instances=instances)


def _canonical(entry: dict[str, Any]) -> dict[str, Any]:
    """An agent entry with defaults filled in, so that equal declarations compare equal."""
    def box(spec: dict[str, Any]) -> dict[str, Any]:
        spec = dict(spec)
        spec.setdefault("dtype", "float32")
        spec.setdefault("low", None)
        spec.setdefault("high", None)
        spec.pop("kind", None)
        return spec

    obs = entry["observation"]
    if obs.get("kind") == "dict":
        obs = {"kind": "dict", "entries": [box(e) for e in obs["entries"]]}
    else:
        obs = box(obs)
    action = dict(entry["action"])
    if action.get("kind") == "discrete":
        action.setdefault("start", 0)
    if action.get("kind") == "multi_discrete":
        action.setdefault("start", [0] * len(action["nvec"]))
    if action.get("kind") == "hybrid":
        action["types"] = [{"name": t["name"], "params": list(t.get("params", []))} for t in action["types"]]
    return {"name": entry["name"], "observation": obs, "action": action, "mask": bool(entry.get("mask", False))}


def first_difference(expected: Any, got: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first field (a dotted path) where two JSON values differ, with both values; None if equal."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in list(expected) + [k for k in got if k not in expected]:
            found = first_difference(expected.get(key), got.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if (isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got)
            and any(isinstance(v, dict) for v in expected)):  # lists of numbers (a shape, bounds) compare whole
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if expected == got else (where or "hello", expected, got)
