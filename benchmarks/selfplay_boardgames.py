"""Self-play on pettingzoo.classic's tic-tac-toe and connect four, judged against fixed opponents.

Trains each seed from the example config (examples/tictactoe-selfplay.yaml, examples/connect4-selfplay.yaml)
with the real trainer, then plays the deterministic policy in each seat against the game's fixed opponents
(``agentkit.matches.evaluate_against``: tic-tac-toe against perfect ``minimax`` and ``random``; connect four
against ``random``, ``minimax:2`` and ``minimax:4``), ``--episodes`` games per seat, eval seeds from 10000;
for tic-tac-toe also the exact expected rates against ``minimax`` (``minimax_exact``: every line minimax may
play, weighted by the chance its random tie-breaking plays it). ``tactics``: in games against ``random``, per
seat, the share of the policy's moves that missed an immediate win (one was there, another move was played)
and that missed a block (the move hands the opponent an immediate win that some other move would not have):
the one-move blunders behind most losses to a random player.
Prints one JSON line per seed (steps, wall clock, win/draw/loss per opponent and seat) and copies the run's
curve.png (returns per seat and the Elo panel) to benchmarks/selfplay_<game>_seed<seed>.png.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/selfplay_boardgames.py --game tictactoe --seeds 0
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/selfplay_boardgames.py --game connect4 --seeds 0 --minutes 40
    .venv/bin/python benchmarks/selfplay_boardgames.py --game tictactoe --eval-only benchmarks/runs/selfplay-tictactoe-seed0
    .venv/bin/python benchmarks/selfplay_boardgames.py --game connect4 --eval-only RUN_DIR --checkpoint step_1000448.pt

``--minutes`` stops a seed early (cleanly, through the ``agentkit_iteration_end`` hook); the line says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import agentkit
from agentkit.config import apply_overrides, load_config, read_yaml
from agentkit.errors import script_exit_code
from agentkit.host import PluginHost
from agentkit.matches import evaluate_against, load_policy
from agentkit.opponents import clone_env, game_over, legal_moves
from agentkit.trainer import train

ROOT = Path(__file__).resolve().parents[1]
GAMES = {
    "tictactoe": ("examples/tictactoe-selfplay.yaml", ["minimax", "random"]),
    "connect4": ("examples/connect4-selfplay.yaml", ["random", "minimax:2", "minimax:4"]),
}


class TimeBudget:
    """A lifecycle plugin: stops the run after ``minutes`` and prints the Elo now and then."""

    def __init__(self, minutes: float | None):
        self.deadline = None if minutes is None else time.monotonic() + 60 * minutes
        self.stopped = False

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        if iteration % 50 == 0:
            print(f"  step {step:>9,}  elo {metrics.get('selfplay/elo', float('nan')):7.1f}", flush=True)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = True
            return True
        return None


def exact_against_minimax(run_dir: Path, checkpoint: str | None = None) -> dict:
    """Tic-tac-toe: the deterministic policy's expected win/draw/loss rates per seat against full-depth
    ``minimax``, whose ties are broken uniformly at random: every line that minimax may play is walked, each
    weighted by its probability (what ``--episodes`` games estimate, without their sampling noise)."""
    from agentkit_plugins.opponents import MinimaxOpponent

    source, policy, close = load_policy(run_dir, deterministic=True, seed=0, checkpoint=checkpoint)
    search = MinimaxOpponent()
    out = {}
    try:
        for seat, me in zip(("first", "second"), source.agents, strict=False):
            memo: dict[tuple, np.ndarray] = {}

            def expected(env, me=me, memo=memo) -> np.ndarray:
                mover = env.agent_selection
                raw = env.observe(mover)
                key = (mover, np.asarray(raw["observation"]).tobytes())
                if key not in memo:
                    if mover == me:
                        moves = [policy(mover, *source.layouts[mover].split(raw))]
                    else:
                        moves = [int(m) for m in search.best_moves(env, mover)]
                    total = np.zeros(3)
                    for move in moves:
                        child = clone_env(env)
                        child.step(move)
                        if game_over(child):
                            r = float(child.rewards.get(me, 0.0))
                            total += np.array([r > 0, r == 0, r < 0], float)
                        else:
                            total += expected(child)
                    memo[key] = total / len(moves)
                return memo[key]

            env = source.make_env(None)
            env.reset(seed=0)
            win, draw, loss = (round(float(x), 4) for x in expected(env))
            out[seat] = {"win": win, "draw": draw, "loss": loss}
            env.close()
    finally:
        close()
    return out


def _winning_moves(env, agent: str) -> list[int]:
    """The legal moves that end the game at once with ``agent`` ahead."""
    moves = []
    for move in legal_moves(env, agent):
        child = clone_env(env)
        child.step(int(move))
        if game_over(child) and float(child.rewards.get(agent, 0.0)) > 0:
            moves.append(int(move))
    return moves


def _gives_away(env, move: int, me: str, other: str) -> bool:
    """Whether ``me`` playing ``move`` leaves ``other`` an immediate win."""
    child = clone_env(env)
    child.step(move)
    return not game_over(child) and bool(_winning_moves(child, other))


def tactics(run_dir: Path, games: int, checkpoint: str | None = None) -> dict:
    """Per seat, against uniformly random moves (seeded): the shares of the deterministic policy's moves that
    missed an immediate win and that missed a block, and the games lost (``losses``) and the losses with such a
    blunder in them (``losses_after_blunder``)."""
    from agentkit_plugins.opponents import RandomOpponent

    source, policy, close = load_policy(run_dir, deterministic=True, seed=0, checkpoint=checkpoint)
    out = {}
    try:
        for seat, me in zip(("first", "second"), source.agents, strict=False):
            other = next(a for a in source.agents if a != me)
            opponent = RandomOpponent(10_000)  # the shipped ``random``
            moves = missed_wins = missed_blocks = losses = blundered_losses = 0
            for game in range(games):
                env = source.make_env(None)
                env.reset(seed=10_000 + game)
                blundered = False
                while not game_over(env):
                    mover = env.agent_selection
                    if mover != me:
                        env.step(opponent.act(env, mover))
                        continue
                    move = int(policy(mover, *source.layouts[mover].split(env.observe(mover))))
                    moves += 1
                    wins = _winning_moves(env, me)
                    if wins and move not in wins:
                        missed_wins += 1
                        blundered = True
                    elif not wins and _gives_away(env, move, me, other) and any(
                            not _gives_away(env, int(m), me, other) for m in legal_moves(env, me) if int(m) != move):
                        missed_blocks += 1
                        blundered = True
                    env.step(move)
                if float(env.rewards.get(me, 0.0)) < 0:
                    losses += 1
                    blundered_losses += blundered
                env.close()
            out[seat] = {"moves": moves, "missed_win_rate": round(missed_wins / max(moves, 1), 4),
                         "missed_block_rate": round(missed_blocks / max(moves, 1), 4),
                         "losses": losses, "losses_after_blunder": blundered_losses}
    finally:
        close()
    return out


def evaluate(game: str, run_dir: Path, episodes: int, checkpoint: str | None = None) -> dict:
    out = {}
    if game == "tictactoe":
        out["minimax_exact"] = exact_against_minimax(run_dir, checkpoint)
    out["tactics"] = tactics(run_dir, episodes, checkpoint)
    for opponent in GAMES[game][1]:
        t0 = time.perf_counter()
        result = evaluate_against(run_dir, opponent, "both", episodes=episodes, seed=10_000, checkpoint=checkpoint)
        out[opponent] = {
            "win": result.win_rate, "draw": result.draw_rate, "loss": result.loss_rate,
            "seats": {s: {"win": r.win_rate, "draw": r.draw_rate, "loss": r.loss_rate}
                      for s, r in result.seats.items()},
            "eval_s": round(time.perf_counter() - t0, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", choices=sorted(GAMES), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the example's)")
    parser.add_argument("--minutes", type=float, default=None, help="stop each seed after this wall clock")
    parser.add_argument("--episodes", type=int, default=100, help="games per seat and opponent")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--tag", default="", help="suffix of the run dir and picture (e.g. --tag=-cnn)")
    parser.add_argument("--eval-only", metavar="RUN_DIR", help="only evaluate an existing run dir")
    parser.add_argument("--checkpoint", help="with --eval-only: one of the run's checkpoints (default: its latest)")
    args = parser.parse_args()

    if args.eval_only:
        result = evaluate(args.game, Path(args.eval_only), args.episodes, args.checkpoint)
        print(json.dumps({"run_dir": args.eval_only, "checkpoint": args.checkpoint, "eval": result}))
        return
    example = GAMES[args.game][0]
    for seed in args.seeds:
        budget = TimeBudget(args.minutes)
        host = PluginHost()
        host.pm.register(budget, name=f"benchmark-budget-{seed}")
        data = read_yaml(ROOT / example)
        overrides = [f"seed={seed}", "run.progress=none", *args.set]
        if args.steps:
            overrides.append(f"algorithm.total_steps={args.steps}")
        config = load_config(apply_overrides(data, overrides), host.registry)
        run_dir = ROOT / "benchmarks" / "runs" / f"selfplay-{args.game}-seed{seed}{args.tag}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        result = train(config, host, run_dir=run_dir)
        wall = time.perf_counter() - t0
        picture = ROOT / "benchmarks" / f"selfplay_{args.game}_seed{seed}{args.tag}.png"
        shutil.copyfile(run_dir / "curve.png", picture)
        print(json.dumps({
            "game": args.game, "seed": seed, "config": example, "overrides": overrides,
            "steps": int(result["step"]), "train_minutes": round(wall / 60, 1),
            "stopped_early": budget.stopped, "elo": result.get("selfplay/elo"),
            "eval": evaluate(args.game, run_dir, args.episodes), "curve": str(picture.relative_to(ROOT)),
        }), flush=True)


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "selfplay_boardgames.py"))
