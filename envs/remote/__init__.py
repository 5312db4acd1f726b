"""The ``remote`` env plugin: a game that runs outside Python, reached over the engine bridge.

    env: {plugin: remote, mode: launch, command: "node game.mjs --port {port} --instance {instance}", num_envs: 8}

The game embeds a client of the bridge protocol (docs/bridge.md; clients in exports/python and exports/js)
and declares its agents and spaces in its ``hello``. A game with one agent is a single-agent env (like the
gymnasium plugin's); with several, a multi-agent env with policy groups (like the pettingzoo plugin's). The
source reads the spaces from the first instance when it is built and keeps that instance (with the others its
process serves, ``instances_per_process``) for the first vector env; further instances connect when a vector
env is first reset.

At train start the plugin keeps the game's hello (without its token) in the run dir, ``game.json``: a run
rebuilt by ``agentkit.rundir.load_run`` (eval, export) reads its spaces from there, so ``agentkit export``
needs no game, and eval connects (or launches) games only when it plays; every game that connects must then
declare what the run's game did.

``params`` (``env.params``, changed by lifecycle hooks through ``run.env.params``) go with every reset.
The plugin's ``agentkit_iteration_end`` adds ``bridge/restarts`` (games restarted, the unit of
``max_restarts``: a process serving several instances counts once) and ``bridge/dropped_episodes`` (counts so
far in this session) to the metrics of runs on a remote env.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import agentkit
from agentkit.config import EnvConfig
from agentkit.environment import GroupSpec, group_agents
from agentkit.files import write_atomic
from agentkit.observations import ObservationLayout

from .protocol import DEFAULT_MAX_FRAME_BYTES, BridgeError, Hello, parse_hello
from .server import BridgeServer, Instance
from .vec import RemoteMultiAgentVecEnv, RemoteVecEnv


class RemoteEnvConfig(EnvConfig):
    """A game that speaks the agentkit bridge protocol (docs/bridge.md)."""

    mode: Literal["launch", "listen"] = Field(
        "launch", description="launch: start num_envs game processes from `command`; listen: wait for games to connect."
    )
    command: str | None = Field(
        None, description="launch: the command line of one game process; {port}, {host}, {instance}, {instances}, {seed} "
        "and {transport} are filled in (split like a shell would, not run by one)."
    )
    instances_per_process: int = Field(
        1, ge=1, description="launch: game instances one process serves on one connection (batch frames, docs/bridge.md; "
        "the command gets the first one's {instance} and {instances}). Fewer processes and frames per vector step."
    )
    cwd: str | None = Field(None, description="launch: the folder the command runs in (default: the current one).")
    transport: Literal["tcp", "websocket"] = Field("tcp", description="tcp (length-prefixed frames) or websocket.")
    host: str = Field("127.0.0.1", description="The address to listen on; a non-loopback one requires `token`.")
    port: int = Field(0, ge=0, le=65535, description="The port to listen on; 0 = any free port (launch mode).")
    token: str | None = Field(None, description="A shared secret every game's hello must carry.")
    num_envs: int = Field(8, ge=1, description="Game instances stepped together.")
    connect_timeout: float = Field(60.0, gt=0, description="Seconds a game has to connect and say hello.")
    step_timeout: float = Field(60.0, gt=0, description="Seconds a game has to answer a reset or a step.")
    max_frame_bytes: int = Field(DEFAULT_MAX_FRAME_BYTES, ge=1024, description="The largest payload accepted.")
    max_restarts: int = Field(10, ge=0, description="Crashed games (processes, listen-mode connections) restarted per run "
                              "before the run stops; a process serving several instances counts once.")
    spin_us: int | None = Field(
        None, ge=0, description="Microseconds the trainer (and a game whose client honours welcome.spin_us) keeps "
        "retrying a read before it blocks; default: 1000 when the trainer and the game processes fit the CPUs, else 0."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Sent to the game with every reset.")
    groups: dict[str, list[str]] | None = Field(
        None, description="Multi-agent games: policy groups {name: [agent, ...]}; default: identical spaces share one."
    )

    def imports(self) -> dict[str, str]:
        """launch mode runs ``command``: a file made elsewhere (an .onnx, a run dir) may start it only when the
        command line allows it (``--allow-import`` with the command, agentkit.trust)."""
        found = super().imports()
        if self.mode == "launch" and self.command:
            found["command"] = self.command.strip()
        return found

    def rebuild_imports(self, run_dir: Path) -> dict[str, str]:
        """A saved run that kept its game's hello (``game.json``) is rebuilt without a game: the launch command
        is not run, so it needs no trust; a run without one asks a launched game for its spaces, so it does."""
        found = self.imports()
        if (Path(run_dir) / GAME_FILE).is_file():
            found.pop("command", None)
        return found


class RemoteSource:
    """A bridged game's description (read from its first instance's hello) and a way to make vector envs.

    Attributes besides ``EnvSource``'s: ``server`` (the listener and launcher), ``params`` (sent at every
    reset; hooks may change it), ``stats`` (``restarts``, ``dropped_episodes``), ``agent_specs``; for
    multi-agent games ``groups``, ``agents`` and ``state_dim`` as the pettingzoo source has them.
    """

    #: env.step_timeout is enforced per instance and request here (agentkit.envcheck.CheckedSource)
    enforces_step_timeout = True
    turn_based = False  # every agent of a bridged game acts each step

    def __init__(self, config: RemoteEnvConfig, run_dir: Path | None = None):
        self.config = config
        self.params: dict[str, Any] = dict(config.params)
        self.stats = {"restarts": 0, "dropped_episodes": 0}
        self._server: BridgeServer | None = None
        self._spare: list[Instance] = []
        hello = read_hello(run_dir)  # a saved run (eval, export): its game's hello, kept at train start
        if hello is None:  # ask the game: its first process's instances say hello and stay for the first vector env
            first = min(config.instances_per_process, config.num_envs) if config.mode == "launch" else 1
            try:
                numbers = self.server.new_numbers(first)
                self._spare = self.server.open(numbers, numbers)
            except BaseException:
                self.server.close()
                raise
            hello = self._spare[0].hello
        self.hello = hello
        self.env_id = hello.game
        self.agent_specs = hello.agents
        self.agents = [a.name for a in hello.agents]
        self.declared_state_dim = hello.state_dim
        self.multi_agent = len(hello.agents) > 1
        self.layouts = {a.name: ObservationLayout(a.observation, f"game {hello.game!r}: agent {a.name!r}")
                        for a in hello.agents}
        self.groups = self._make_groups(config.groups)
        self.state_dim = hello.state_dim or sum(a.obs_size for a in hello.agents)
        first = next(iter(self.groups.values()))
        self.observation_space = first.observation_space
        self.action_space = first.action_space
        self.observation_fields = first.observation_fields
        self.has_mask = any(g.mask_dim > 0 for g in self.groups.values())

    def _make_groups(self, named: dict[str, list[str]] | None) -> dict[str, GroupSpec]:
        specs = {a.name: a for a in self.agent_specs}
        signature = {a: (self.layouts[a].key, specs[a].mask_dim, specs[a].action) for a in self.agents}
        named = group_agents(self.agents, signature, named, what="the game")
        return {
            name: GroupSpec(
                name=name, agents=list(members), observation_space=self.layouts[members[0]].space,
                action_space=specs[members[0]].action, mask_dim=specs[members[0]].mask_dim,
                observation_fields=self.layouts[members[0]].fields,
            )
            for name, members in named.items()
        }

    @property
    def server(self) -> BridgeServer:
        """The listener (and launcher), opened when first needed: a run whose game's hello was kept (``game.json``)
        opens it only when an env plays, and every game must then declare what that hello did."""
        if self._server is None:
            self._server = BridgeServer(self.config)
            if getattr(self, "hello", None) is not None:
                self._server.expect(self.hello, "the run's game (game.json in the run dir)")
        return self._server

    def claim(self, count: int, seed: int) -> list[Instance]:
        """``count`` connected instances for a vector env: the spare one first, then new ones."""
        spare, self._spare = self._spare[:count], self._spare[count:]
        numbers = self.server.new_numbers(count - len(spare))
        return spare + self.server.open(numbers, [seed + n for n in numbers])

    def make_vec(self, num_envs: int, seed: int | None, render_mode: str | None = None):
        """``render_mode="rgb_array"``: every request asks the games for a frame (protocol 2; ``render()``)."""
        render = render_mode == "rgb_array"
        if self.multi_agent:
            return RemoteMultiAgentVecEnv(self, num_envs, seed, render=render)
        return RemoteVecEnv(self, num_envs, seed, render=render)

    def close(self) -> None:
        for inst in self._spare:
            inst.close("not needed")
            if inst.game is not None:
                inst.game.stop()
        self._spare = []
        if self._server is not None:
            self._server.close()


GAME_FILE = "game.json"


def read_hello(run_dir: Path | None) -> Hello | None:
    """The game's hello kept in ``run_dir`` (``GAME_FILE``), or None where there is none."""
    path = None if run_dir is None else Path(run_dir) / GAME_FILE
    if path is None or not path.is_file():
        return None
    try:
        return parse_hello(json.loads(path.read_text()))
    except (ValueError, BridgeError) as exc:
        raise BridgeError(f"{path}: not a game's hello ({exc}); delete it to ask the game again.", code="config") from exc


def write_hello(run_dir: Path, hello: Hello) -> None:
    """Keep ``hello`` (without its token) in ``run_dir``."""
    raw = {k: v for k, v in hello.raw.items() if k not in ("token", "blobs")}
    write_atomic(Path(run_dir) / GAME_FILE, (json.dumps(raw, indent=1) + "\n").encode())


def make_source(config: RemoteEnvConfig, run_dir: Path | None = None) -> RemoteSource:
    """The source; ``run_dir`` (a saved run loaded back) holds the game's hello, so no game need connect."""
    return RemoteSource(config, run_dir)


@agentkit.hookimpl
def agentkit_register_envs(register):
    register(
        "remote", make_source, RemoteEnvConfig,
        "A game in any engine (Godot, Unity, a browser, Node, ...) over the bridge protocol, TCP or WebSocket.",
    )


@agentkit.hookimpl
def agentkit_train_start(run):
    env = getattr(run, "env", None)
    env = getattr(env, "wrapped", env)
    if isinstance(env, RemoteSource):
        write_hello(run.run_dir, env.hello)


@agentkit.hookimpl
def agentkit_iteration_end(run, iteration, step, metrics):
    env = getattr(run, "env", None)
    env = getattr(env, "wrapped", env)  # the trainer's CheckedSource around the plugin's source
    if isinstance(env, RemoteSource):
        metrics["bridge/restarts"] = float(env.stats["restarts"])
        metrics["bridge/dropped_episodes"] = float(env.stats["dropped_episodes"])


__all__ = ["BridgeError", "RemoteEnvConfig", "RemoteSource"]
