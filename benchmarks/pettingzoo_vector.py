"""Two settings of the pettingzoo env plugin side by side: its vectorisations, in-process (sync) vs worker
processes (async), or with and without pettingzoo's API-checking wrappers (``--compare api_checks``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pettingzoo_vector.py --append
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pettingzoo_vector.py --compare api_checks --append

Two figures on mpe2 simple_spread_v3 (N=3, 25 steps, 8 copies, as in examples/spread-mappo.yaml), each taken
in interleaved rounds (A, B, A, B, ...) so that the shared machine's load hits both alike:
- the vector env alone, stepped with random actions: env steps per second (best round);
- MAPPO training through the real trainer (``examples/spread-mappo.yaml``, ``--steps`` env steps per round):
  env steps per second of the whole ``train`` call, worker start-up included (best round).
The speed-up workers can give is bounded by the free cores: note the load average printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from agentkit_envs.pettingzoo_env import PettingZooEnvConfig, PettingZooSource

from agentkit.config import apply_overrides, load_config, read_yaml
from agentkit.host import PluginHost
from agentkit.trainer import train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "spread-mappo.yaml"


def env_steps_per_second(mode: dict, num_envs: int, vector_steps: int) -> float:
    env = read_yaml(EXAMPLE)["env"]
    config = PettingZooEnvConfig(**{**env, "num_envs": num_envs, **mode})
    vec = PettingZooSource(config).make_vec(num_envs, seed=0)
    try:
        rng = np.random.default_rng(0)
        actions = [{"agent": rng.integers(0, 5, size=num_envs * 3)} for _ in range(64)]
        vec.reset()
        start = time.perf_counter()
        for i in range(vector_steps):
            vec.step(actions[i % 64])
        return vector_steps * num_envs / (time.perf_counter() - start)
    finally:
        vec.close()


def training_steps_per_second(mode: dict, num_envs: int, steps: int) -> float:
    host = PluginHost()
    overrides = [f"algorithm.total_steps={steps}", f"env.num_envs={num_envs}", "run.progress=none", "run.tensorboard=false"]
    overrides += [f"env.{key}={value}" for key, value in mode.items()]
    config = load_config(apply_overrides(read_yaml(EXAMPLE), overrides), host.registry)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(config, host, run_dir=Path(tmp) / "run")
        return int(result["step"]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["vectorization", "api_checks"], default="vectorization")
    parser.add_argument("--workers", type=int, default=2, help="processes stepping copies, the trainer's included")
    parser.add_argument("--num-envs", type=int, default=None, help="env copies (default: the example's, 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vector-steps", type=int, default=1500, help="vector env steps per env-only round")
    parser.add_argument("--steps", type=int, default=40960, help="env steps per training round")
    parser.add_argument("--append", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.compare == "vectorization":
        modes = {"sync": {"vectorization": "sync"}, "async": {"vectorization": "async", "workers": args.workers}}
        title = f"in-process vs {args.workers} processes"
    else:
        modes = {"checked": {"api_checks": True}, "unchecked": {"api_checks": False}}
        title = "with and without pettingzoo's checking wrappers (`env.api_checks`)"
    base, other = modes
    num_envs = args.num_envs or read_yaml(EXAMPLE)["env"]["num_envs"]
    load_before = os.getloadavg()[0]
    env_rates: dict[str, list[float]] = {name: [] for name in modes}
    train_rates: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(args.rounds):
        for name, mode in modes.items():
            env_rates[name].append(env_steps_per_second(mode, num_envs, args.vector_steps))
            train_rates[name].append(training_steps_per_second(mode, num_envs, args.steps))
            print(f"round {r + 1}: {name:9s} env {env_rates[name][-1]:7.0f} steps/s, "
                  f"MAPPO {train_rates[name][-1]:6.0f} steps/s", flush=True)
    best = {name: (max(env_rates[name]), max(train_rates[name])) for name in modes}
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/" + " ".join(
        shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]
    )
    lines = [
        f"\n### PettingZoo vector env: {title} "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)\n",
        f"Command: `{command}`. mpe2 simple_spread_v3, {num_envs} copies; best of {args.rounds} interleaved rounds.\n",
        f"| {args.compare} | vector env alone (random actions), env steps/s | MAPPO training "
        f"({args.steps:,} steps, whole `train` call), env steps/s |",
        "|---|---|---|",
        *(f"| {name} | {best[name][0]:.0f} | {best[name][1]:.0f} |" for name in modes),
        f"| {other} / {base} | {best[other][0] / best[base][0]:.2f}× | {best[other][1] / best[base][1]:.2f}× |",
    ]
    print("\n".join(lines))
    if args.append:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
