"""`make demo`: train a shipped game agent, export it to ONNX, and play the exported file.

Each step is the command a user would type; this script only runs them in order and shows what they print:

    agentkit train examples/dungeon-masked-ppo.yaml --run-dir runs/demo --set algorithm.total_steps=...
    agentkit eval runs/demo --episodes 20
    agentkit export runs/demo --out runs/demo/dungeon.onnx
    agentkit eval runs/demo/dungeon.onnx --episodes 20 --gif runs/demo/dungeon.gif

and finally acts with the exported file through `agentkit.runtime` (onnxruntime + numpy, no torch), the way a
game's own Python code would. Set DEMO_STEPS to train longer or shorter (default 150k env steps, a minute or
two on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "runs" / "demo"
CONFIG = ROOT / "examples" / "dungeon-masked-ppo.yaml"
STEPS = int(os.environ.get("DEMO_STEPS", "150000"))
AGENTKIT = [sys.executable, "-m", "agentkit.cli"]


def run_cli(*args: str, capture: bool = False) -> str:
    print(f"\n$ agentkit {' '.join(args)}", flush=True)
    result = subprocess.run([*AGENTKIT, *args], cwd=ROOT, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            print(result.stdout, result.stderr, sep="\n")
        sys.exit(f"demo: `agentkit {args[0]}` failed with exit code {result.returncode}")
    if capture:
        summary = json.loads(result.stdout)
        print(f"mean return {summary['mean_return']:.3f} ± {summary['std_return']:.3f} "
              f"over {summary['episodes']} episodes")
    return result.stdout if capture else ""


def main() -> None:
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)  # the demo always starts from scratch
    run_cli("train", str(CONFIG.relative_to(ROOT)), "--run-dir", str(RUN_DIR.relative_to(ROOT)),
             "--set", f"algorithm.total_steps={STEPS}")
    trained = json.loads(run_cli("eval", str(RUN_DIR.relative_to(ROOT)), "--episodes", "20", "--json",
                                  capture=True))
    onnx_path = RUN_DIR / "dungeon.onnx"
    run_cli("export", str(RUN_DIR.relative_to(ROOT)), "--out", str(onnx_path.relative_to(ROOT)))
    exported = json.loads(run_cli("eval", str(onnx_path.relative_to(ROOT)), "--episodes", "20", "--json",
                                   "--gif", str((RUN_DIR / "dungeon.gif").relative_to(ROOT)), capture=True))

    # What a game does with the file: load it without torch and act on one observation with its mask.
    import gymnasium as gym

    import agentkit.runtime
    import agentkit_envs.games  # noqa: F401  (registers the agentkit/ gymnasium ids)

    policy = agentkit.runtime.load(onnx_path)
    env = gym.make("agentkit/Dungeon-v0", size=8)
    obs, _ = env.reset(seed=123)
    action = policy.act(obs["observation"], mask=obs["action_mask"])
    print("\nagentkit.runtime: one step of the exported policy, in a fresh dungeon")
    print(f"  legal moves (action_mask): {obs['action_mask'].tolist()}  ->  action {action}")

    print("\nSummary")
    print(f"  trained policy (torch):  mean return {trained['mean_return']:.3f} over {trained['episodes']} episodes")
    print(f"  exported policy (ONNX):  mean return {exported['mean_return']:.3f} over {exported['episodes']} episodes")
    print(f"  run dir: {RUN_DIR.relative_to(ROOT)}  (metrics.csv, curve.png, checkpoints/, dungeon.onnx, dungeon.gif)")
    if trained["mean_return"] != exported["mean_return"]:
        sys.exit("demo: the exported policy did not play exactly like the trained one")


if __name__ == "__main__":
    main()
