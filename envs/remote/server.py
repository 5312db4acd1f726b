"""The trainer's end of the bridge: the listener, the handshake, and the game instances it connected.

``BridgeServer.open(instances)`` returns one connected ``Instance`` per requested instance number: in
``launch`` mode it starts the game processes (all at once, then waits for their ``hello``s); in ``listen``
mode it takes the games that connect, in the order they do. Every ``hello`` is checked (protocol version,
token, the agents and spaces of the run's first instance) and answered with ``welcome``, or with ``error``
and the connection closed. ``restart(instance)`` replaces a crashed instance.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
import sys
import time
from typing import Any

import numpy as np

from agentkit import __version__

from .launcher import GameProcess, command_argv
from .mux import Channel, Multiplexed
from .protocol import (
    BridgeDisconnected,
    BridgeError,
    BridgeTimeout,
    Hello,
    Layout,
    decode,
    encode,
    first_difference,
    parse_hello,
    split,
)
from .transport import Connection, listen

#: env.spin_us when it is not set and every process has a core of its own
DEFAULT_SPIN_US = 1000


def spin_us(config: Any) -> int:
    """The busy-wait before a read blocks, in microseconds (``TcpConnection``): ``env.spin_us``, or, unset,
    ``DEFAULT_SPIN_US`` when the trainer and the game processes (``num_envs / instances_per_process``) are no
    more than the CPUs this process may run on, else 0: a process that spins on a CPU another one needs slows
    both."""
    if config.spin_us is not None:
        return config.spin_us
    processes = 1 + math.ceil(config.num_envs / config.instances_per_process)
    return DEFAULT_SPIN_US if processes <= len(os.sched_getaffinity(0)) else 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Instance:
    """One connected game instance: request/answer with the last exchange remembered for error messages."""

    def __init__(self, number: int, conn: Connection, hello: Hello, game: GameProcess | None, step_timeout: float):
        self.number = number
        self.conn = conn
        self.hello = hello
        self.game = game
        self.step_timeout = step_timeout
        self.counts: dict[str, int] = {}  # requests sent, by type
        self._last_kind: str | None = None

    def request(self, header: dict[str, Any], blobs: dict[str, np.ndarray] | None = None) -> None:
        self.send_encoded(header["type"], encode(header, blobs))

    def flush(self) -> None:
        """Send what was queued for a game that serves several instances on one connection (mux.py); the vector
        env calls it once it has sent every instance its request, so that all the games work at once."""
        self.conn.flush()

    def send_encoded(self, kind: str, payload: bytes) -> None:
        """Send a request of type ``kind`` already encoded (``protocol.encode_rows``)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self._last_kind = kind
        self.conn.send(payload)

    @property
    def last(self) -> str:
        """The last request, e.g. ``"step #41"`` (the 41st step since the instance connected)."""
        kind = self._last_kind
        return "welcome" if kind is None else f"{kind} #{self.counts[kind]}"

    def answer(self, expect: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The game's answer to the last request, which must be of type ``expect``: header and blobs."""
        header, layout, body = self.answer_split(expect)
        return header, {name: np.frombuffer(body, dtype=dtype, count=count, offset=offset)
                        for name, dtype, count, offset in layout}

    def answer_split(self, expect: str) -> tuple[dict[str, Any], Layout, memoryview]:
        """The game's answer as ``protocol.split`` gives it (header, blob layout, body bytes)."""
        try:
            payload = self.conn.recv(self.step_timeout)
        except BridgeTimeout as exc:
            raise BridgeTimeout(
                f"instance {self.number} did not answer {self.last} within {self.step_timeout:g} s "
                f"(env.step_timeout); the game hangs or is paused.{self._tail()}"
            ) from exc
        header, layout, body = split(payload)
        if header["type"] == "error":
            raise BridgeError(
                f"instance {self.number} reported an error after {self.last}: "
                f"{header.get('message', header.get('code', '(no message)'))}", code="game_error",
            )
        if header["type"] != expect:
            raise BridgeError(
                f"unexpected_message: instance {self.number} answered {self.last} with {header['type']!r}; "
                f"expected {expect!r}.", code="unexpected_message",
            )
        return header, layout, body

    def _tail(self) -> str:
        tail = self.game.output_tail() if self.game is not None else ""
        return f"\nThe game's last output:\n{tail}" if tail else ""

    def refuse(self, error: BridgeError) -> None:
        """Tell the game why the run stops (best effort), then close."""
        try:
            self.conn.send(encode({"type": "error", "code": error.code, "message": str(error), **error.details}))
        except BridgeError:
            pass
        self.close()

    def close(self, reason: str | None = None) -> None:
        if reason is not None:
            try:
                self.conn.send(encode({"type": "close", "reason": reason}))
            except BridgeError:
                pass
        try:
            self.conn.close()
        except OSError:
            pass


class BridgeServer:
    """Listens for game instances and hands them out; launches them in ``launch`` mode."""

    def __init__(self, config: Any):
        self.config = config
        if not is_loopback(config.host) and not config.token:
            raise BridgeError(
                f"env.host: {config.host!r} lets other machines connect, so the bridge needs a shared secret: "
                "set env.token (every game's hello must carry it), or keep env.host: 127.0.0.1.", code="config",
            )
        if config.mode == "launch" and not config.command:
            raise BridgeError("env.command: mode launch needs the command that starts one game instance, "
                              "e.g. \"node game.mjs --port {port} --instance {instance}\".", code="config")
        if config.mode == "listen" and config.port == 0:
            raise BridgeError("env.port: mode listen needs a fixed port for the games to connect to, e.g. 11008.",
                              code="config")
        self.spin_us = spin_us(config)
        self.listener = listen(config.transport, config.host, config.port, config.max_frame_bytes,
                               spin=self.spin_us * 1e-6)
        self.port = self.listener.port
        self.signature: dict[str, Any] | None = None  # what the run's first instance declared
        self.first: Hello | None = None
        self._parked: dict[int, tuple[Connection, Hello]] = {}  # launched instances that connected early
        self._queued: list[tuple[Connection, Hello]] = []  # listen mode: the other slots of a game that serves several
        self._counts: dict[int, int] = {}  # launch mode: the instances each process was started with, by first number
        self._relaunched: dict[int, GameProcess] = {}  # each restarted instance's new process
        self._next = 0
        self.restarts = 0
        self._expected = "the run's first instance"

    def expect(self, hello: Hello, what: str) -> None:
        """Games must declare what ``hello`` did (``what`` names it in the refusal)."""
        self.signature, self.first = hello.signature(), hello
        self._expected = what

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def new_numbers(self, count: int) -> list[int]:
        numbers = list(range(self._next, self._next + count))
        self._next += count
        return numbers

    # -- opening instances ------------------------------------------------------------------------------

    def open(self, numbers: list[int], seeds: list[int]) -> list[Instance]:
        """Connected instances ``numbers`` (launched with ``{seed}`` = ``seeds[i]`` in launch mode, up to
        ``instances_per_process`` consecutive numbers per process)."""
        if self.config.mode == "launch":
            games: dict[int, GameProcess] = {}
            per = self.config.instances_per_process
            for k in range(0, len(numbers), per):
                chunk = numbers[k:k + per]
                game = self._launch(chunk[0], seeds[k], len(chunk))
                games.update(dict.fromkeys(chunk, game))
            try:
                return [self._await_launched(n, games[n]) for n in numbers]
            except BaseException:
                for game in set(games.values()):
                    game.stop(grace=0.0)
                raise
        return [self._await_any(n) for n in numbers]

    def _launch(self, number: int, seed: int, count: int = 1) -> GameProcess:
        """A process serving instances ``number`` .. ``number + count - 1``."""
        cfg = self.config
        values = {"port": self.port, "host": cfg.host, "instance": number, "instances": count, "seed": seed,
                  "transport": cfg.transport}
        try:
            argv = command_argv(cfg.command, **values)
        except (KeyError, IndexError, ValueError) as exc:
            raise BridgeError(
                f"env.command: {cfg.command!r} has an unknown placeholder or an unclosed quote ({exc}); the "
                "placeholders are {port}, {host}, {instance}, {instances}, {seed}, {transport}.", code="config",
            ) from exc
        env = {
            "AGENTKIT_BRIDGE_HOST": cfg.host, "AGENTKIT_BRIDGE_PORT": str(self.port),
            "AGENTKIT_BRIDGE_TRANSPORT": cfg.transport, "AGENTKIT_BRIDGE_INSTANCE": str(number),
            "AGENTKIT_BRIDGE_INSTANCES": str(count), "AGENTKIT_BRIDGE_SEED": str(seed),
        }
        if cfg.token:
            env["AGENTKIT_BRIDGE_TOKEN"] = cfg.token
        self._counts[number] = count
        return GameProcess(argv, env, cfg.cwd, range(number, number + count))

    def _await_launched(self, number: int, game: GameProcess) -> Instance:
        deadline = time.monotonic() + self.config.connect_timeout
        while number not in self._parked:
            code = game.exited()
            if code is not None:
                tail = game.output_tail()
                raise BridgeError(
                    f"instance {number}: the game exited with code {code} before it connected to "
                    f"{self.address}.\ncommand: {' '.join(game.argv)}" + (f"\nits output:\n{tail}" if tail else ""),
                    code="no_connection",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                tail = game.output_tail()
                raise BridgeError(
                    f"instance {number} did not connect to {self.address} within {self.config.connect_timeout:g} s "
                    f"(env.connect_timeout).\ncommand: {' '.join(game.argv)}"
                    + (f"\nits output:\n{tail}" if tail else "\nit printed nothing."),
                    code="no_connection",
                )
            conn = self.listener.accept(min(left, 0.2))
            if conn is None:
                continue
            hello = self._handshake(conn, deadline)
            if hello.instance is None:
                raise self._refuse(conn, BridgeError(
                    "bad_hello: instance: a launched game must send the {instance} it was started with; got null.",
                    code="bad_hello", field="instance"))
            started = self._counts.get(hello.instance, 1)
            if hello.instances != started:
                raise self._refuse(conn, BridgeError(
                    f"bad_hello: instances: the game started as {{instance}} = {hello.instance} with {{instances}} = "
                    f"{started} declares {hello.instances} instances on its connection; serve the {{instances}} it "
                    "was started with (env.instances_per_process).", code="bad_hello", field="instances",
                    trainer=started, game=hello.instances))
            for slot, end in enumerate(self._ends(conn, hello)):
                self._parked[hello.instance + slot] = (end, hello)
        conn, hello = self._parked.pop(number)
        return self._welcome(number, conn, hello, game)

    def _ends(self, conn: Connection, hello: Hello) -> list[Connection]:
        """The connection itself for a game with one instance; for one that serves several, its welcome now and
        one channel per slot (mux.py)."""
        if hello.instances == 1:
            return [conn]
        self._send_welcome(conn, hello, hello.instance)
        return Multiplexed(conn, hello.instances).channels

    def _await_any(self, number: int) -> Instance:
        deadline = time.monotonic() + self.config.connect_timeout
        if not self._queued:
            print(f"agentkit: waiting up to {self.config.connect_timeout:g} s for a game to connect to "
                  f"{self.config.transport}://{self.address} (env.mode: listen; instance {number})", file=sys.stderr,
                  flush=True)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BridgeError(
                    f"no game connected to {self.config.transport}://{self.address} within "
                    f"{self.config.connect_timeout:g} s (env.connect_timeout) for instance {number}: start the game "
                    f"(it connects to port {self.port}), or raise env.connect_timeout.", code="no_connection",
                )
            if self._queued:
                end, hello = self._queued.pop(0)
                return self._welcome(number, end, hello, None)
            conn = self.listener.accept(min(left, 0.5))
            if conn is not None:
                hello = self._handshake(conn, deadline)
                self._queued += [(end, hello) for end in self._ends(conn, hello)]

    def _handshake(self, conn: Connection, deadline: float) -> Hello:
        try:
            payload = conn.recv(max(deadline - time.monotonic(), 1.0))
            header, _ = decode(payload)
            hello = parse_hello(header)
        except BridgeTimeout:
            raise self._refuse(conn, BridgeError(
                f"a game connected from {conn.peer} but sent no hello within env.connect_timeout.",
                code="no_connection")) from None
        except BridgeDisconnected as exc:
            raise BridgeError(f"a game connected from {conn.peer} and closed the connection before its hello "
                              f"({exc}).", code="no_connection") from exc
        except BridgeError as exc:
            raise self._refuse(conn, exc) from None
        if self.config.token and not hmac.compare_digest((hello.token or "").encode(), self.config.token.encode()):
            raise self._refuse(conn, BridgeError(
                f"bad_token: the game at {conn.peer} gave {'no' if not hello.token else 'a wrong'} token; set the "
                "game's token to env.token.", code="bad_token"))
        signature = hello.signature()
        if self.signature is None:
            self.signature, self.first = signature, hello
        else:
            diff = first_difference(self.signature, signature)
            if diff is not None:
                where, expected, got = diff
                raise self._refuse(conn, BridgeError(
                    f"space_mismatch: the game at {conn.peer} declares {where} = {got!r}, but {self._expected} "
                    f"declared {expected!r}; every instance must declare the same agents and spaces.",
                    code="space_mismatch", field=where, trainer=expected, game=got))
        return hello

    def _refuse(self, conn: Connection, error: BridgeError) -> BridgeError:
        """Send ``error`` to the game and close the connection; returns ``error`` for the caller to raise
        (the run stops with it)."""
        try:
            conn.send(encode({"type": "error", "code": error.code, "message": str(error), **error.details}))
        except BridgeError:
            pass
        conn.close()
        return error

    def _welcome(self, number: int, conn: Connection, hello: Hello, game: GameProcess | None) -> Instance:
        if not isinstance(conn, Channel):  # a game with several instances had one welcome for all (``_ends``)
            self._send_welcome(conn, hello, number)
        return Instance(number, conn, hello, game, self.config.step_timeout)

    def _send_welcome(self, conn: Connection, hello: Hello, number: int | None) -> None:
        conn.send(encode({
            "type": "welcome", "protocol": hello.protocol, "instance": number, "instances": hello.instances,
            "max_frame_bytes": self.config.max_frame_bytes, "spin_us": self.spin_us,
            "trainer": f"agentkit {__version__}",
        }))

    # -- faults -----------------------------------------------------------------------------------------

    def can_restart(self, instance: Instance) -> bool:
        """Whether ``instance`` may be replaced: its process was relaunched already (with another of its instances),
        or fewer than ``max_restarts`` games were restarted."""
        return instance.number in self._parked or self.restarts < self.config.max_restarts

    def restart(self, instance: Instance, seed: int) -> Instance:
        """A fresh game in ``instance``'s place: relaunched (launch mode) or the next game that connects within
        ``connect_timeout`` (listen mode); counts towards ``max_restarts``. A launched process that served several
        instances on one connection lost them all: the first of them to be restarted relaunches the process with
        all of them, and the others take their new connections without counting again."""
        instance.close()
        number = instance.number
        if number in self._parked:  # relaunched with another instance of its process
            return self._await_launched(number, self._relaunched[number])
        self.restarts += 1
        if self.config.mode != "launch":
            return self._await_any(number)
        numbers = instance.game.instances if instance.game is not None else range(number, number + 1)
        if instance.game is not None:
            instance.game.stop(grace=0.0)
        game = self._launch(numbers[0], seed, len(numbers))
        self._relaunched.update(dict.fromkeys(numbers, game))
        try:
            return self._await_launched(number, game)
        except BaseException:
            game.stop(grace=0.0)
            raise

    def close(self) -> None:
        for conn, _ in [*self._parked.values(), *self._queued]:
            conn.close()
        self._parked.clear()
        self._queued.clear()
        self.listener.close()
