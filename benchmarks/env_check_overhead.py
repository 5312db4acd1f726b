"""What the run's safety checks cost: the env boundary (agentkit.envcheck) and the trainer's finite checks.

    .venv/bin/python benchmarks/env_check_overhead.py [--steps 20000] [--repeats 3]
        [--baseline DIR] [--train-steps 50000]

1. The checks alone: a stand-in vector env that returns the same CartPole-sized transition (8 copies, 4
   floats) at once, stepped bare and through ``CheckedSource``: what the checks add per vector step, free of
   the env's own timing noise (CPU time of this process).
2. Collection alone, the worst case for the env boundary: CartPole-v1, 8 copies, a fixed action, ``--steps``
   vector steps through the gymnasium plugin's vector env bare and through ``CheckedSource``; runs
   alternate, the best of ``--repeats`` is reported in microseconds per vector step.
3. With ``--baseline DIR``, a folder put first on PYTHONPATH that holds a checkout without the checks under
   the import names (``agentkit``, ``agentkit_plugins``, ``agentkit_envs``, ``agentkit_exports``: symlinks to
   its ``agentkit/``, ``plugins/``, ``envs/``, ``exports/``): ``python -m agentkit.cli train
   examples/cartpole-ppo.yaml`` for ``--train-steps`` steps with it and with this checkout, alternating,
   ``--repeats`` times; child CPU seconds (user + system) and wall seconds.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def checks_alone(steps: int, repeats: int) -> dict[str, float]:
    import gymnasium as gym

    from agentkit.envcheck import CheckedSource
    from agentkit.environment import Observation, Transition

    class StandIn:
        num_envs = 8
        observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        action_space = gym.spaces.Discrete(2)
        transition = Transition(next=Observation(obs=np.zeros((8, 4), np.float32)), reward=np.ones(8, np.float32),
                                terminated=np.zeros(8, bool), truncated=np.zeros(8, bool))

        def reset(self, seed=None):
            return self.transition.next

        def step(self, actions):
            return self.transition

        def close(self):
            pass

    class Source:
        env_id, multi_agent, has_mask, observation_fields, enforces_step_timeout = "stand-in", False, False, None, False
        observation_space, action_space = StandIn.observation_space, StandIn.action_space

        def make_vec(self, num_envs, seed=None, render_mode=None):
            return StandIn()

        def close(self):
            pass

    best = {"bare": float("inf"), "checked": float("inf")}
    for _ in range(repeats):
        for name, vec in (("bare", Source().make_vec(8)), ("checked", CheckedSource(Source(), 60.0).make_vec(8))):
            start = time.process_time()  # CPU time of this process: less sensitive to other jobs than wall time
            for _ in range(steps):
                vec.step(None)
            best[name] = min(best[name], (time.process_time() - start) / steps * 1e6)
    return best


def collection(steps: int, repeats: int) -> dict[str, float]:
    from agentkit.envcheck import CheckedSource
    from agentkit.host import PluginHost

    host = PluginHost()
    reg = host.registry.get("env", "gymnasium")
    config = reg.config_model(plugin="gymnasium", id="CartPole-v1", num_envs=8)
    bare = reg.factory(config)
    checked = CheckedSource(reg.factory(config), 60.0)
    actions = np.zeros(8, dtype=np.int64)
    best = {"bare": float("inf"), "checked": float("inf")}
    for _ in range(repeats):
        for name, source in (("bare", bare), ("checked", checked)):
            vec = source.make_vec(8, seed=0)
            vec.reset()
            start = time.perf_counter()
            for _ in range(steps):
                vec.step(actions)
            best[name] = min(best[name], (time.perf_counter() - start) / steps * 1e6)
            vec.close()
    return best


def train(pythonpath: str | None, steps: int, out: Path) -> tuple[float, float]:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agentkit.cli", "train", str(ROOT / "examples" / "cartpole-ppo.yaml"), "--run-dir",
         str(out), "--set", f"algorithm.total_steps={steps}", "--set", "run.progress=none",
         "--set", "run.tensorboard=false"],
        check=True, capture_output=True, env=env, cwd=out.parent,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="PYTHONPATH folder of a checkout without the checks (see above)")
    parser.add_argument("--train-steps", type=int, default=50_000)
    args = parser.parse_args()

    alone = checks_alone(10 * args.steps, args.repeats)
    print(f"the checks alone, per vector step of 8 x 4 floats, best of {args.repeats}: "
          f"{alone['checked'] - alone['bare']:.1f} us (bare {alone['bare']:.2f} us, checked {alone['checked']:.2f} us)")
    best = collection(args.steps, args.repeats)
    print(f"collection, CartPole-v1 x 8, {args.steps} vector steps, best of {args.repeats}: "
          f"bare {best['bare']:.1f} us/step, checked {best['checked']:.1f} us/step "
          f"(+{best['checked'] - best['bare']:.1f} us, {100 * (best['checked'] / best['bare'] - 1):+.1f}%)")
    if not args.baseline:
        return
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, path in (("baseline", args.baseline), ("this", None)):
                results[name].append(train(path, args.train_steps, Path(tmp) / f"{name}{i}"))
    for name, runs in results.items():
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        print(f"train examples/cartpole-ppo.yaml, {args.train_steps} steps, {name}: CPU s {cpu} "
              f"(median {statistics.median(cpu):.2f}), wall s median {statistics.median(wall):.2f}, "
              f"{args.train_steps / statistics.median(wall):,.0f} steps/s")


if __name__ == "__main__":
    main()
