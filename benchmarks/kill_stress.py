"""kill -9 at random moments, then --resume, repeatedly: every time, checkpoints/latest.pt must load and the
run must continue from it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_stress.py [KILLS]

A PPO CartPole run checkpoints every iteration (32 steps), so kills often land during a checkpoint write.
Prints each kill's outcome and appends a summary to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from agentkit.checkpoint import load_checkpoint

CONFIG = {
    "seed": 1,
    "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 4},
    "algorithm": {"plugin": "ppo", "total_steps": 10**7, "num_steps": 8, "minibatch_size": 32, "update_epochs": 1},
    "policy": {"hidden_sizes": [16]},
    "run": {"checkpoint_every_steps": 32, "keep_checkpoints": 2, "progress": "none", "tensorboard": False},
}
AGENTKIT = [sys.executable, "-m", "agentkit.cli"]


def main() -> None:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    tmp = Path(tempfile.mkdtemp())
    (tmp / "stress.yaml").write_text(yaml.safe_dump(CONFIG))
    run, latest = tmp / "run", tmp / "run" / "checkpoints" / "latest.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    steps, extra = [], []
    try:
        for k in range(kills):
            proc = subprocess.Popen([*AGENTKIT, "train", str(tmp / "stress.yaml"), "--run-dir", str(run), *extra],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not latest.exists():
                time.sleep(0.05)
            before = load_checkpoint(latest)["step"]
            while load_checkpoint(latest)["step"] == before and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(random.uniform(0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            steps.append(load_checkpoint(latest)["step"])  # raises CheckpointError if damaged
            print(f"kill {k + 1}: latest.pt loads, step {steps[-1]}", flush=True)
            extra = ["--resume"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert steps == sorted(steps), steps
    line = (f"\n## kill -9 stress\n`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_stress.py {kills}`\n"
            f"- {kills} kill -9 at random moments of a run that checkpoints every iteration, each followed by "
            f"--resume: latest.pt loaded every time, steps {steps}\n")
    print(line)
    with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
        f.write(line)


if __name__ == "__main__":
    main()
