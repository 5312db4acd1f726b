"""CNN PPO training speed: agentkit (``policy.encoder: cnn``) beside Stable-Baselines3's ``CnnPolicy`` on the
same pixel env and hyperparameters, one run each, one after the other.

    pip install -c constraints.txt -e ".[benchmark]"     # stable-baselines3 and minigrid
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/images_speed_vs_sb3.py --steps 16384

The env: MiniGrid DoorKey-5x5 seen through ``RGBImgPartialObsWrapper`` (56x56x3 uint8 frames of the agent's
view) and ``ImgObsWrapper``, 8 copies in a sync vector env. Both sides: Nature-CNN (32-64-64, 8-4-3, 4-2-1,
512 features) shared by actor and critic (SB3's default; ``policy.shared_trunk: true`` here), n_steps 128,
minibatch 256, 4 epochs, lr 2.5e-4, one torch thread. Reported: env steps per second of the whole
``learn`` / ``train`` call (collection + update; ``train`` also sets up the run dir and env, writes checkpoints
and curve.png, a fixed cost of seconds), wall clock, and agentkit's last iteration alone. ``--device`` is ``run.device`` for agentkit and
``device`` for SB3 (this machine has no GPU: cpu only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from agentkit.host import load_run_config
from agentkit.trainer import train

ENV_ID = "MiniGrid-DoorKey-5x5-v0"


def agentkit_run(steps: int) -> tuple[float, float]:
    """(steps/s of the whole train() call, steps/s of its last iteration as the trainer logs it)."""
    data = {
        "seed": 0,
        "env": {"plugin": "gymnasium", "id": f"minigrid:{ENV_ID}", "num_envs": 8,
                "wrappers": [{"wrapper": "minigrid.wrappers:RGBImgPartialObsWrapper"},
                             {"wrapper": "minigrid.wrappers:ImgObsWrapper"}]},
        "algorithm": {"plugin": "ppo", "total_steps": steps, "num_steps": 128, "minibatch_size": 256,
                      "update_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01, "max_grad_norm": 0.5},
        "policy": {"encoder": "cnn", "shared_trunk": True},
        "run": {"tensorboard": False, "progress": "none", "checkpoint_every_steps": 0, "torch_threads": 1},
    }
    config, host = load_run_config(data)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(config, host, run_dir=f"{tmp}/run")
        return steps / (time.perf_counter() - start), float(result["charts/steps_per_second"])


def sb3_run(steps: int) -> float:
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the ids
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env(lambda: ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(ENV_ID))), n_envs=8, seed=0)
    model = PPO("CnnPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, ent_coef=0.01,
                max_grad_norm=0.5, seed=0, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16384)
    args = parser.parse_args(argv)
    ours, last = agentkit_run(args.steps)
    print(f"agentkit PPO + cnn: {ours:.0f} steps/s (whole train() call: env and run dir set-up, checkpoints, "
          f"curve.png included); last iteration {last:.0f} steps/s", flush=True)
    theirs = sb3_run(args.steps)
    print(f"SB3 PPO CnnPolicy: {theirs:.0f} steps/s (learn() only)")
    print(f"ratio agentkit / SB3: {ours / theirs:.2f}x ({args.steps} steps each, CPU, 1 thread)")


if __name__ == "__main__":
    main(sys.argv[1:])
