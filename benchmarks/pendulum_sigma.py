"""PPO on Pendulum-v1 with the gaussian head's sigma types (issue 3: every sigma type trains).

Runs examples/pendulum-ppo.yaml once per variant, one after the other (the CPU is shared), then plays 20
greedy episodes of each trained policy, prints a table and appends it to benchmarks/RESULTS.md with the
exact commands. Reference: rl-baselines3-zoo PPO Pendulum-v1 reaches -172 ± 104 at 100k steps with gSDE.

    python benchmarks/pendulum_sigma.py                     # 100k steps per variant, seed 0
    python benchmarks/pendulum_sigma.py --steps 50000 --variants independent
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTKIT = str(ROOT / ".venv" / "bin" / "agentkit")
VARIANTS = {
    "independent": ["policy.head.sigma=independent"],
    "state_conditioned": ["policy.head.sigma=state_conditioned"],
    "fixed-decay": ["policy.head.sigma=fixed", "policy.head.init_std=1.0", "policy.head.final_std=0.1"],
    "independent-squash": ["policy.head.sigma=independent", "policy.head.squash=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for name in args.variants:
        run_dir = ROOT / "benchmarks" / "runs" / f"pendulum-{name}-seed{args.seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = [
            f"algorithm.total_steps={args.steps}",
            f"seed={args.seed}",
            "run.progress=none",
            *VARIANTS[name],
        ]
        train = [AGENTKIT, "train", "examples/pendulum-ppo.yaml", "--run-dir", str(run_dir.relative_to(ROOT))]
        for item in sets:
            train += ["--set", item]
        start = time.time()
        subprocess.run(train, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.time() - start
        evaluate = [
            AGENTKIT,
            "eval",
            str(run_dir.relative_to(ROOT)),
            "--episodes",
            str(args.episodes),
            "--json",
        ]
        result = json.loads(
            subprocess.run(evaluate, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
        )
        rows.append((name, result["mean_return"], result["std_return"], seconds, shlex.join(train[1:])))
        print(
            f"{name:20s} {result['mean_return']:9.1f} ± {result['std_return']:6.1f}   {seconds:6.0f} s",
            flush=True,
        )
    lines = [
        f"\n## Pendulum-v1 PPO, gaussian head sigma types "
        f"({dt.date.today()}, {args.steps} steps, seed {args.seed})",
        "",
        f"Greedy eval over {args.episodes} episodes "
        f"(`agentkit eval RUN_DIR --episodes {args.episodes} --json`). "
        "Reference: rl-zoo PPO + gSDE -172 ± 104 at 100k. Wall time on the shared 2-core machine.",
        "",
        "| variant | eval return | train wall s | command |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {m:.1f} ± {s:.1f} | {t:.0f} | `agentkit {c}` |" for n, m, s, t, c in rows]
    lines.append(
        "\nProduced by `python benchmarks/pendulum_sigma.py "
        + shlex.join([f"--steps={args.steps}", f"--seed={args.seed}", "--variants", *args.variants])
        + "`."
    )
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
