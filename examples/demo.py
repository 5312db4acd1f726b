"""`make demo`: train a shipped game agent, export it to ONNX, and play the exported file.

Each step is the command a user would type; this script only runs them in order and shows what they print:

    agentkit train examples/moving-hybrid-ppo.yaml --run-dir runs/demo --set algorithm.total_steps=...
    agentkit eval runs/demo --episodes 20
    agentkit export runs/demo --out runs/demo/policy.onnx
    agentkit eval runs/demo/policy.onnx --episodes 20 --gif runs/demo/policy.gif

and finally plays one episode with the exported file through `agentkit.runtime` (onnxruntime + numpy, no
torch) in a plain gymnasium loop, the way a game's own code would. The game is agentkit/Moving-v0: hybrid
actions, accelerate(magnitude) / turn(angle) / brake(). DEMO_STEPS sets the training budget (default 300k env
steps, about two minutes on a 2-core machine); DEMO_CONFIG another example, e.g. examples/dungeon-masked-ppo.yaml.
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
CONFIG = ROOT / os.environ.get("DEMO_CONFIG", "examples/moving-hybrid-ppo.yaml")
STEPS = int(os.environ.get("DEMO_STEPS", "300000"))
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
        print(f"mean return {summary['mean_return']:.6f} ± {summary['std_return']:.3f} "
              f"over {summary['episodes']} episodes")
    return result.stdout if capture else ""


def main() -> None:
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)  # the demo always starts from scratch
    run_cli("train", str(CONFIG.relative_to(ROOT)), "--run-dir", str(RUN_DIR.relative_to(ROOT)),
             "--set", f"algorithm.total_steps={STEPS}")
    trained = json.loads(run_cli("eval", str(RUN_DIR.relative_to(ROOT)), "--episodes", "20", "--json",
                                  capture=True))
    onnx_path = RUN_DIR / "policy.onnx"
    run_cli("export", str(RUN_DIR.relative_to(ROOT)), "--out", str(onnx_path.relative_to(ROOT)))
    exported = json.loads(run_cli("eval", str(onnx_path.relative_to(ROOT)), "--episodes", "20", "--json",
                                   "--gif", str((RUN_DIR / "policy.gif").relative_to(ROOT)), capture=True))

    # What a game does with the file: load it without torch and act in its own loop.
    import agentkit_envs.games  # noqa: F401  (registers the agentkit/ gymnasium ids)
    import gymnasium as gym

    import agentkit.runtime

    policy = agentkit.runtime.load(onnx_path)
    env_id = policy.metadata["env"]["id"]
    env = gym.make(env_id, **policy.metadata["env"]["config"]["kwargs"])
    obs, _ = env.reset(seed=123)
    total, done, steps = 0.0, False, 0
    while not done:
        if isinstance(obs, dict):  # masked envs put the legal actions next to the observation
            action = policy.act(obs["observation"], mask=obs["action_mask"])
        else:
            action = policy.act(obs)
        if steps == 0:
            print(f"\nagentkit.runtime in a plain gymnasium loop on {env_id}: first action {action}")
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done, steps = total + float(reward), terminated or truncated, steps + 1
    print(f"  one episode with the exported file: return {total:.3f} in {steps} steps")

    print("\nSummary")
    print(f"  trained policy (torch):  mean return {trained['mean_return']:.6f} over {trained['episodes']} episodes")
    print(f"  exported policy (ONNX):  mean return {exported['mean_return']:.6f} over {exported['episodes']} episodes")
    print(f"  run dir: {RUN_DIR.relative_to(ROOT)}  (metrics.csv, curve.png, checkpoints/, policy.onnx, policy.gif)")
    # Discrete choices match exactly; continuous parameters agree to ~1e-6, so returns may differ by rounding.
    if abs(trained["mean_return"] - exported["mean_return"]) > 1e-4 * max(1.0, abs(trained["mean_return"])):
        sys.exit("demo: the exported policy did not play like the trained one")


if __name__ == "__main__":
    main()
