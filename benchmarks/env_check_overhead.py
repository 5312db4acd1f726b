"""What the run's safety checks cost: the env boundary (agentkit.envcheck) and the trainer's finite checks.

    .venv/bin/python benchmarks/env_check_overhead.py [--steps 20000] [--repeats 3]
        [--baseline /path/to/other/checkout/.venv/bin/agentkit] [--train-steps 50000]

1. Collection alone, the worst case for the env boundary: CartPole-v1, 8 copies, a fixed action, ``--steps``
   vector steps through the gymnasium plugin's vector env bare and through ``CheckedSource``; runs
   alternate, the best of ``--repeats`` is reported in microseconds per vector step.
2. With ``--baseline`` (the ``agentkit`` script of a checkout without the checks, e.g. main before they
   landed): ``agentkit train examples/cartpole-ppo.yaml`` for ``--train-steps`` steps with each, alternating,
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


def train(script: str, steps: int, out: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [script, "train", str(ROOT / "examples" / "cartpole-ppo.yaml"), "--run-dir", str(out),
         "--set", f"algorithm.total_steps={steps}", "--set", "run.progress=none", "--set", "run.tensorboard=false"],
        check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="the agentkit script of a checkout without the checks")
    parser.add_argument("--train-steps", type=int, default=50_000)
    args = parser.parse_args()

    best = collection(args.steps, args.repeats)
    print(f"collection, CartPole-v1 x 8, {args.steps} vector steps, best of {args.repeats}: "
          f"bare {best['bare']:.1f} us/step, checked {best['checked']:.1f} us/step "
          f"(+{best['checked'] - best['bare']:.1f} us, {100 * (best['checked'] / best['bare'] - 1):+.1f}%)")
    if not args.baseline:
        return
    this = str(Path(sys.executable).with_name("agentkit"))
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, script in (("baseline", args.baseline), ("this", this)):
                results[name].append(train(script, args.train_steps, Path(tmp) / f"{name}{i}"))
    for name, runs in results.items():
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        print(f"train examples/cartpole-ppo.yaml, {args.train_steps} steps, {name}: CPU s {cpu} "
              f"(median {statistics.median(cpu):.2f}), wall s median {statistics.median(wall):.2f}, "
              f"{args.train_steps / statistics.median(wall):,.0f} steps/s")


if __name__ == "__main__":
    main()
