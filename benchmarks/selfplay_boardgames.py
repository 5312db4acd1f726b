"""Self-play on pettingzoo.classic's tic-tac-toe and connect four, judged against fixed opponents.

Trains each seed from the example config (examples/tictactoe-selfplay.yaml, examples/connect4-selfplay.yaml)
with the real trainer, then plays the deterministic policy in each seat against the game's fixed opponents
(``agentkit.matches.evaluate_against``: tic-tac-toe against perfect ``minimax`` and ``random``; connect four
against ``random``, ``minimax:2`` and ``minimax:4``), ``--episodes`` games per seat, eval seeds from 10000.
Prints one JSON line per seed (steps, wall clock, win/draw/loss per opponent and seat) and copies the run's
curve.png (returns per seat and the Elo panel) to benchmarks/selfplay_<game>_seed<seed>.png.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/selfplay_boardgames.py --game tictactoe --seeds 0
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/selfplay_boardgames.py --game connect4 --seeds 0 --minutes 40
    .venv/bin/python benchmarks/selfplay_boardgames.py --game tictactoe --eval-only benchmarks/runs/selfplay-tictactoe-seed0

``--minutes`` stops a seed early (cleanly, through the ``agentkit_iteration_end`` hook); the line says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import agentkit
from agentkit.config import apply_overrides, load_config, read_yaml
from agentkit.host import PluginHost
from agentkit.matches import evaluate_against
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


def evaluate(game: str, run_dir: Path, episodes: int) -> dict:
    out = {}
    for opponent in GAMES[game][1]:
        t0 = time.perf_counter()
        result = evaluate_against(run_dir, opponent, "both", episodes=episodes, seed=10_000)
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
    parser.add_argument("--eval-only", metavar="RUN_DIR", help="only evaluate an existing run dir")
    args = parser.parse_args()

    if args.eval_only:
        print(json.dumps({"run_dir": args.eval_only, "eval": evaluate(args.game, Path(args.eval_only), args.episodes)}))
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
        run_dir = ROOT / "benchmarks" / "runs" / f"selfplay-{args.game}-seed{seed}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        result = train(config, host, run_dir=run_dir)
        wall = time.perf_counter() - t0
        picture = ROOT / "benchmarks" / f"selfplay_{args.game}_seed{seed}.png"
        shutil.copyfile(run_dir / "curve.png", picture)
        print(json.dumps({
            "game": args.game, "seed": seed, "config": example, "overrides": overrides,
            "steps": int(result["step"]), "train_minutes": round(wall / 60, 1),
            "stopped_early": budget.stopped, "elo": result.get("selfplay/elo"),
            "eval": evaluate(args.game, run_dir, args.episodes), "curve": str(picture.relative_to(ROOT)),
        }), flush=True)


if __name__ == "__main__":
    main()
