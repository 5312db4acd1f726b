"""Masked PPO vs unmasked PPO with an illegal-move penalty on agentkit/Dungeon-v0.

Both runs use examples/dungeon-masked-ppo.yaml; the baseline adds env.kwargs.illegal_move_penalty, so every
action is allowed (all-ones mask) and an illegal one is a no-op costing that much reward. The two trainings
run side by side (one process each). The claim checked (issue 6): masked PPO reaches the penalty baseline's
final return in at most 50% of the steps.

    python benchmarks/dungeon_mask_vs_penalty.py                  # 400k steps each, seed 0
    python benchmarks/dungeon_mask_vs_penalty.py --analyze-only   # re-read the run dirs, re-plot

Curves are the training ``charts/episode_return`` (mean return of the episodes that ended in an iteration)
smoothed over ``--smooth`` iterations; the baseline's curve includes its penalties. The "final return" is the
mean of the baseline's last 10% of iterations. After training, both policies play 200 fresh dungeons in
their own env variant, greedily (mode) and sampling; the penalty-free game return, the success rate and
the share of illegal actions are reported. Writes benchmarks/dungeon_mask_vs_penalty.png and appends to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from curves import read_curve, smooth  # benchmarks/curves.py (scripts run from benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dungeon-masked-ppo.yaml"


def play(run_dir: Path, penalty: float | None, episodes: int, seed: int, deterministic: bool) -> dict[str, float]:
    """Play ``episodes`` fresh dungeons: penalty-free return, success rate, illegal-action share."""
    from agentkit_envs.games.dungeon import DungeonEnv

    from agentkit.evaluation import torch_act
    from agentkit.rundir import load_run

    loaded = load_run(run_dir)
    torch.manual_seed(seed)
    act = torch_act(loaded.algorithm.policies()[0], deterministic=deterministic)
    kwargs = dict(loaded.config.env.kwargs)
    env = DungeonEnv(**kwargs)
    game_returns, successes, illegal, actions = [], [], 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed + i)
        total, done = 0.0, False
        while not done:
            mask = obs["action_mask"][None].astype(bool)
            action = int(np.asarray(act(obs["observation"][None], mask)).reshape(-1)[0])
            obs, reward, terminated, truncated, info = env.step(action)
            if info["illegal_action"]:
                illegal += 1
                reward += penalty or 0.0  # report the game's own reward, without the training penalty
            actions += 1
            total += reward
            done = terminated or truncated
        game_returns.append(total)
        successes.append(info["success"])
    return {
        "return": float(np.mean(game_returns)),
        "return_std": float(np.std(game_returns)),
        "success": float(np.mean(successes)),
        "illegal_share": illegal / max(actions, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--penalty", type=float, default=0.05, help="illegal_move_penalty of the baseline")
    parser.add_argument("--smooth", type=int, default=20, help="smoothing window, in iterations")
    parser.add_argument("--episodes", type=int, default=200, help="greedy evaluation episodes per policy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "dungeon_mask_vs_penalty")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "dungeon_mask_vs_penalty.png")
    parser.add_argument("--analyze-only", action="store_true", help="skip training; analyse existing run dirs")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    runs = {"masked": args.out / f"masked-seed{args.seed}", "penalty": args.out / f"penalty-seed{args.seed}"}
    extra = {"masked": [], "penalty": ["--set", f"env.kwargs.illegal_move_penalty={args.penalty}"]}
    wall = float("nan")
    if not args.analyze_only:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = {}
        start = time.time()
        for name, run_dir in runs.items():
            cmd = [
                sys.executable, "-m", "agentkit.cli", "train", str(EXAMPLE), "--run-dir", str(run_dir),
                "--set", f"algorithm.total_steps={args.steps}", "--set", f"seed={args.seed}",
                "--set", "run.progress=none", "--set", "run.tensorboard=false", *extra[name],
            ]
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            print("$", shlex.join(cmd), flush=True)
            procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT)
        for name, proc in procs.items():
            if proc.wait() != 0:
                print(f"{name} run failed with exit code {proc.returncode}", file=sys.stderr)
                return 1
        wall = time.time() - start

    curves = {name: read_curve(run_dir) for name, run_dir in runs.items()}
    smoothed = {name: smooth(ret, args.smooth) for name, (_, ret, _) in curves.items()}
    p_steps, _, _ = curves["penalty"]
    tail = max(1, len(p_steps) // 10)
    target = float(np.mean(curves["penalty"][1][-tail:]))
    m_steps = curves["masked"][0]
    reached = np.flatnonzero(smoothed["masked"] >= target)
    reach_step = int(m_steps[reached[0]]) if len(reached) else None
    total = int(p_steps[-1])
    ratio = reach_step / total if reach_step is not None else float("inf")
    final = {name: float(np.mean(ret[-tail:])) for name, (_, ret, _) in curves.items()}

    evals = {
        (name, mode): play(run_dir, args.penalty if name == "penalty" else None, args.episodes, args.seed, mode == "greedy")
        for name, run_dir in runs.items()
        for mode in ("greedy", "sampled")
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"masked": "tab:blue", "penalty": "tab:orange"}
    labels = {"masked": "masked PPO", "penalty": f"PPO, no mask, illegal move penalty {args.penalty}"}
    for name, (steps, ret, _) in curves.items():
        ax.plot(steps, ret, color=colors[name], alpha=0.2, linewidth=0.8)
        ax.plot(steps, smoothed[name], color=colors[name], label=labels[name])
    ax.axhline(target, color="tab:orange", linestyle="--", linewidth=0.8, label=f"baseline final return {target:.2f}")
    if reach_step is not None:
        ax.axvline(reach_step, color="tab:blue", linestyle=":", linewidth=0.8,
                   label=f"masked reaches it at {reach_step:,} steps ({ratio:.0%})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return (training)")
    ax.set_title(f"agentkit/Dungeon-v0: action masking vs illegal-move penalty (PPO, seed {args.seed})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)

    verdict = "PASS" if ratio <= 0.5 else "FAIL"
    lines = [
        f"baseline (penalty {args.penalty}) final training return: {target:.3f} (last {tail} iterations)",
        f"masked final training return: {final['masked']:.3f}",
        f"masked reaches the baseline's final return at step {reach_step} of {total} "
        f"({ratio:.1%}; claim: <= 50%: {verdict})",
    ]
    for (name, mode), ev in evals.items():
        lines.append(
            f"{name}: {mode} eval on {args.episodes} new dungeons: game return {ev['return']:.3f} ± {ev['return_std']:.3f}, "
            f"success {ev['success']:.1%}, illegal actions {ev['illegal_share']:.1%}, "
            f"training speed {curves[name][2]:.0f} steps/s"
        )
    print("\n".join(lines))
    if not args.no_results:
        command = "python benchmarks/dungeon_mask_vs_penalty.py " + shlex.join(sys.argv[1:])
        rows = "\n".join(
            f"| {name} | {final[name]:.3f} | {mode} | {ev['return']:.3f} ± {ev['return_std']:.3f} | "
            f"{ev['success']:.0%} | {ev['illegal_share']:.1%} | {curves[name][2]:.0f} |"
            for (name, mode), ev in evals.items()
        )
        text = (
            f"\n## Dungeon: masked PPO vs illegal-move penalty ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` ({args.steps:,} steps per run, seed {args.seed}, both runs "
            f"side by side on this 2-core shared machine{'' if np.isnan(wall) else f', {wall / 60:.1f} min wall'}).\n"
            f"Config: `examples/dungeon-masked-ppo.yaml`; baseline `--set env.kwargs.illegal_move_penalty={args.penalty}`.\n"
            f"Plot: `{args.plot.resolve().relative_to(ROOT) if args.plot.resolve().is_relative_to(ROOT) else args.plot}`.\n\n"
            f"| run | final training return (last 10% iters) | eval actions | eval game return ({args.episodes} new "
            f"dungeons) | success | illegal actions | training steps/s |\n|---|---|---|---|---|---|---|\n{rows}\n\n"
            f"Masked PPO reaches the baseline's final training return ({target:.3f}) at step "
            f"{reach_step if reach_step is not None else 'never'} of {total:,} ({ratio:.1%} of the steps): "
            f"**{verdict}** for the claim \"≤ 50%\". (Training returns of the baseline include its penalties; "
            f"the eval column is the game's own reward.)\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
