"""MADDPG on mpe2: simple_spread_v3 (discrete and continuous actions) and simple_adversary_v3.

Trains from the example configs, prints the training curve, then evaluates the deterministic actors
(``mode()``) against a uniformly random policy on the same seeds, and appends a row to
benchmarks/RESULTS.md with the exact command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_spread.py --variant discrete --steps 1500000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_spread.py --variant continuous --steps 1500000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_spread.py --variant adversary --steps 500000
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agentkit.algorithm import BuildContext
from agentkit.config import apply_overrides, load_config, read_yaml
from agentkit.errors import script_exit_code
from agentkit.host import PluginHost
from agentkit.seeding import seed_everything
from agentkit.spaces import HybridSpace

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "discrete": ("examples/spread-maddpg.yaml", []),
    "continuous": ("examples/spread-maddpg-continuous.yaml", []),
    "adversary": (
        "examples/spread-maddpg.yaml",
        ["env.module=mpe2.simple_adversary_v3", "env.kwargs={N: 2, max_cycles: 25, continuous_actions: false}"],
    ),
    # the shipped team game (hybrid actions, shoot masked while reloading) against its scripted red team
    "arena": (
        "examples/spread-maddpg.yaml",
        [
            "env.module=agentkit_envs.games.team_arena",
            "env.kwargs={team_size: 2, opponent: scripted}",
            "algorithm.critic_input=state",
        ],
    ),
}


def random_actions(space, mask, rows: int, rng: np.random.Generator):
    """Uniformly random actions for ``rows`` agents, honouring a discrete / hybrid type mask."""
    masks = None if mask is None else np.asarray(mask).reshape(rows, -1).astype(np.int8)
    if isinstance(space, HybridSpace):
        picks = [space.sample(mask=None if masks is None else masks[i]) for i in range(rows)]
        return np.array([k for k, _ in picks], np.int64), np.stack([p for _, p in picks]).astype(np.float32)
    if hasattr(space, "n"):
        if masks is None:
            return rng.integers(0, space.n, size=rows)
        return np.array([rng.choice(np.flatnonzero(m)) for m in masks], np.int64)
    return np.stack([space.sample() for _ in range(rows)])


def play(venv, policies, episodes: int, seed: int) -> tuple[list[float], dict[str, list[float]]]:
    """Mean per-agent returns (and per group) of ``episodes`` episodes; a group missing from ``policies`` (all
    of them when it is None) acts uniformly at random."""
    obs = venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    groups: dict[str, list[float]] = {g: [] for g in venv.groups}
    while len(returns) < episodes:
        actions = {}
        for g, spec in venv.groups.items():
            o = obs[g]
            n, a = o.alive.shape
            if policies is None or g not in policies:
                actions[g] = random_actions(spec.action_space, o.mask, n * a, rng)
                continue
            art = policies[g]
            x = torch.as_tensor(o.obs.reshape(n * a, -1), dtype=torch.float32)
            mask = None if o.mask is None else torch.as_tensor(o.mask.reshape(n * a, -1))
            with torch.no_grad():
                act = art.actor(x, mask).mode()  # env-major rows: the actor appends the agent ids
                outs = {k: v.numpy() for k, v in art.actor.head.env_outputs(act).items()}
            actions[g] = art.actor.head.to_env(outs)
        tr = venv.step(actions)
        returns += tr.episode_returns
        for g, r in tr.group_returns.items():
            groups[g] += r
        obs = {g: t.next for g, t in tr.groups.items()}
    return returns[:episodes], {g: r[:episodes] for g, r in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(CONFIGS), default="discrete")
    parser.add_argument("--steps", type=int, default=1_500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop training after this wall-clock budget, then evaluate"
    )
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250_000, help="quick deterministic eval interval")
    parser.add_argument("--set", action="append", default=[], help="extra dotted.key=value overrides")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    path, overrides = CONFIGS[args.variant]
    overrides = [*overrides, f"algorithm.total_steps={args.steps}", f"seed={args.seed}", *args.set]
    host = PluginHost(modules=["agentkit_envs.pettingzoo_env", "agentkit_plugins.heads.hybrid"])  # a no-op once it is a built-in
    config = load_config(apply_overrides(read_yaml(ROOT / path), overrides), host.registry)
    seed_everything(config.seed, 1)  # what the trainer does before it builds an algorithm (the initial weights)
    env = host.registry.get("env", config.env.plugin).factory(config.env)
    algo = host.registry.get("algorithm", config.algorithm.plugin).factory(
        config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu"))
    )
    start = time.perf_counter()
    window: list[float] = []
    next_print = 0
    next_eval = args.eval_every
    budget_s = args.max_minutes * 60 if args.max_minutes else math.inf
    while algo.steps_done < config.algorithm.total_steps and time.perf_counter() - start < budget_s:
        metrics = algo.iterate()
        if "charts/episode_return" in metrics:
            window.append(metrics["charts/episode_return"])
        if algo.steps_done >= next_print:
            elapsed = time.perf_counter() - start
            recent = np.mean(window[-8:]) if window else float("nan")
            print(
                f"{algo.steps_done:>9} steps  {elapsed:7.0f}s  {algo.steps_done / elapsed:6.0f} steps/s  "
                f"train return (recent) {recent:7.2f}  critic loss {metrics.get('losses/critic', float('nan')):.3f}",
                flush=True,
            )
            next_print += 50_000
        if algo.steps_done >= next_eval:
            quick, _ = play(env.make_vec(8, seed=20_000), {a.name: a for a in algo.policies()}, 24, seed=20_000)
            print(f"{algo.steps_done:>9} steps  deterministic eval (24 episodes) {np.mean(quick):.2f}", flush=True)
            next_eval += args.eval_every
    wall = time.perf_counter() - start
    arts = {a.name: a for a in algo.policies()}
    eval_env = env.make_vec(8, seed=10_000 + args.seed)
    trained, trained_groups = play(eval_env, arts, args.eval_episodes, seed=10_000 + args.seed)
    rand, rand_groups = play(eval_env, None, args.eval_episodes, seed=10_000 + args.seed)
    # Each group's own baseline: the same group acting at random against the other groups' trained policies
    # (for simple_adversary, random good agents vs the trained adversary).
    alone = {
        g: play(eval_env, {h: a for h, a in arts.items() if h != g}, args.eval_episodes, seed=10_000 + args.seed)[1][g]
        for g in trained_groups
    } if len(trained_groups) > 1 else {}
    algo.close()

    line = (
        f"maddpg {args.variant} seed {args.seed}: {algo.steps_done} of {config.algorithm.total_steps} steps "
        f"{'(stopped by --max-minutes) ' if algo.steps_done < config.algorithm.total_steps else ''}in {wall:.0f}s "
        f"({algo.steps_done / wall:.0f} steps/s); deterministic eval ({args.eval_episodes} episodes) mean per-agent "
        f"return {np.mean(trained):.2f} ± {np.std(trained):.2f}; random {np.mean(rand):.2f} ± {np.std(rand):.2f}"
    )
    per_group = "; ".join(
        f"{g}: {np.mean(trained_groups[g]):.2f} (all random {np.mean(rand_groups[g]):.2f}"
        + (f", {g} random vs the trained others {np.mean(alone[g]):.2f}" if g in alone else "") + ")"
        for g in trained_groups
    )
    print(line)
    print("per group:", per_group)
    if not args.no_record:
        command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maddpg_spread.py " + shlex.join(sys.argv[1:])
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(
                f"\n- MADDPG {args.variant} (`{path}`, overrides {overrides}): {line}. Per group: {per_group}. "
                f"Machine: 2 CPU cores shared with other jobs. Command: `{command}`\n"
            )


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "maddpg_spread.py"))
