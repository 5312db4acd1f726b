"""Self-play: pools of frozen snapshots of the learner, and Elo ratings, for symmetric and asymmetric games.

    algorithm: {plugin: mappo, self_play: {save_steps: 20000, window: 10, play_against_latest_ratio: 0.5,
                                           swap_steps: 10000}}

One policy (a group whose agents share parameters, e.g. tic-tac-toe's ``player_1`` and ``player_2``) plays
every seat. ML-Agents' ghost-trainer knobs:

- every ``save_steps`` env steps the learner's actor is copied into the pool (a frozen snapshot, rated with
  the learner's Elo of that moment); the pool keeps the newest ``window`` snapshots, and starts with the
  untrained policy;
- each env copy plays one opponent at a time: with probability ``play_against_latest_ratio`` the latest
  policy itself (every seat is the learner and learns), otherwise a snapshot drawn uniformly from the pool,
  which plays every seat but the learner's; a frozen seat acts but never learns (its steps are not
  ``valid``). A copy draws a new opponent at the first game start after ``swap_steps`` env steps (its own),
  and the learner changes seat every game, so it plays first and second equally.

**A team as a seat.** A parallel team game played by one policy (Team Arena with ``frame: team`` and one group
of all four agents) names its seats, ``seats: {blue: [blue_0, blue_1], red: [red_0, red_1]}``: the learner
plays every agent of one seat, the copy's opponent all the others', and the seat changes every game as
above. Such an env reports no per-agent returns, so the seats' returns are summed here from each step's
rewards.

**Rating.** Elo from the game results: the learner's seat's mean per-agent return against the best other
seat's (higher wins; pettingzoo's board games give +1 / 0 / −1). After each game against a snapshot both
ratings move by ``elo_k * (score - expected)`` in opposite directions (as ML-Agents does); games against the
latest policy leave it unchanged (they are against itself). Everything here, pool weights included, is in
``state_dict`` (tensors and plain data), so a resumed run keeps its pool and its rating.

**Metrics are per side.** The mean return over the seats (``charts/episode_return``), always 0 in a
zero-sum game, is left out of a self-play run's metrics; each seat's own return
(``charts/<agent>/episode_return``) and the win/draw/loss rates per seat are what the run logs and plots.

**Fixed opponents.** With ``eval_opponents`` (``random``, ``minimax:2``, an ``.onnx``…), every
``eval_every_steps`` the learner (deterministic) plays ``eval_games`` games per seat against each, logged as
``eval/<opponent>/win_rate`` (and per seat, ``eval/<opponent>/<agent>/win_rate``); each fixed opponent holds
an Elo rating on the same scale (starting at ``initial_elo``), and these games move both ratings like pool
games do, so ``selfplay/elo`` is the learner's rating against its pool and the fixed opponents together.

**Asymmetric games** (``TeamSelfPlay``): when the run builds one policy per env group (Team Arena's ``blue``
and ``red``, mpe2 simple_tag's ``adversary`` and ``agent``), each group is a *side* with a pool of its own
snapshots and its own rating. One side learns at a time, the first group first, and the next side takes over
every ``team_change`` env steps (ML-Agents' ghost trainer); every ``save_steps`` the learning side's actor
joins its pool. In each env copy every other side is played by its latest policy (with probability
``play_against_latest_ratio``: its current weights, which do not change while it does not learn) or a
snapshot drawn from its pool, re-drawn at the first game start after ``swap_steps``; a side that is not
learning acts (sampling) but its steps are never ``valid``. A game's result for a side compares its mean
per-agent return with the other side's (higher wins; in a zero-sum game such as Team Arena: the sign of its
return), and moves the learning side's rating and its opponent's (the other side's current rating when its
latest policy played, else that snapshot's) by ``elo_k * (score - expected)``. The cross-side mean return
(``charts/episode_return``) is left out; each side's own (``charts/<side>/episode_return``) stays.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from agentkit.config import StrictModel
from agentkit.environment import MultiAgentTransition
from agentkit.policy import Actor
from agentkit.runlog import RETURN_METRIC

if TYPE_CHECKING:
    from agentkit.registry import Registry


class SelfPlayConfig(StrictModel):
    """Self-play against a pool of the learner's snapshots (agentkit/selfplay.py)."""

    save_steps: int = Field(20_000, ge=1, description="Env steps between snapshots of the learner into the pool.")
    window: int = Field(10, ge=1, description="How many of the newest snapshots the pool keeps.")
    play_against_latest_ratio: float = Field(
        0.5, ge=0, le=1, description="Chance that a copy's opponent is the latest policy itself (else a snapshot)."
    )
    swap_steps: int = Field(
        10_000, ge=1, description="Env steps a copy keeps its opponent before drawing a new one (at a game start)."
    )
    team_change: int | None = Field(
        None, ge=1, description="Asymmetric games: env steps one side learns before the next side does "
        "(default: 5 x save_steps, as ML-Agents).",
    )
    seats: dict[str, list[str]] | None = Field(
        None, description="One policy playing a parallel team game (Team Arena with frame: team): the agents of "
        "each seat, e.g. {blue: [blue_0, blue_1], red: [red_0, red_1]}; the learner plays one seat per game, a "
        "snapshot the others. Default: each agent is a seat (turn-based games).",
    )
    initial_elo: float = Field(1200.0, description="The learner's rating at the start.")
    elo_k: float = Field(16.0, gt=0, description="Elo K-factor: the most one game moves a rating.")
    eval_opponents: list[str] = Field(
        default_factory=list,
        description="Fixed opponents (agentkit eval --opponent specs: random, minimax:2, FILE.onnx) the learner "
        "plays every eval_every_steps, deterministic, in each seat; their results move the Elo too.",
    )
    eval_every_steps: int = Field(50_000, ge=1, description="Env steps between games against eval_opponents.")
    eval_games: int = Field(10, ge=1, description="Games per seat against each eval opponent.")


def elo_expected(rating: float, other: float) -> float:
    """The expected score of ``rating`` against ``other``."""
    return 1.0 / (1.0 + 10.0 ** ((other - rating) / 400.0))


def compare_returns(own: float, other: float) -> float:
    """A side's score from its mean per-agent return and the other side's: 1 (higher), 0.5 (equal), 0."""
    return 1.0 if own > other else 0.0 if own < other else 0.5


LATEST = -1


class SnapshotPool:
    """Frozen copies of one actor, oldest first; the newest ``window`` are kept. ``entries[k]`` is
    ``{"step", "elo", "actor"}`` (the step it was taken at, its rating, its weights: tensors), ``actors[k]``
    the frozen ``Actor`` that plays it."""

    def __init__(self, actor: Actor, window: int):
        self.actor, self.window = actor, window
        self.entries: list[dict[str, Any]] = []
        self.actors: list[Actor] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, step: int, elo: float) -> int:
        """Copy the actor in, rated ``elo``; return how many of the oldest snapshots left the pool."""
        state = {k: v.detach().clone() for k, v in self.actor.state_dict().items()}
        self._append({"step": int(step), "elo": float(elo), "actor": state})
        overflow = max(len(self.entries) - self.window, 0)
        del self.entries[:overflow], self.actors[:overflow]
        return overflow

    def _append(self, entry: dict[str, Any]) -> None:
        frozen = copy.deepcopy(self.actor)
        frozen.load_state_dict(entry["actor"])
        frozen.requires_grad_(False)
        self.entries.append(entry)
        self.actors.append(frozen)

    def mean_elo(self) -> float:
        return float(np.mean([p["elo"] for p in self.entries]))

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"step": p["step"], "elo": p["elo"], "actor": p["actor"]} for p in self.entries]

    def load_state_dict(self, entries: list[dict[str, Any]]) -> None:
        self.entries, self.actors = [], []
        for entry in entries:
            self._append({"step": int(entry["step"]), "elo": float(entry["elo"]), "actor": entry["actor"]})

    @torch.no_grad()
    def play(self, opponent: np.ndarray, actor_in: Tensor, mask: Tensor | None, action: Tensor,
             outputs: dict[str, Tensor], agent_id: Tensor | None) -> None:
        """Overwrite the rows of ``action`` and ``outputs`` (``[rows, ...]``) whose ``opponent`` entry is a pool
        index (not ``LATEST``) with that snapshot's choice (sampled, as the learner's are); ``actor_in``,
        ``mask`` and ``agent_id`` are the rows' actor inputs."""
        for k in np.unique(opponent[opponent != LATEST]):
            rows = torch.as_tensor(opponent == k)
            snapshot = self.actors[int(k)]
            dist = snapshot(actor_in[rows], None if mask is None else mask[rows],
                            None if agent_id is None else agent_id[rows])
            chosen, outs = snapshot.head.choose(dist)
            action[rows] = chosen
            for key, value in outs.items():
                outputs[key][rows] = value


def _elo_game(rating: float, other: float, score: float, k: float) -> float:
    """The change of ``rating`` (and minus that of ``other``) after a game that scored ``score``."""
    return k * (score - elo_expected(rating, other))


class SelfPlay:
    """Symmetric self-play: the pool, the opponent of each env copy, and the Elo rating, for one shared
    policy of ``agents`` (every seat of the group ``group``).

    ``frozen(group)`` ``[N, A]`` (bool) marks the seats a snapshot plays in each copy now; ``act`` replaces the
    learner's outputs on them; ``observe`` reads each step's ended games; ``maybe_snapshot`` grows the pool.
    """

    def __init__(self, config: SelfPlayConfig, actor: Actor, agents: list[str], num_envs: int, seed: int,
                 registry: Registry | None = None, group: str = "", sum_rewards: bool = False):
        """``agents``: the group's agents in slot order; ``config.seats`` (validated by the algorithm) groups
        them into seats, else each is one. ``sum_rewards``: the env reports no per-agent returns (a parallel
        game), so each game's are summed here from the group's step rewards."""
        self.config = config
        self.actor = actor
        self.agents = list(agents)
        self.seats = dict(config.seats) if config.seats else {agent: [agent] for agent in self.agents}
        self.seat_of = np.array([next(i for i, members in enumerate(self.seats.values()) if a in members)
                                 for a in self.agents])
        self._returns = np.zeros((num_envs, len(self.agents))) if sum_rewards else None  # this game's, per agent
        self.group = group
        self.num_envs = num_envs
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.elo = float(config.initial_elo)
        self.pool = SnapshotPool(actor, config.window)
        self.last_snapshot_step = 0
        self.steps = 0
        self.opponent = np.full(num_envs, LATEST, dtype=np.int64)  # pool index, or LATEST
        self.learner_seat = np.arange(num_envs) % len(self.seats)
        self.drawn_at = np.zeros(num_envs, dtype=np.int64)
        self._results: list[tuple[int, int, float]] = []  # (opponent, learner seat, score) this iteration
        self.fixed_elo = {spec: float(config.initial_elo) for spec in config.eval_opponents}
        self.registry = registry
        for spec in config.eval_opponents:  # a misspelt opponent fails now, not at the first evaluation
            self._opponent(spec, 0)
        self.last_eval_step = 0
        self._snapshot(0)
        for n in range(num_envs):
            self._draw(n)

    # -- the pool -------------------------------------------------------------------------------------------

    def _snapshot(self, step: int) -> None:
        overflow = self.pool.add(step, self.elo)
        if overflow:  # a copy whose snapshot left the pool finishes its game against the oldest one kept
            self.opponent = np.where(self.opponent == LATEST, LATEST, np.maximum(self.opponent - overflow, 0))
        self.last_snapshot_step = int(step)

    def maybe_snapshot(self, steps_done: int) -> None:
        """Copy the learner into the pool when ``save_steps`` more env steps have been done."""
        self.steps = int(steps_done)
        every = self.config.save_steps
        if steps_done // every > self.last_snapshot_step // every:
            self._snapshot(steps_done)

    def _draw(self, n: int) -> None:
        if float(torch.rand((), generator=self.generator)) < self.config.play_against_latest_ratio:
            self.opponent[n] = LATEST
        else:
            self.opponent[n] = int(torch.randint(len(self.pool), (), generator=self.generator))
        self.drawn_at[n] = self.steps

    # -- acting -----------------------------------------------------------------------------------------------

    def frozen(self, group: str) -> np.ndarray:
        """``[N, A]``: True where a snapshot, not the learner, plays the agent."""
        return (self.opponent[:, None] != LATEST) & (self.seat_of[None, :] != self.learner_seat[:, None])

    def act(self, group: str, actor_in: Tensor, mask: Tensor | None, action: Tensor, outputs: dict[str, Tensor],
            agent_id: Tensor | None = None) -> None:
        """Overwrite ``action`` and ``outputs`` (rows ``[N * A]``, env-major) on the frozen seats with each
        seat's snapshot's choice. ``actor_in`` and ``agent_id`` are what the learner's actor took
        (observations in their own shape, one-hot ids or None)."""
        frozen = self.frozen(group).reshape(-1)
        if frozen.any():
            per_row = np.where(frozen, np.repeat(self.opponent, len(self.agents)), LATEST)
            self.pool.play(per_row, actor_in, mask, action, outputs, agent_id)

    # -- results ---------------------------------------------------------------------------------------------

    def _seat_scores(self, returns: dict[str, float]) -> list[float]:
        """Each seat's score in a game: its mean per-agent return against the best other seat's."""
        means = [float(np.mean([returns[a] for a in members])) for members in self.seats.values()]
        return [compare_returns(m, max(o for j, o in enumerate(means) if j != i)) for i, m in enumerate(means)]

    def observe(self, transition: MultiAgentTransition) -> None:
        """Rate the games that ended in this step, then give those copies their next game's opponent and
        seat."""
        if self._returns is not None:
            self._returns += transition.groups[self.group].reward
        for i, n in enumerate(transition.episode_envs):
            if self._returns is None:
                returns = transition.agent_returns[i]
            else:
                returns = dict(zip(self.agents, self._returns[n].tolist(), strict=True))
                self._returns[n] = 0.0
            scores = self._seat_scores(returns)
            seat = int(self.learner_seat[n])
            opponent = int(self.opponent[n])
            if opponent == LATEST:
                self._results += [(LATEST, s, score) for s, score in enumerate(scores)]
            else:
                score = scores[seat]
                self._results.append((opponent, seat, score))
                entry = self.pool.entries[opponent]
                change = _elo_game(self.elo, entry["elo"], score, self.config.elo_k)
                self.elo += change
                entry["elo"] -= change
            self.learner_seat[n] = (seat + 1) % len(self.seats)
            if self.steps - self.drawn_at[n] >= self.config.swap_steps:
                self._draw(n)

    @staticmethod
    def per_side(metrics: dict[str, float]) -> None:
        """Drop the mean return over every seat (or side) from an iteration's ``metrics``: in a zero-sum game it
        is always 0 (the seats' own returns, ``charts/<agent>/episode_return``, and the sides',
        ``charts/<group>/episode_return``, stay), so neither TensorBoard nor curve.png shows it."""
        metrics.pop(RETURN_METRIC, None)

    def metrics(self) -> dict[str, float]:
        """``selfplay/elo``, the pool's size, and the learner's win/draw/loss rates against snapshots this
        iteration, over all seats and per seat (``selfplay/<agent>/win_rate``); ``selfplay/latest/...``: the
        seats' results in games against itself (first-move advantage)."""
        out = {"selfplay/elo": self.elo, "selfplay/pool_size": float(len(self.pool)),
               "selfplay/pool_elo": self.pool.mean_elo()}
        against = [r for r in self._results if r[0] != LATEST]
        out.update(_rates("selfplay", [s for _, _, s in against]))
        for seat, name in enumerate(self.seats):
            out.update(_rates(f"selfplay/{name}", [s for _, st, s in against if st == seat]))
            out.update(_rates(f"selfplay/latest/{name}", [s for o, st, s in self._results if o == LATEST and st == seat]))
        self._results = []
        return out

    # -- fixed opponents ---------------------------------------------------------------------------------------

    def eval_due(self, steps_done: int) -> bool:
        every = self.config.eval_every_steps
        return bool(self.config.eval_opponents) and steps_done // every > self.last_eval_step // every

    def evaluate(self, source: Any, policy: Any, steps_done: int) -> dict[str, float]:
        """Play every ``eval_opponents`` entry with ``policy`` (an ``agentkit.matches.SeatPolicy``) in each
        seat; move the ratings game by game; return the ``eval/...`` metrics."""
        from agentkit.matches import play_matches

        self.last_eval_step = int(steps_done)
        out: dict[str, float] = {}
        for spec in self.config.eval_opponents:
            opponent = self._opponent(spec, steps_done)
            result = play_matches(source, policy, opponent, episodes=self.config.eval_games, seed=steps_done)
            for seat in result.seats.values():
                for score, count in ((1.0, seat.wins), (0.5, seat.draws), (0.0, seat.losses)):
                    for _ in range(count):
                        change = _elo_game(self.elo, self.fixed_elo[spec], score, self.config.elo_k)
                        self.elo += change
                        self.fixed_elo[spec] -= change
                out.update({f"eval/{spec}/{seat.agent}/win_rate": seat.win_rate,
                            f"eval/{spec}/{seat.agent}/draw_rate": seat.draw_rate,
                            f"eval/{spec}/{seat.agent}/loss_rate": seat.loss_rate})
            out.update({f"eval/{spec}/win_rate": result.win_rate, f"eval/{spec}/draw_rate": result.draw_rate,
                        f"eval/{spec}/loss_rate": result.loss_rate, f"eval/{spec}/elo": self.fixed_elo[spec]})
        out["selfplay/elo"] = self.elo
        return out

    def _opponent(self, spec: str, seed: int) -> Any:
        from agentkit.errors import ConfigError, UserError
        from agentkit.opponents import make_opponent

        if self.registry is None:
            raise ConfigError("algorithm.self_play.eval_opponents: this SelfPlay was built without a registry.")
        try:
            return make_opponent(spec, seed, self.registry, _no_policy_opponents)
        except ConfigError:
            raise
        except UserError as exc:
            raise ConfigError(f"algorithm.self_play.eval_opponents: {exc}") from None

    # -- checkpoint -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "elo": self.elo,
            "pool": self.pool.state_dict(),
            "last_snapshot_step": self.last_snapshot_step,
            "steps": self.steps,
            "generator": self.generator.get_state(),
            "fixed_elo": dict(self.fixed_elo),
            "last_eval_step": self.last_eval_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elo = float(state["elo"])
        self.last_snapshot_step = int(state["last_snapshot_step"])
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
        # (checkpoints written before eval_opponents existed have neither entry)
        self.fixed_elo.update({k: float(v) for k, v in state.get("fixed_elo", {}).items() if k in self.fixed_elo})
        self.last_eval_step = int(state.get("last_eval_step", 0))
        self.pool.load_state_dict(state["pool"])
        # env episodes are not checkpointed: every copy starts a new game, with a new draw
        self.learner_seat = np.arange(self.num_envs) % len(self.seats)
        if self._returns is not None:
            self._returns[:] = 0.0
        for n in range(self.num_envs):
            self._draw(n)


class TeamSelfPlay:
    """Asymmetric self-play (the module docstring): ``sides`` maps each env group to the actor of its policy;
    one side learns at a time, the others play their latest policy or a snapshot from their own pool.

    Same interface as ``SelfPlay``: ``frozen(group)``, ``act``, ``observe``, ``maybe_snapshot``, ``metrics``,
    ``state_dict``.
    """

    def __init__(self, config: SelfPlayConfig, sides: dict[str, Actor], agents: dict[str, list[str]],
                 num_envs: int, seed: int):
        self.config = config
        self.sides = list(sides)
        self.num_agents = {side: len(agents[side]) for side in self.sides}
        self.num_envs = num_envs
        self.team_change = config.team_change or 5 * config.save_steps
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.elo = {side: float(config.initial_elo) for side in self.sides}
        self.pools = {side: SnapshotPool(actor, config.window) for side, actor in sides.items()}
        self.learning = 0  # index into sides
        self._learned = 0
        self.last_snapshot_step = 0
        self.last_change_step = 0
        self.steps = 0
        self.opponent = np.full((len(self.sides), num_envs), LATEST, dtype=np.int64)  # per side: pool index or LATEST
        self.drawn_at = np.zeros(num_envs, dtype=np.int64)
        self._results: list[tuple[str, float]] = []  # (side, score) of each game this iteration
        for side in self.sides:
            self.pools[side].add(0, self.elo[side])
        for n in range(num_envs):
            self._draw(n)

    @property
    def learning_side(self) -> str:
        return self.sides[self.learning]

    # -- the pools and the learning side ---------------------------------------------------------------------

    def maybe_snapshot(self, steps_done: int) -> None:
        """After an iteration: every ``save_steps`` the learning side joins its pool; every ``team_change``
        the next side learns, and every copy draws its opponents again at its next game start (until then the
        side that stopped learning plays its latest policy)."""
        self.steps = int(steps_done)
        side = self.learning_side
        self._learned = self.learning  # the side this iteration's metrics say learned
        if steps_done // self.config.save_steps > self.last_snapshot_step // self.config.save_steps:
            overflow = self.pools[side].add(steps_done, self.elo[side])
            s = self.learning
            self.opponent[s] = np.where(self.opponent[s] == LATEST, LATEST, np.maximum(self.opponent[s] - overflow, 0))
            self.last_snapshot_step = int(steps_done)
        if steps_done // self.team_change > self.last_change_step // self.team_change:
            self.learning = (self.learning + 1) % len(self.sides)
            self.last_change_step = int(steps_done)
            self.opponent[:] = LATEST
            self.drawn_at[:] = -self.config.swap_steps

    def _draw(self, n: int) -> None:
        for s, side in enumerate(self.sides):
            if s == self.learning:
                self.opponent[s, n] = LATEST
            elif float(torch.rand((), generator=self.generator)) < self.config.play_against_latest_ratio:
                self.opponent[s, n] = LATEST
            else:
                self.opponent[s, n] = int(torch.randint(len(self.pools[side]), (), generator=self.generator))
        self.drawn_at[n] = self.steps

    # -- acting -----------------------------------------------------------------------------------------------

    def frozen(self, group: str) -> np.ndarray:
        """``[N, A]``: True for every agent of a side that is not learning now (its latest policy or a
        snapshot plays it)."""
        return np.full((self.num_envs, self.num_agents[group]), group != self.learning_side)

    def act(self, group: str, actor_in: Tensor, mask: Tensor | None, action: Tensor, outputs: dict[str, Tensor],
            agent_id: Tensor | None = None) -> None:
        """Overwrite the rows (``[N * A]``, env-major) of the copies where a snapshot plays ``group``."""
        s = self.sides.index(group)
        if s != self.learning:
            per_row = np.repeat(self.opponent[s], self.num_agents[group])
            self.pools[group].play(per_row, actor_in, mask, action, outputs, agent_id)

    # -- results ---------------------------------------------------------------------------------------------

    def _rating(self, s: int, n: int) -> tuple[dict[str, Any], str]:
        """Where the rating of side ``s`` in copy ``n`` lives: (a dict, its key)."""
        side = self.sides[s]
        k = int(self.opponent[s, n])
        return (self.elo, side) if k == LATEST else (self.pools[side].entries[k], "elo")

    def observe(self, transition: MultiAgentTransition) -> None:
        """Rate the games that ended in this step (the learning side against each other side), then draw those
        copies' next opponents once ``swap_steps`` have passed."""
        for i, n in enumerate(transition.episode_envs):
            returns = {side: transition.group_returns[side][i] for side in self.sides}
            learner = self.learning_side
            for s, side in enumerate(self.sides):
                others = max(r for o, r in returns.items() if o != side)
                self._results.append((side, compare_returns(returns[side], others)))
                if s == self.learning:
                    continue
                score = compare_returns(returns[learner], returns[side])
                where, key = self._rating(s, n)
                change = _elo_game(self.elo[learner], where[key], score, self.config.elo_k)
                self.elo[learner] += change
                where[key] -= change
            if self.steps - self.drawn_at[n] >= self.config.swap_steps:
                self._draw(n)

    per_side = staticmethod(SelfPlay.per_side)

    def metrics(self) -> dict[str, float]:
        """Per side: ``selfplay/<side>/elo``, ``learning`` (1 if it learned in this iteration), ``pool_size``,
        ``pool_elo``,
        and its win/draw/loss rates over this iteration's games (``selfplay/<side>/win_rate``, ...; against
        the other sides, whoever played them)."""
        out: dict[str, float] = {}
        for s, side in enumerate(self.sides):
            pool = self.pools[side]
            out.update({f"selfplay/{side}/elo": self.elo[side], f"selfplay/{side}/learning": float(s == self._learned),
                        f"selfplay/{side}/pool_size": float(len(pool)), f"selfplay/{side}/pool_elo": pool.mean_elo()})
            out.update(_rates(f"selfplay/{side}", [score for o, score in self._results if o == side]))
        self._results = []
        return out

    # -- checkpoint -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "sides": list(self.sides),
            "elo": dict(self.elo),
            "pools": {side: pool.state_dict() for side, pool in self.pools.items()},
            "learning": self.learning,
            "last_snapshot_step": self.last_snapshot_step,
            "last_change_step": self.last_change_step,
            "steps": self.steps,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from agentkit.errors import ConfigError

        if list(state.get("sides", [])) != self.sides:
            raise ConfigError(
                f"checkpoint: its self-play sides are {state.get('sides')} but this run's are {self.sides}; the "
                "env's groups changed since it was saved."
            )
        self.elo = {side: float(state["elo"][side]) for side in self.sides}
        for side in self.sides:
            self.pools[side].load_state_dict(state["pools"][side])
        self.learning = self._learned = int(state["learning"])
        self.last_snapshot_step = int(state["last_snapshot_step"])
        self.last_change_step = int(state["last_change_step"])
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
        # env episodes are not checkpointed: every copy starts a new game, with a new draw
        self.opponent[:] = LATEST
        for n in range(self.num_envs):
            self._draw(n)


def _no_policy_opponents(path: Any) -> Any:
    from agentkit.errors import ConfigError

    raise ConfigError(
        f"algorithm.self_play.eval_opponents: {str(path)!r}: during training the fixed opponents are the "
        "registered ones (random, minimax[:DEPTH], a plugin's); play other policies with agentkit eval --opponent."
    )


def _rates(prefix: str, scores: list[float]) -> dict[str, float]:
    if not scores:
        return {}
    s = np.asarray(scores)
    return {f"{prefix}/win_rate": float((s == 1.0).mean()), f"{prefix}/draw_rate": float((s == 0.5).mean()),
            f"{prefix}/loss_rate": float((s == 0.0).mean()), f"{prefix}/games": float(len(s))}


__all__ = ["SelfPlay", "SelfPlayConfig", "SnapshotPool", "TeamSelfPlay", "compare_returns", "elo_expected"]
