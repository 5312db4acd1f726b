"""What the run machinery costs around an algorithm: per iteration and once per run.

A no-op algorithm (each iterate() advances 256 steps and returns 20 metrics, like PPO's) is trained twice
through ``agentkit.trainer.train`` for ITERATIONS iterations: with TensorBoard and without. Whatever time
the run takes is the trainer's: metrics.csv, TensorBoard, progress, hooks, checkpoints, curve.png.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_overhead.py [ITERATIONS]

Prints the figures and appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

import agentkit
from agentkit.algorithm import PolicyArtifact
from agentkit.config import AlgorithmConfig, load_config
from agentkit.host import PluginHost
from agentkit.trainer import train

STEPS_PER_ITERATION = 256


class NoopConfig(AlgorithmConfig):
    pass


class Noop:
    def __init__(self, config, context):
        self.steps_done = 0
        self.weights = torch.nn.Linear(64, 64)

    def iterate(self):
        self.steps_done += STEPS_PER_ITERATION
        return {f"losses/metric_{i}": float(self.steps_done % (i + 7)) for i in range(20)}

    def state_dict(self):
        return {"weights": self.weights.state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state):
        self.weights.load_state_dict(state["weights"])
        self.steps_done = state["steps_done"]

    def policies(self) -> list[PolicyArtifact]:
        return []

    def close(self):
        pass


@agentkit.hookimpl
def agentkit_register_algorithms(register):
    register("noop-bench", Noop, NoopConfig, "Does nothing; measures the trainer.")


def measure(iterations: int, tensorboard: bool) -> float:
    host = PluginHost(modules=["__main__"])
    config = load_config(
        {
            "env": {"plugin": "gymnasium", "id": "CartPole-v1"},
            "algorithm": {"plugin": "noop-bench", "total_steps": iterations * STEPS_PER_ITERATION},
            "run": {"progress": "plain", "tensorboard": tensorboard, "checkpoint_every_steps": 50_000},
        },
        host.registry,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(config, host, run_dir=Path(tmp) / "run")
        return time.perf_counter() - t0


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    measure(5, True)  # imports (tensorboard, matplotlib) out of the way
    lines = []
    for tb in (True, False):
        short = measure(1, tb)
        full = measure(iterations, tb)
        per_iter_us = (full - short) / (iterations - 1) * 1e6
        lines.append(
            f"- trainer overhead, tensorboard={'on' if tb else 'off'}: {per_iter_us:.0f} µs per iteration "
            f"(20 metrics), {short:.2f} s fixed per run (checkpoints at start and end, curve.png); "
            f"{iterations} iterations in {full:.2f} s"
        )
    command = f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_overhead.py {iterations}"
    text = "\n## Trainer overhead (no-op algorithm)\n`" + command + "`\n" + "\n".join(lines) + "\n"
    print(text)
    with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
