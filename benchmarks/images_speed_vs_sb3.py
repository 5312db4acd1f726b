"""CNN PPO training speed: agentkit (``policy.encoder: cnn``) beside Stable-Baselines3's ``CnnPolicy`` on the
same pixel env and hyperparameters, in alternating rounds (agentkit, SB3, SB3, agentkit, ...) so that both
see the same machine load.

    pip install -c constraints.txt -e ".[benchmark]"     # stable-baselines3 and minigrid
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/images_speed_vs_sb3.py --steps 4096 --rounds 3

The env: MiniGrid DoorKey-5x5 seen through ``RGBImgPartialObsWrapper`` (56x56x3 uint8 frames of the agent's
view) and ``ImgObsWrapper``, 8 copies in a sync vector env. Both sides: Nature-CNN (32-64-64, 8-4-3, 4-2-1,
512 features) shared by actor and critic (SB3's default; agentkit's ``policy.shared_trunk: auto`` on images),
n_steps 128, minibatch 256, 4 epochs, lr 2.5e-4, one torch thread.

Timed alike: SB3's ``learn()``; agentkit's iterations, from the ``agentkit_train_start`` hook to the last
``agentkit_iteration_end`` (collection + update + per-iteration logging; the run dir set-up before and the final
checkpoint and curve.png after are reported apart, as ``train() overhead``), in wall seconds and in this
process's CPU seconds (``time.process_time``: what other processes on a shared machine do not inflate).
Reported per round and as the median ratios. ``--env-only`` also times the bare vector env (random actions), which both sides pay alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import agentkit
from agentkit.host import load_run_config
from agentkit.trainer import train

ENV_ID = "MiniGrid-DoorKey-5x5-v0"


class _Timer:
    """Hook plugin: time from train start to the last iteration's end."""

    def __init__(self):
        self.start = self.end = self.cpu_start = self.cpu_end = 0.0
        self.steps = 0

    @agentkit.hookimpl
    def agentkit_train_start(self, run):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        self.end, self.cpu_end, self.steps = time.perf_counter(), time.process_time(), step


def agentkit_run(steps: int) -> tuple[float, float, float]:
    """(steps per wall second of the iterations, steps per CPU second, seconds of train() outside them)."""
    data = {
        "seed": 0,
        "env": {"plugin": "gymnasium", "id": f"minigrid:{ENV_ID}", "num_envs": 8,
                "wrappers": [{"wrapper": "minigrid.wrappers:RGBImgPartialObsWrapper"},
                             {"wrapper": "minigrid.wrappers:ImgObsWrapper"}]},
        "algorithm": {"plugin": "ppo", "total_steps": steps, "num_steps": 128, "minibatch_size": 256,
                      "update_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01, "max_grad_norm": 0.5},
        "policy": {"encoder": "cnn"},
        "run": {"tensorboard": False, "progress": "none", "checkpoint_every_steps": 0, "torch_threads": 1},
    }
    config, host = load_run_config(data)
    timer = _Timer()
    host.pm.register(timer, name="benchmark-timer")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, host, run_dir=f"{tmp}/run")
        whole = time.perf_counter() - start
    wall = timer.end - timer.start
    return timer.steps / wall, timer.steps / (timer.cpu_end - timer.cpu_start), whole - wall


def _make_env():
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the ids
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(ENV_ID)))


def sb3_run(steps: int) -> tuple[float, float]:
    """(steps per wall second of ``learn()``, steps per CPU second)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env(_make_env, n_envs=8, seed=0)
    model = PPO("CnnPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, ent_coef=0.01,
                max_grad_norm=0.5, seed=0, device="cpu", verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def env_only(steps: int) -> float:
    import gymnasium as gym

    venv = gym.vector.SyncVectorEnv([_make_env for _ in range(8)])
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps // 8):
        venv.step(rng.integers(0, 7, 8))
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env-only", action="store_true")
    args = parser.parse_args(argv)
    ratios, cpu_ratios = [], []
    for r in range(args.rounds):
        order = ("agentkit", "sb3") if r % 2 == 0 else ("sb3", "agentkit")
        got = {}
        for side in order:
            if side == "agentkit":
                *got["agentkit"], overhead = agentkit_run(args.steps)
            else:
                got["sb3"] = sb3_run(args.steps)
        ratios.append(got["agentkit"][0] / got["sb3"][0])
        cpu_ratios.append(got["agentkit"][1] / got["sb3"][1])
        print(f"round {r} ({' then '.join(order)}): agentkit {got['agentkit'][0]:.0f} steps/s wall, "
              f"{got['agentkit'][1]:.0f} per CPU s (train() overhead {overhead:.1f} s); SB3 {got['sb3'][0]:.0f} "
              f"steps/s wall, {got['sb3'][1]:.0f} per CPU s; ratio {ratios[-1]:.2f}x wall, {cpu_ratios[-1]:.2f}x CPU",
              flush=True)
    print(f"median ratio agentkit / SB3: {statistics.median(ratios):.2f}x wall, {statistics.median(cpu_ratios):.2f}x "
          f"per CPU second ({args.rounds} rounds of {args.steps} steps each, CPU, 1 thread)")
    if args.env_only:
        print(f"the vector env alone (random actions): {env_only(args.steps):.0f} steps/s")


if __name__ == "__main__":
    main(sys.argv[1:])
