"""Moving-v0 ported to JavaScript, run by Node and trained over the bridge: the learning curve, greedy play.

    python benchmarks/bridge_moving.py --seed 0 --steps 300000
    python benchmarks/bridge_moving.py --seed 0 --steps 300000 --in-process   # the Python game, same config

The claim checked (issue 23): the Node port reaches the Python Moving row's target (greedy mean return
>= 1.5; benchmarks/RESULTS.md, "Hybrid actions: Moving-v0, 1M steps") within its step budget (1M), with
examples/bridge-moving-node.yaml (the PPO settings of examples/moving-hybrid-ppo.yaml). Greedy play is
``agentkit eval RUN --episodes N`` (deterministic, through the bridge on a fresh Node instance).
``--in-process`` trains examples/moving-hybrid-ppo.yaml instead, for steps/s side by side on the same machine.
Appends a row to benchmarks/RESULTS.md unless --no-results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from curves import read_curve, smooth  # benchmarks/curves.py

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--in-process", action="store_true", help="train the Python Moving in-process instead")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "bridge_moving")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--eval-only", action="store_true", help="re-read and re-evaluate an existing run dir")
    args = parser.parse_args()

    variant = "python-in-process" if args.in_process else "node-bridge"
    example = ROOT / "examples" / ("moving-hybrid-ppo.yaml" if args.in_process else "bridge-moving-node.yaml")
    run_dir = args.out / f"{variant}-seed{args.seed}"
    cmd = [
        sys.executable, "-m", "agentkit.cli", "train", str(example), "--run-dir", str(run_dir),
        "--set", f"algorithm.total_steps={args.steps}", "--set", f"seed={args.seed}",
        "--set", "run.progress=none", "--set", "run.tensorboard=false",
    ]
    wall = float("nan")
    if not args.eval_only:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print("$", shlex.join(cmd), flush=True)
        start = time.time()
        if subprocess.call(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT) != 0:
            return 1
        wall = time.time() - start
    steps, returns, speed = read_curve(run_dir)
    smoothed = smooth(returns, 10)
    hit = np.flatnonzero(smoothed >= GOAL)
    reach = int(steps[hit[0]]) if len(hit) else None
    ev_cmd = [sys.executable, "-m", "agentkit.cli", "eval", str(run_dir), "--episodes", str(args.episodes),
              "--seed", "10000", "--json"]
    if not args.in_process:  # a run dir's launch command runs only when the command line allows it (agentkit.trust)
        ev_cmd += ["--allow-import", yaml.safe_load(example.read_text())["env"]["command"]]
    out = subprocess.run(ev_cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    ev = json.loads(out)
    greedy = float(ev["mean_return"])
    success = float(ev.get("infos", {}).get("success", float("nan")))
    verdict = "PASS" if greedy >= GOAL else "FAIL"
    summary = (f"{variant} seed {args.seed}: {int(steps[-1]):,} steps, smoothed training return >= {GOAL} first at "
               f"{reach}; greedy {greedy:.3f} ({args.episodes} episodes, success {success:.0%}); {speed:.0f} steps/s; "
               f"{wall / 60:.1f} min wall; {verdict}")
    print(summary)
    if not args.no_results:
        command = "python benchmarks/bridge_moving.py " + shlex.join(sys.argv[1:])
        text = (
            f"\n## Bridge: {'Python Moving in-process' if args.in_process else 'Node Moving over the bridge'} "
            f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` (config `{example.relative_to(ROOT)}`, {int(steps[-1]):,} steps, seed "
            f"{args.seed}{'' if wall != wall else f', {wall / 60:.1f} min wall'}, sharing the 2-core machine with other jobs).\n\n"
            f"| smoothed training return ≥ 1.5 first at | greedy return ({args.episodes} eps, `agentkit eval`) | "
            f"success | steps/s (median) |\n|---|---|---|---|\n"
            f"| {f'{reach:,}' if reach is not None else 'never'} | {greedy:.3f} | {success:.0%} | {speed:.0f} |\n\n"
            f"Greedy mean return ≥ 1.5: **{verdict}**.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
