"""PPO with the ``multi_discrete`` head on the multi-discrete Dungeon, next to the masked discrete Dungeon.

Trains ``examples/dungeon-multidiscrete-ppo.yaml`` (``agentkit/Dungeon-v0`` with
``env.kwargs.action_space: multi_discrete``: one move and one interaction per step) through the CLI, then
plays 200 fresh dungeons greedily (mode) and sampling, and reports the return, the success rate and the
share of steps with a masked branch value (must be 0). The masked discrete run of
``benchmarks/dungeon_mask_vs_penalty.py`` is played with the same protocol when its run dir exists.

    python benchmarks/dungeon_multidiscrete.py                   # 500k steps, seed 0
    python benchmarks/dungeon_multidiscrete.py --analyze-only    # re-play existing run dirs

Appends the table to benchmarks/RESULTS.md (``--no-results`` to skip); ``--gif FILE`` records a sampled
episode of the multi-discrete agent.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dungeon-multidiscrete-ppo.yaml"
DISCRETE_RUN = ROOT / "benchmarks" / "runs" / "dungeon_mask_vs_penalty" / "masked-seed0"


def training_figures(run_dir: Path) -> dict[str, float]:
    """Final training return (mean over the last 10% of iterations), median steps/s, total steps."""
    returns, speed, steps = [], [], 0
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("charts/episode_return"):
                returns.append(float(row["charts/episode_return"]))
            if row.get("time/steps_per_second"):
                speed.append(float(row["time/steps_per_second"]))
            steps = int(float(row["step"]))
    tail = returns[-max(1, len(returns) // 10):]
    return {"final_return": float(np.mean(tail)), "steps_per_s": float(np.median(speed)), "steps": steps}


def play(run_dir: Path, episodes: int, seed: int, deterministic: bool) -> dict[str, float]:
    """Play ``episodes`` fresh dungeons (seeds 10000 + seed + i, as dungeon_mask_vs_penalty.py does)."""
    from agentkit_envs.games.dungeon import DungeonEnv

    from agentkit.evaluation import torch_act
    from agentkit.rundir import load_run

    loaded = load_run(run_dir)
    torch.manual_seed(seed)
    (artifact,) = loaded.algorithm.policies()
    act = torch_act(artifact, deterministic=deterministic)
    env = DungeonEnv(**dict(loaded.config.env.kwargs))
    returns, successes, lengths, illegal, steps = [], [], [], 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed + i)
        total, done, length = 0.0, False, 0
        while not done:
            mask = obs["action_mask"][None].astype(bool)
            action = np.asarray(act(obs["observation"][None], mask))[0]
            obs, reward, terminated, truncated, info = env.step(action if env.multi_discrete else int(action))
            illegal += int(info["illegal_action"])
            steps += 1
            length += 1
            total += reward
            done = terminated or truncated
        returns.append(total)
        successes.append(info["success"])
        lengths.append(length)
    won = [n for n, s in zip(lengths, successes, strict=True) if s]
    return {
        "return": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "success": float(np.mean(successes)),
        "win_length": float(np.mean(won)) if won else float("nan"),
        "illegal_share": illegal / max(steps, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "dungeon_multidiscrete")
    parser.add_argument("--analyze-only", action="store_true", help="skip training; play existing run dirs")
    parser.add_argument("--gif", type=Path, default=None, help="record a sampled multi-discrete episode")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    run_dir = args.out / f"seed{args.seed}-{args.steps // 1000}k"
    agentkit = [str(Path(sys.executable).with_name("agentkit"))]
    train_cmd = [*agentkit, "train", str(EXAMPLE.relative_to(ROOT)), "--set", f"algorithm.total_steps={args.steps}",
                 "--set", f"seed={args.seed}", "--run-dir", str(run_dir.relative_to(ROOT))]
    if not args.analyze_only:
        start = time.time()
        subprocess.run(train_cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"trained in {time.time() - start:.0f} s")

    runs = {"multi_discrete": run_dir}
    if DISCRETE_RUN.is_dir():
        runs["discrete (masked)"] = DISCRETE_RUN
    rows = []
    for name, rd in runs.items():
        train = training_figures(rd)
        for mode in ("greedy", "sampled"):
            r = play(rd, args.episodes, args.seed, deterministic=mode == "greedy")
            rows.append(
                f"| {name} | {train['steps']:,} | {train['final_return']:.3f} | {mode} | {r['return']:.3f} ± "
                f"{r['return_std']:.3f} | {r['success']:.0%} | {r['win_length']:.1f} | {r['illegal_share']:.1%} | "
                f"{train['steps_per_s']:.0f} |"
            )
            print(rows[-1], flush=True)
    if args.gif is not None:
        from agentkit.evaluation import evaluate_run

        for seed in range(8):  # the first seed whose sampled episode clears the dungeon
            res = evaluate_run(run_dir, episodes=1, seed=seed, deterministic=False, gif=args.gif)
            if res.lengths[0] < 128:
                print(f"gif: {args.gif} (seed {seed}, return {res.returns[0]:.2f}, {res.lengths[0]} steps)")
                break

    shown_train = [".venv/bin/agentkit", *train_cmd[1:]]
    command = "OMP_NUM_THREADS=1 .venv/bin/python " + shlex.join(
        ["benchmarks/dungeon_multidiscrete.py", *sys.argv[1:]])
    text = "\n".join([
        f"\n## Dungeon: multi-discrete actions, PPO + multi_discrete head ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n",
        f"Command: `{command}`"
        + ("" if not args.analyze_only else f" (training: `OMP_NUM_THREADS=1 {shlex.join(shown_train)}`)") + ".",
        f"Config: `{EXAMPLE.relative_to(ROOT)}`; {args.episodes} fresh dungeons per row (seeds 10000+), "
        "played with the torch policy; the discrete row replays the run dir of "
        "`benchmarks/dungeon_mask_vs_penalty.py` with the same protocol. One seed, 2 shared CPU cores.\n",
        "| run | training steps | final training return (last 10% iters) | eval actions | eval return | success "
        "| mean length of cleared episodes | steps with a masked value | training steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    print(text)
    if not args.no_results:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
