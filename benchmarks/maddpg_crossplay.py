"""Cross-play of two multi-agent runs on the same two-group env: each group of one run against the other
group of the other run, beside each run against itself.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_crossplay.py RUN_A RUN_B [--episodes 500] [--seed 20000]
        [--sub-policies first|all] [--append]

The question it answers: is a group trained one way (say MADDPG with ``ensemble_size: 3``) better or worse
off against an opponent it never trained with than one trained the other way? Every pairing plays the
same episodes (reset seeds ``seed .. seed + episodes - 1``) with deterministic actions, through
``agentkit.evaluation.play_episodes``, the code ``agentkit eval`` uses. ``--append`` adds the table to
benchmarks/RESULTS.md.

``--sub-policies first`` plays sub-policy 0 of a MADDPG ensemble, as ``agentkit eval`` and the exporter do.
``--sub-policies all`` plays every combination of the two sides' sub-policies on the same episodes and
reports the mean over combinations: the expectation of the MADDPG paper's measure, where each side plays a
uniformly drawn sub-policy per episode (without the draw's noise). Runs without an ensemble have one.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from agentkit.algorithm import PolicyArtifact
from agentkit.evaluation import Act, play_episodes, torch_act
from agentkit.rundir import load_run

ROOT = Path(__file__).resolve().parents[1]


def sub_policy_acts(algorithm, artifact: PolicyArtifact, which: str) -> list[Act]:
    """One ``Act`` per sub-policy of ``artifact``'s group (``which == "all"``), or sub-policy 0 only.

    The artifact holds sub-policy 0; the others are read from the MADDPG group's ``actors`` list, which the
    plugin contract does not expose (eval and export only ever play one policy per group). Algorithms without
    one (MAPPO) have one sub-policy.
    """
    group = getattr(algorithm, "groups", {}).get(artifact.name) if which == "all" else None
    actors = getattr(group, "actors", None) or [artifact.actor]
    return [torch_act(dataclasses.replace(artifact, actor=actor)) for actor in actors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=2, type=Path, help="two run dirs of the same env")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--sub-policies", choices=["first", "all"], default="first")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()

    loaded = [load_run(run) for run in args.runs]
    acts = [
        {art.name: sub_policy_acts(run.algorithm, art, args.sub_policies) for art in run.algorithm.policies()}
        for run in loaded
    ]
    groups = list(acts[0])
    if len(groups) != 2 or set(groups) != set(acts[1]):
        parser.error(f"cross-play needs two runs with the same two groups; got {list(acts[0])} and {list(acts[1])}")
    names = [run.name for run in args.runs]
    env = loaded[0].env

    rows = []
    for first in (0, 1):
        for second in (0, 1):  # groups[0] from run `first`, groups[1] from run `second`
            start = time.perf_counter()
            combos = list(itertools.product(acts[first][groups[0]], acts[second][groups[1]]))
            results = [
                play_episodes(env, {groups[0]: a, groups[1]: b}, episodes=args.episodes, seed=args.seed)
                for a, b in combos
            ]
            means = np.array([[r.groups[g]["mean_return"] for g in groups] for r in results]).mean(axis=0)
            rows.append(f"| {names[first]} | {names[second]} | {len(combos)} | {means[0]:.2f} | {means[1]:.2f} |")
            print(rows[-1], f"({time.perf_counter() - start:.0f}s)", flush=True)
    for run in loaded:
        run.algorithm.close()

    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_crossplay.py " + shlex.join(sys.argv[1:])
    table = "\n".join(
        [
            f"Cross-play, deterministic, {args.episodes} episodes per sub-policy pairing (reset seeds from "
            f"{args.seed}), sub-policies: {args.sub_policies}. Command: `{command}`",
            "",
            f"| {groups[0]} from | {groups[1]} from | sub-policy pairings | {groups[0]} return | {groups[1]} return |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
