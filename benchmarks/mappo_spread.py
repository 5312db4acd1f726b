"""MAPPO / IPPO on mpe2: simple_spread_v3 (N=3, 25 steps, discrete) and simple_speaker_listener_v4.

Trains each seed from an example config with the real trainer (run dir, checkpoints, metrics.csv,
curve.png), evaluates the deterministic policies (``dist.mode()``) with ``agentkit.evaluation.evaluate_run``
on 100 episodes, and appends one row per seed to benchmarks/RESULTS.md with the exact command, the env
steps actually trained, and the wall clock. ``--minutes`` stops a seed early (cleanly, through the
``agentkit_iteration_end`` hook) so that a shared machine's budget is respected; the row says so. It also
says so for a seed stopped with Ctrl-C or SIGTERM: the trainer saves, and the script evaluates what it has.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mappo_spread.py --env spread --seeds 0 1 2 --steps 3000000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mappo_spread.py --env speaker --seeds 0 --steps 1000000
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import agentkit
from agentkit.config import apply_overrides, load_config, read_yaml
from agentkit.errors import script_exit_code
from agentkit.evaluation import evaluate_run
from agentkit.host import PluginHost
from agentkit.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "spread": "examples/spread-mappo.yaml",
    "spread-ippo": "examples/spread-ippo.yaml",
    "speaker": "examples/speaker-listener-mappo.yaml",
}
RANDOM = {"spread": -27.0, "spread-ippo": -27.0, "speaker": -44.0}  # ../shared/REFERENCES.md


class TimeBudget:
    """A lifecycle plugin: asks the trainer to stop after ``minutes`` and prints the curve as it goes."""

    def __init__(self, minutes: float | None):
        self.deadline = None if minutes is None else time.monotonic() + 60 * minutes
        self.stopped = False

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        if iteration % 20 == 0 and "charts/episode_return" in metrics:
            print(f"  step {step:>9,}  episode_return {metrics['charts/episode_return']:8.2f}", flush=True)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = True
            return True
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(CONFIGS), default="spread")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=3_000_000)
    parser.add_argument("--minutes", type=float, default=None, help="stop each seed after this wall clock")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], help="config override dotted.key=value")
    args = parser.parse_args()
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/" + " ".join(
        shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]
    )
    rows = []
    for seed in args.seeds:
        host = PluginHost()
        budget = TimeBudget(args.minutes)
        host.pm.register(budget, name=f"benchmark-budget-{seed}")
        raw = apply_overrides(
            read_yaml(ROOT / CONFIGS[args.env]),
            [f"seed={seed}", f"algorithm.total_steps={args.steps}", "run.progress=none", *args.set],
        )
        config = load_config(raw, host.registry)
        run_dir = ROOT / "benchmarks" / "runs" / f"mappo-{args.env}-seed{seed}-{int(time.time())}"
        print(f"{args.env} seed {seed}: training {args.steps:,} steps into {run_dir}", flush=True)
        start = time.monotonic()
        result = train(config, host, run_dir=run_dir)
        wall = time.monotonic() - start
        steps = int(result["step"])
        ev = evaluate_run(run_dir, episodes=args.episodes, seed=10_000 + seed, deterministic=True)
        groups = ", ".join(f"{g} {v['mean_return']:.1f}" for g, v in ev.groups.items()) if len(ev.groups) > 1 else ""
        print(
            f"{args.env} seed {seed}: {steps:,} steps in {wall / 60:.1f} min ({steps / wall:.0f} steps/s); "
            f"deterministic eval {ev.mean_return:.2f} ± {ev.std_return:.2f} per agent over {ev.episodes} episodes"
            + (f" ({groups})" if groups else ""),
            flush=True,
        )
        stop_note = " (time budget hit)" if budget.stopped else " (stopped early)" if steps < args.steps else ""
        rows.append(
            f"| mappo {args.env} | {seed} | {steps:,}{stop_note} | "
            f"{ev.mean_return:.2f} ± {ev.std_return:.2f}{' (' + groups + ')' if groups else ''} | "
            f"{RANDOM[args.env]:.0f} | {wall / 60:.1f} min, {steps / wall:.0f} steps/s | `{command}` |"
        )
    results = ROOT / "benchmarks" / "RESULTS.md"
    header = f"| run | seed | env steps | deterministic eval, per-agent return ({args.episodes} ep.) | random | wall clock | command |\n|---|---|---|---|---|---|---|\n"
    with results.open("a") as f:
        f.write(f"\n### MAPPO ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 2 shared CPU cores)\n\n")
        f.write(header + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "mappo_spread.py"))
