"""Matches: a trained policy against a fixed opponent in a turn-based game (``agentkit eval --opponent``).

``play_matches(source, seat_policy, opponent, seats, episodes, seed)`` plays ``episodes`` games per seat on
one copy of a turn-based AEC env (``PettingZooSource.turn_based``): the policy plays the seat's agent
(``first`` = ``possible_agents[0]``, ``second`` = ``possible_agents[1]``), the opponent
(``agentkit.opponents``) every other agent. Game ``i`` of a seat starts from a reset with seed ``seed + i``,
and the opponent is reset with the same seed, so the same arguments give the same games.

**Outcome of a game:** the sign of the policy's summed reward (win > 0, draw = 0, loss < 0), which is the
game's result for pettingzoo's board games (+1 / 0 / −1) and for any game whose final reward says who won.
``MatchResult`` holds ``win_rate``, ``draw_rate`` and ``loss_rate`` per seat and over all seats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from agentkit.environment import MultiAgentEnvSource
from agentkit.errors import InvalidInputError, UserError
from agentkit.opponents import Opponent, PolicyOpponent, game_over, make_opponent

SEATS = ("first", "second")
#: ``seat_policy(agent, obs [1, D], mask [1, M] | None) -> the env's action`` for one agent to move.
SeatPolicy = Callable[[str, np.ndarray, "np.ndarray | None"], Any]


@dataclass
class SeatResult:
    agent: str
    episodes: int
    wins: int
    draws: int
    losses: int
    mean_return: float
    win_rate: float = field(init=False)
    draw_rate: float = field(init=False)
    loss_rate: float = field(init=False)

    def __post_init__(self) -> None:
        self.win_rate = self.wins / self.episodes
        self.draw_rate = self.draws / self.episodes
        self.loss_rate = self.losses / self.episodes


@dataclass
class MatchResult:
    """Win/draw/loss rates of the policy against ``opponent``, per seat (``seats``) and over all of them."""

    opponent: str
    episodes: int
    win_rate: float
    draw_rate: float
    loss_rate: float
    seats: dict[str, SeatResult]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def seat_agents(source: Any, seats: Sequence[str]) -> dict[str, str]:
    """``{seat: agent}``: ``first`` and ``second`` are the first two of the env's ``possible_agents``."""
    if not (source.multi_agent and source.turn_based):
        raise UserError(
            f"--opponent: env {source.env_id!r} is not a turn-based game (a pettingzoo AEC env "
            "whose agents take turns); fixed opponents play turn-based games."
        )
    agents = list(source.agents)
    return {seat: agents[SEATS.index(seat)] for seat in seats}


def play_matches(source: Any, policy: SeatPolicy, opponent: Opponent, seats: Sequence[str] = SEATS,
                 episodes: int = 100, seed: int = 0) -> MatchResult:
    """Play ``episodes`` games per seat (see the module docstring) and count the policy's results."""
    if episodes < 1:
        raise InvalidInputError(f"--episodes must be at least 1 (got {episodes}).")
    env = source.make_env(None)
    try:
        results = {}
        for seat, agent in seat_agents(source, seats).items():
            returns = [_play_one(source, env, policy, agent, opponent, seed + i) for i in range(episodes)]
            signs = np.sign(returns)
            results[seat] = SeatResult(agent, episodes, int((signs > 0).sum()), int((signs == 0).sum()),
                                       int((signs < 0).sum()), float(np.mean(returns)))
    finally:
        env.close()
    total = sum(r.episodes for r in results.values())
    return MatchResult(
        opponent.name, total,
        sum(r.wins for r in results.values()) / total,
        sum(r.draws for r in results.values()) / total,
        sum(r.losses for r in results.values()) / total,
        results,
    )


def _play_one(source: Any, env: Any, policy: SeatPolicy, me: str, opponent: Opponent, seed: int) -> float:
    env.reset(seed=seed)
    opponent.reset(seed)
    total = 0.0
    while not game_over(env):
        mover = env.agent_selection
        if env.terminations.get(mover) or env.truncations.get(mover):
            env.step(None)
        elif mover == me:
            obs, mask = source.layouts[mover].split(env.observe(mover))
            env.step(policy(mover, obs, mask))
        else:
            env.step(opponent.act(env, mover))
        total += float(env.rewards.get(me, 0.0))
    return total


# -- policies from run dirs and exported files ---------------------------------------------------------------


def group_seat_policy(source: Any, acts: Mapping[str, Callable[[np.ndarray, Any], Any]]) -> SeatPolicy:
    """A ``SeatPolicy`` from one ``agentkit.evaluation.Act`` per policy group: the agent's row is played in a
    batch of its group's agents (so a policy with a one-hot agent id sees the agent's own id)."""
    where = {a: (g, i, len(spec.agents)) for g, spec in source.groups.items() for i, a in enumerate(spec.agents)}

    def play(agent: str, obs: np.ndarray, mask: np.ndarray | None) -> Any:
        group, i, size = where[agent]
        x = np.repeat(np.asarray(obs, np.float32).reshape(1, -1), size, axis=0)
        m = None
        if mask is not None:
            m = np.ones((size, mask.shape[-1]), bool)
            m[i] = np.asarray(mask).reshape(-1)
        action = acts[group](x, m)
        return np.asarray(action)[i].item()

    return play


def load_policy(target: Path, deterministic: bool, seed: int, env: str | None = None,
                extra_plugins: Sequence[str] = (), allow_imports: Sequence[str] = (),
                checkpoint: str | None = None) -> tuple[Any, SeatPolicy, Callable[[], None]]:
    """``(env source, seat policy, close)`` for a run dir (its latest weights, or ``checkpoint``'s) or an
    exported ``.onnx`` (the other groups' files beside it), with the same trust rules as ``agentkit eval``."""
    from agentkit import evaluation, runtime

    if target.suffix == ".onnx":
        policy = runtime.load(target)
        source = evaluation._onnx_env(policy.metadata, target, env, extra_plugins, allow_imports)
        rng = np.random.default_rng(seed)
        files = evaluation._group_files(target, policy, list(cast(MultiAgentEnvSource, source).groups))
        acts = {g: evaluation.onnx_act(policy if f == target else runtime.load(f), deterministic, rng)
                for g, f in files.items()}
        return source, group_seat_policy(source, acts), lambda: None
    from agentkit.rundir import load_run

    loaded = load_run(target, extra_plugins, checkpoint, allow_imports)
    acts = {a.name: evaluation.torch_act(a, deterministic) for a in loaded.algorithm.policies()}
    return loaded.env, group_seat_policy(loaded.env, acts), loaded.close


def evaluate_against(target: Path | str, opponent: str, seat: str = "both", episodes: int = 100, seed: int = 0,
                     deterministic: bool = True, env: str | None = None, extra_plugins: Sequence[str] = (),
                     allow_imports: Sequence[str] = (), checkpoint: str | None = None) -> MatchResult:
    """``agentkit eval TARGET --opponent SPEC --seat SEAT``: a run dir (or one of its ``checkpoint``s) or an
    ``.onnx`` against a registered opponent (``random``, ``minimax[:depth]``, one of a plugin's, loaded with
    ``extra_plugins``), another ``.onnx`` or run dir, in the first seat, the second, or ``both``."""
    if seat not in (*SEATS, "both"):
        raise UserError(f"--seat {seat!r}: choose first, second or both.")
    seats = SEATS if seat == "both" else (seat,)
    target = Path(target)
    closers: list[Callable[[], None]] = []
    try:
        source, policy, close = load_policy(target, deterministic, seed, env, extra_plugins, allow_imports, checkpoint)
        closers.append(close)

        def policy_opponent(path: Path) -> Opponent:
            _, other, close_other = load_policy(path, True, seed, env, extra_plugins, allow_imports)
            closers.append(close_other)
            return PolicyOpponent(path.name, other, lambda agent, raw: source.layouts[agent].split(raw))

        from agentkit.host import PluginHost

        # opponents are plugins: the built-ins, installed ones and the command line's -p modules
        foe = make_opponent(opponent, seed, PluginHost(modules=extra_plugins).registry, policy_opponent)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return play_matches(source, policy, foe, seats, episodes, seed)
    finally:
        for close in closers:
            close()
