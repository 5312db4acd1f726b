"""PPO's two parts timed apart, agentkit beside Stable-Baselines3, on the CartPole zoo config of
``benchmarks/ppo_speed_vs_sb3.py`` (8 envs x 32 steps, batch 256, 20 epochs, separate 64-64 tanh actor and
critic, Adam eps 1e-5, gradient-norm clip 0.5), in one process, alternating:

**Collection**, per vector step of the 8 CartPole copies (the policy acting, the env stepping, storage, GAE):
agentkit's ``PPO.collect`` (its ``Collector``, the env behind agentkit's checks) and SB3's
``collect_rollouts`` (its ``DummyVecEnv`` with ``Monitor``).

**The update**, per gradient step, three ways:

- **agentkit**: ``PolicyGroup.learn`` of the ``ppo`` plugin built from examples/cartpole-ppo.yaml, on a
  rollout it collected (20 epochs of one minibatch, as in training; the normalisers are off in that config);
- **SB3**: ``PPO.train()`` of Stable-Baselines3 with the same settings, on a rollout it collected;
- **bare torch**: the same clipped-surrogate step written as plainly as torch allows (two ``nn.Sequential``
  MLPs, ``log_softmax`` + ``gather``, ``torch.optim.Adam(foreach=True)``, ``clip_grad_norm_(foreach=True)``):
  no buffers, no schedules, no metrics. It is what a gradient step costs in torch with these networks.

    .venv/bin/python benchmarks/ppo_parts_vs_sb3.py [--rounds 5] [--updates 20] [--rollouts 20]

Each round times ``--rollouts`` rollouts and ``--updates`` updates (of 20 gradient steps) per side; the median
per side and the ratios are printed (nothing is appended to RESULTS.md). ``benchmarks/ppo_speed_vs_sb3.py``
gives the whole-process figure #21 asks for; this one says which part of it is where, and whether the update
has anything left above the floor. Needs the ``benchmark`` extra (stable-baselines3). One torch thread, as in
the whole-process benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "cartpole-ppo.yaml"
GRAD_STEPS = 20  # 20 epochs x one minibatch of 256 (8 envs x 32 steps)


def agentkit_parts():
    """Closures running one agentkit PPO rollout (32 vector steps and GAE) and one update (20 gradient steps)."""
    from agentkit.build import build_algorithm, build_env
    from agentkit.host import load_run_config
    from agentkit.onpolicy import schedule

    config, host = load_run_config(CONFIG, ["run.progress=none", "run.tensorboard=false"])
    algo = build_algorithm(config, host.registry, build_env(config, host.registry), None, torch.device("cpu"))
    algo.collect()
    sched = schedule(algo.config, 0.0, [algo.group])
    generator = torch.Generator().manual_seed(0)
    return algo.collect, lambda: algo.group.learn(sched, generator)


def sb3_parts():
    """Closures running one SB3 rollout (``collect_rollouts``, 32 vector steps) and one ``PPO.train()``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=256)  # one rollout collected and learned: the buffer is full, the logger set up
    callback = model._init_callback(None)  # what learn() gives collect_rollouts

    def collect() -> None:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)

    return collect, model.train


def bare_update():
    """A closure running 20 plain-torch clipped-surrogate steps on a fixed batch of 256 CartPole-sized rows."""
    torch.manual_seed(0)

    def mlp(out: int) -> torch.nn.Sequential:
        return torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                   torch.nn.Linear(64, out))

    actor, critic = mlp(2), mlp(1)
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, eps=1e-5, foreach=True)
    obs, actions = torch.randn(256, 4), torch.randint(0, 2, (256, 1))
    old_logprob, advantages, returns = -torch.rand(256), torch.randn(256), torch.randn(256)

    def update() -> None:
        for _ in range(GRAD_STEPS):
            logprobs = torch.log_softmax(actor(obs), -1)
            ratio = (logprobs.gather(1, actions).squeeze(1) - old_logprob).exp()
            pg_loss = -torch.min(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages).mean()
            v_loss = torch.nn.functional.mse_loss(critic(obs).squeeze(1), returns)
            optimizer.zero_grad(set_to_none=True)
            (pg_loss + 0.5 * v_loss).backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
            optimizer.step()

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20, help="updates (of 20 gradient steps) per side and round")
    parser.add_argument("--rollouts", type=int, default=20, help="rollouts (of 32 vector steps) per side and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    (ak_collect, ak_update), (sb3_collect, sb3_update) = agentkit_parts(), sb3_parts()
    # (what a side runs, how many times a round, units of work each time)
    parts = {
        "collection, ms per vector step": {"agentkit": (ak_collect, args.rollouts, 32),
                                           "SB3": (sb3_collect, args.rollouts, 32)},
        "update, ms per gradient step": {"agentkit": (ak_update, args.updates, GRAD_STEPS),
                                         "SB3": (sb3_update, args.updates, GRAD_STEPS),
                                         "bare torch": (bare_update(), args.updates, GRAD_STEPS)},
    }
    for sides in parts.values():  # warm-up: first-call allocations and lazy inits
        for run, _, _ in sides.values():
            run()
    ms: dict[str, dict[str, list[float]]] = {part: {name: [] for name in sides} for part, sides in parts.items()}
    for _ in range(args.rounds):
        for part, sides in parts.items():
            for name, (run, times, units) in sides.items():
                start = time.perf_counter()
                for _ in range(times):
                    run()
                ms[part][name].append((time.perf_counter() - start) / (times * units) * 1e3)
    print(f"median of {args.rounds} alternating rounds (one torch thread):")
    for part, sides in ms.items():
        median = {name: statistics.median(rounds) for name, rounds in sides.items()}
        print(f"{part}:")
        for name, rounds in sides.items():
            print(f"  {name:10s} {median[name]:.3f}   ({', '.join(f'{m:.3f}' for m in rounds)}); "
                  f"SB3 / this {median['SB3'] / median[name]:.2f}x")


if __name__ == "__main__":
    main()
