"""pettingzoo pistonball_v6 from pixels with MAPPO and the CNN encoder, within this machine's memory, vs a random
policy.

    pip install -c constraints.txt pymunk      # pettingzoo's butterfly envs need it
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/images_pistonball.py --steps 48000 --seed 0

1. The memory check on the env as shipped: 20 pistons, each seeing 457x120x3 uint8 pixels, and a centralised
   critic on the 560x880x3 global state (float32). The storage is estimated before allocating; where it does
   not fit the run stops with exit 2 naming the bytes and the knobs (printed here) instead of the allocator
   traceback the issue reported.
2. Training, set up as PettingZoo's own pistonball baselines are (SuperSuit's color_reduction, resize and
   frame_stack before SB3's PPO CnnPolicy, one policy shared by the pistons), with config choices only:
   ``continuous: false`` (3 actions: down, stay, up); each piston's frame grey and 8x smaller by block means
   (``agentkit_envs.frames:ShrinkFrames``, 57x15x1) and the last 4 stacked (``StackFrames``: 4x57x15x1, the
   ball's motion); MAPPO with the critic on each piston's own frames (``centralised: false``, so no global
   state is made: ``env.state: none``), one small CNN (16-32 channels, kernels 3, strides 2, 256 features)
   shared by actor and critic and by the 20 pistons; gamma 0.95, clip 0.3 and the learning rate as that
   baseline has them.
3. Evaluation from the exported ``.onnx`` (through the recorded wrappers) on the same episodes (seeds 10,000
   on): greedy and sampled play, a uniformly random policy over the same 3 actions, and one over the shipped
   continuous actions; mean per-piston return ± its spread over the episodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

RUNS = Path(__file__).with_name("runs") / "images_pistonball"
ENV = "pettingzoo.butterfly.pistonball_v6"


def shipped_config() -> dict:
    return {"env": {"plugin": "pettingzoo", "module": "pettingzoo.butterfly.pistonball_v6", "num_envs": 1},
            "algorithm": {"plugin": "mappo", "total_steps": 1000},
            "run": {"tensorboard": False, "progress": "none"}}


def fitting_config(steps: int, seed: int) -> dict:
    return {
        "seed": seed,
        "env": {"plugin": "pettingzoo", "module": ENV, "kwargs": {"continuous": False}, "num_envs": 4,
                "state": "none",
                "wrappers": [{"wrapper": "agentkit_envs.frames:ShrinkFrames", "kwargs": {"factor": 8, "grey": True}},
                             {"wrapper": "agentkit_envs.frames:StackFrames", "kwargs": {"stack_size": 4}}]},
        "algorithm": {"plugin": "mappo", "total_steps": steps, "centralised": False, "num_steps": 128,
                      "num_minibatches": 40, "update_epochs": 4, "learning_rate": 6e-4, "lr_schedule": "linear",
                      "gamma": 0.95,
                      "gae_lambda": 0.95, "clip_range": 0.3, "ent_coef": 0.01, "vf_coef": 0.5,
                      "max_grad_norm": 0.9},
        "policy": {"encoder": {"plugin": "cnn", "channels": [16, 32], "kernels": [3, 3], "strides": [2, 2],
                               "features_dim": 256}},
        "run": {"tensorboard": False, "progress": "plain", "checkpoint_every_steps": 0},
    }


def random_returns(episodes: int, seed: int, continuous: bool) -> list[float]:
    """Mean per-piston return of each episode (seeds 10,000 on) under uniformly random actions."""
    from pettingzoo.butterfly import pistonball_v6

    env = pistonball_v6.parallel_env(continuous=continuous)
    rng = np.random.default_rng(seed)
    means = []
    for i in range(episodes):
        env.reset(seed=10_000 + i)
        total = {a: 0.0 for a in env.possible_agents}
        while env.agents:
            actions = {a: rng.uniform(-1, 1, (1,)).astype(np.float32) if continuous else int(rng.integers(3))
                       for a in env.agents}
            _, rewards, _, _, _ = env.step(actions)
            for a, r in rewards.items():
                total[a] += r
        means.append(float(np.mean(list(total.values()))))
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: benchmarks/runs/images_pistonball/seedN")
    parser.add_argument("--eval-only", action="store_true",
                        help="skip training: evaluate the run dir's latest checkpoint (a run stopped early)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or RUNS / f"seed{args.seed}"
    if not args.eval_only:
        train_run(run_dir, args.steps, args.seed)
    evaluate(run_dir, args.episodes, args.seed)


def train_run(run_dir: Path, steps: int, seed: int) -> None:
    """Steps 1 and 2: the shipped env's memory check, then the training that fits."""
    from agentkit.build import build_algorithm, build_env
    from agentkit.errors import UserError
    from agentkit.host import load_run_config
    from agentkit.trainer import train

    config, host = load_run_config(shipped_config())
    try:
        algo = build_algorithm(config, host.registry, build_env(config, host.registry), None)
        print("the shipped env's MAPPO storage fits in memory here (not refused)")
        algo.close()
        del algo
    except UserError as exc:
        print(f"shipped env, MAPPO defaults: refused with exit 2: {exc}")

    config, host = load_run_config(fitting_config(steps, seed))
    start = time.perf_counter()
    cpu = time.process_time()
    result = train(config, host, run_dir=run_dir)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"trained {int(result['step'])} env steps (x20 pistons) in {wall / 60:.1f} min wall, "
          f"{cpu / 60:.1f} min CPU", flush=True)
    if result["step"] < steps:  # interrupted: it saved a checkpoint, which --eval-only evaluates
        raise SystemExit(f"stopped at {int(result['step'])} env steps; evaluate it with --eval-only")


def evaluate(run_dir: Path, n: int, seed: int) -> None:
    """Step 3: the run dir's policy, greedy and sampled from its exports, beside two random policies."""
    from agentkit.evaluation import evaluate_onnx
    from agentkit.exporting import export_run

    [greedy] = export_run(run_dir)
    ev = evaluate_onnx(greedy, episodes=n, seed=10_000)
    print(f"trained, greedy from {greedy.name}: mean per-piston return {ev.mean_return:.2f} ± {ev.std_return:.2f}"
          f" over {n} episodes", flush=True)
    [sampled] = export_run(run_dir, out=run_dir / "stochastic", stochastic=True)
    ev = evaluate_onnx(sampled, episodes=n, seed=10_000, deterministic=False)
    print(f"trained, sampled from the --stochastic {sampled.name}: mean per-piston return {ev.mean_return:.2f} ± "
          f"{ev.std_return:.2f} over {n} episodes", flush=True)
    for continuous in (False, True):
        r = random_returns(n, seed, continuous)
        print(f"random policy ({'continuous [-1, 1], as shipped' if continuous else '3 actions'}): mean per-piston "
              f"return {np.mean(r):.2f} ± {np.std(r):.2f} over {n} episodes", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
