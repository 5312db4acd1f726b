"""Fixed opponents for turn-based games: who plays the other seats in ``agentkit eval --opponent``.

An opponent chooses the move of the agent to move in a PettingZoo AEC env (the env copy the match is played
on): ``opponent.act(env, agent) -> action``; ``reset(seed)`` is called before each game. Shipped:

- ``random``: a legal move drawn uniformly (the agent's ``action_mask``; every action of a Discrete space
  when it has none).
- ``minimax[:depth]`` (default depth 9, full depth for tic-tac-toe): depth-limited alpha-beta search over
  copies of the env (``clone_env``), so it plays any deterministic, perfect-information,
  turn-based AEC game with Discrete actions without knowing its rules. A position is valued by the searching
  agent's summed reward along the line; a line cut off at ``depth`` moves counts as 0 (no heuristic), so
  depth 2 takes a winning move and blocks an immediate loss, and deeper searches see forced lines. Among
  equal lines it prefers a quicker win and a later loss, and it breaks the remaining ties at random (seeded
  by ``reset``). Positions are cached by the mover and its observation, which must determine the position
  (true of pettingzoo.classic's board games, which observe the whole board).
- a policy: ``PolicyOpponent`` plays an ``agentkit.evaluation.Act`` (a run dir's actor, an exported file).

``make_opponent(spec, ...)`` turns a command-line spec into one (``random``, ``minimax:4``, ``FILE.onnx``,
``RUN_DIR``).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from agentkit.errors import UserError

MASK = "action_mask"
FULL_DEPTH = 9


class Opponent(Protocol):
    name: str

    def reset(self, seed: int | None) -> None: ...

    def act(self, env: Any, agent: str) -> Any: ...


def legal_moves(env: Any, agent: str, observation: Any = None) -> np.ndarray:
    """The indices of the agent's allowed actions: its ``action_mask`` (a Dict observation's entry, or the
    info's), else every action of its Discrete space."""
    raw = env.observe(agent) if observation is None else observation
    mask = raw.get(MASK) if isinstance(raw, dict) else None
    if mask is None:
        mask = (env.infos.get(agent) or {}).get(MASK)
    if mask is not None:
        return np.flatnonzero(np.asarray(mask).reshape(-1))
    space = env.action_space(agent)
    if not isinstance(space, spaces.Discrete):
        raise UserError(f"the shipped opponents play Discrete actions; agent {agent!r} has {space}.")
    return np.arange(int(space.n)) + int(space.start)


def _done(env: Any, agent: str) -> bool:
    return bool(env.terminations.get(agent, False) or env.truncations.get(agent, False))


def game_over(env: Any) -> bool:
    """True when no agent of the AEC env is still playing."""
    return all(_done(env, a) for a in env.agents)


class RandomOpponent:
    """A legal move uniformly at random."""

    name = "random"

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, env: Any, agent: str) -> Any:
        return int(self.rng.choice(legal_moves(env, agent)))


_EXACT, _LOWER, _UPPER = 0, 1, 2
_TABLES: dict[type, dict[tuple, tuple[float, int]]] = {}


def clone_env(env: Any) -> Any:
    """An independent copy of an AEC env in its current position, wrappers included.

    Not ``copy.deepcopy``: pettingzoo's envs are ``EzPickle``, whose copies are rebuilt from the constructor's
    arguments (a fresh game). Each layer's attributes are copied instead (one pickle round trip, several
    times faster than deep-copying them), sharing the spaces, which a move never changes.
    """
    layers, shared, states = [], [], []
    layer = env
    while layer is not None:
        layers.append(layer)
        keep, state = {}, {}
        for key, value in vars(layer).items():
            if key == "env" or _is_spaces(value):
                keep[key] = value
            else:
                state[key] = value
        shared.append(keep)
        states.append(state)
        layer = getattr(layer, "env", None)
    try:
        states = pickle.loads(pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an attribute that does not pickle (a render window, say): copy it the slow way
        states = copy.deepcopy(states)
    copies = [object.__new__(type(layer)) for layer in layers]
    for i, (new, keep, state) in enumerate(zip(copies, shared, states, strict=True)):
        new.__dict__.update(state)
        new.__dict__.update({k: v for k, v in keep.items() if k != "env"})
        if "env" in keep:
            new.__dict__["env"] = copies[i + 1]
    return copies[0]


def _is_spaces(value: Any) -> bool:
    return isinstance(value, spaces.Space) or (
        isinstance(value, dict) and bool(value) and all(isinstance(v, spaces.Space) for v in value.values())
    )


class MinimaxOpponent:
    """Depth-limited alpha-beta search over deep copies of the AEC env (see the module docstring)."""

    def __init__(self, depth: int = FULL_DEPTH, seed: int | None = None, cache_size: int = 2_000_000):
        if depth < 1:
            raise UserError(f"--opponent minimax:{depth}: the depth must be at least 1.")
        self.depth = depth
        self.name = f"minimax:{depth}"
        self.rng = np.random.default_rng(seed)
        self.cache_size = cache_size
        self.nodes = 0  # positions searched since construction (for benchmarks)

    def reset(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, env: Any, agent: str) -> Any:
        # one table per game, shared by every searcher of it: a position's value does not depend on who asks
        self._table = _TABLES.setdefault(type(env.unwrapped), {})
        moves = legal_moves(env, agent)
        values = np.array([self._child(env, agent, move, self.depth - 1, -np.inf, np.inf) for move in moves])
        best = np.flatnonzero(values >= values.max() - 1e-9)
        return int(moves[self.rng.choice(best)])

    # -- the search ------------------------------------------------------------------------------------------

    def _child(self, env: Any, me: str, move: Any, depth: int, alpha: float, beta: float) -> float:
        child = clone_env(env)
        child.step(move)
        gained = float(child.rewards.get(me, 0.0))
        return gained + self._value(child, me, depth, alpha - gained, beta - gained)

    def _value(self, env: Any, me: str, depth: int, alpha: float, beta: float) -> float:
        """``me``'s reward from here on with best play by everyone, looking ``depth`` moves ahead."""
        self.nodes += 1
        while env.agents and not game_over(env) and _done(env, env.agent_selection):
            env.step(None)  # a done agent's turn: pettingzoo's dead step
        if game_over(env):
            return 0.0
        if depth == 0:
            return 0.0
        mover = env.agent_selection
        raw = env.observe(mover)
        key = (me, mover, depth, _position_key(raw))
        hit = self._table.get(key)
        if hit is not None:
            value, flag = hit
            if flag == _EXACT or (flag == _LOWER and value >= beta) or (flag == _UPPER and value <= alpha):
                return value
        a0, b0 = alpha, beta
        maximise = mover == me
        best = -np.inf if maximise else np.inf
        for move in legal_moves(env, mover, raw):
            # a quicker win (or a later loss) is worth a little more
            value = 0.999 * self._child(env, me, move, depth - 1, alpha / 0.999, beta / 0.999)
            if maximise:
                best = max(best, value)
                alpha = max(alpha, value)
            else:
                best = min(best, value)
                beta = min(beta, value)
            if alpha >= beta:
                break
        flag = _UPPER if best <= a0 else _LOWER if best >= b0 else _EXACT
        if len(self._table) >= self.cache_size:
            self._table.clear()
        self._table[key] = (best, flag)
        return best


def _position_key(raw: Any) -> bytes:
    if isinstance(raw, dict):
        return b"|".join(np.ascontiguousarray(raw[k]).tobytes() for k in sorted(raw))
    return np.ascontiguousarray(raw).tobytes()


class PolicyOpponent:
    """A trained policy as an opponent: ``act(obs [1, D], mask [1, M] | None) -> env action`` (an
    ``agentkit.evaluation.Act``) on the agent's flattened observation (``split(agent, raw) -> (obs, mask)``)."""

    def __init__(self, name: str, act: Callable[[str, np.ndarray, np.ndarray | None], Any],
                 split: Callable[[str, Any], tuple[np.ndarray, np.ndarray | None]]):
        self.name = name
        self._act = act
        self._split = split

    def reset(self, seed: int | None) -> None:
        pass

    def act(self, env: Any, agent: str) -> Any:
        obs, mask = self._split(agent, env.observe(agent))
        return self._act(agent, obs, mask)


def make_opponent(spec: str, seed: int | None, policy_opponent: Callable[[Path], Opponent]) -> Opponent:
    """The opponent a command-line ``--opponent`` names: ``random``, ``minimax`` or ``minimax:DEPTH``, an
    ``.onnx`` file or a run dir (built by ``policy_opponent(path)``). UserError for anything else."""
    name, _, arg = spec.partition(":")
    if name == "random" and not arg:
        return RandomOpponent(seed)
    if name == "minimax":
        if arg and not arg.isdigit():
            raise UserError(f"--opponent {spec!r}: the minimax depth must be a whole number, e.g. minimax:4.")
        return MinimaxOpponent(int(arg) if arg else FULL_DEPTH, seed)
    path = Path(spec)
    if path.suffix == ".onnx" and path.is_file() or path.is_dir():
        return policy_opponent(path)
    raise UserError(
        f"--opponent {spec!r}: not a shipped opponent (random, minimax, minimax:DEPTH), an existing .onnx file "
        "or a run dir."
    )
