"""The built-in opponents for turn-based games, registered through ``agentkit_register_opponents`` like a
third-party plugin's (``agentkit eval --opponent random|minimax[:DEPTH]``):

- ``random``: a legal move drawn uniformly (the agent's ``action_mask``; every action of a Discrete space
  when it has none).
- ``minimax[:depth]`` (default depth 9, full depth for tic-tac-toe): depth-limited alpha-beta search over
  copies of the env (``agentkit.opponents.clone_env``), so it plays any deterministic, perfect-information,
  turn-based AEC game with Discrete actions without knowing its rules. A position is valued by the searching
  agent's summed reward along the line; a line cut off at ``depth`` moves counts as 0 (no heuristic), so
  depth 2 takes a winning move and blocks an immediate loss, and deeper searches see forced lines. Among
  equal lines it prefers a quicker win and a later loss, and it breaks the remaining ties at random (seeded
  by ``reset``). Positions are cached by the mover and its observation, which must determine the position
  (true of pettingzoo.classic's board games, which observe the whole board).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

import agentkit
from agentkit.config import OpponentConfig
from agentkit.errors import UserError
from agentkit.opponents import clone_env, game_over, is_done, legal_moves

FULL_DEPTH = 9


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

    def best_moves(self, env: Any, agent: str) -> np.ndarray:
        """Every legal move of ``agent`` that the search values highest; ``act`` plays one of them at random."""
        # one table per game, shared by every searcher of it: a position's value does not depend on who asks
        self._table = _TABLES.setdefault(type(env.unwrapped), {})
        moves = legal_moves(env, agent)
        values = np.array([self._child(env, agent, move, self.depth - 1, -np.inf, np.inf) for move in moves])
        return moves[values >= values.max() - 1e-9]

    def act(self, env: Any, agent: str) -> Any:
        return int(self.rng.choice(self.best_moves(env, agent)))

    # -- the search ------------------------------------------------------------------------------------------

    def _child(self, env: Any, me: str, move: Any, depth: int, alpha: float, beta: float) -> float:
        child = clone_env(env)
        child.step(move)
        gained = float(child.rewards.get(me, 0.0))
        return gained + self._value(child, me, depth, alpha - gained, beta - gained)

    def _value(self, env: Any, me: str, depth: int, alpha: float, beta: float) -> float:
        """``me``'s reward from here on with best play by everyone, looking ``depth`` moves ahead."""
        self.nodes += 1
        while env.agents and not game_over(env) and is_done(env, env.agent_selection):
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




class RandomConfig(OpponentConfig):
    """A legal move uniformly at random."""


class MinimaxConfig(OpponentConfig):
    """Alpha-beta search ``depth`` moves ahead (``minimax:DEPTH``)."""

    argument: ClassVar[str | None] = "depth"
    depth: int = Field(FULL_DEPTH, ge=1, description="Moves searched ahead (9: all of tic-tac-toe).")


@agentkit.hookimpl
def agentkit_register_opponents(register):
    register("random", lambda config, seed: RandomOpponent(seed), RandomConfig,
             "A legal move uniformly at random (the agent's action mask).")
    register("minimax", lambda config, seed: MinimaxOpponent(config.depth, seed), MinimaxConfig,
             "Alpha-beta search over env copies, minimax:DEPTH moves ahead (default 9: perfect tic-tac-toe).")


__all__ = ["FULL_DEPTH", "MinimaxConfig", "MinimaxOpponent", "RandomConfig", "RandomOpponent"]
