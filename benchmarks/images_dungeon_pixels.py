"""agentkit/Dungeon-v0 from its own rendered frames (CNN) against the vector observation (MLP), PPO masked.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/images_dungeon_pixels.py --steps 100000 --seed 0
    ... --side vector   (or --side pixels: one side per process; the ratio is printed once both have run)

The vector run is examples/dungeon-masked-ppo.yaml for ``--steps``; the pixel run the same file for
``4 x --steps`` (the same ``num_envs``, 16, and every other setting) with the env seen through ``agentkit_envs.pixels:RenderedPixels`` (the 256x256 ``rgb_array``
frame area-averaged to ``--size`` px a side, uint8, 4 px per cell at 32; the action mask kept) named in
``env.wrappers``, and the multi encoder (a CNN on the frame: 16-32-32 channels, small-image kernels 3-3-3 /
strides 2-1-1 below 36 px, 256 features, then the MLP trunk). Both policies then play ``--episodes`` fresh dungeons from their
exported ``.onnx`` (sampling, as the Dungeon rows of RESULTS.md do); the figure is the mean return and the
share of dungeons cleared (return > 0: only the exit pays). Target (issue 26): pixels reach >= 90% of the
vector run's figure within 4x its steps. Each side's figures are written to
``benchmarks/runs/images_dungeon_pixels/<side>-seed<seed>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dungeon-masked-ppo.yaml"
RUNS = Path(__file__).with_name("runs") / "images_dungeon_pixels"


def config(steps: int, seed: int, pixels: int | None) -> dict:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["seed"] = seed
    data["algorithm"]["total_steps"] = steps
    data["run"] = {"tensorboard": False, "progress": "plain", "checkpoint_every_steps": 0}
    if pixels:
        data["env"]["kwargs"]["render_mode"] = "rgb_array"
        data["env"]["wrappers"] = [{"wrapper": "agentkit_envs.pixels:RenderedPixels", "kwargs": {"size": pixels}}]
        # the multi encoder's CNN at a quarter of Nature's width (16-32-32 channels, 256 features): 3x less CPU
        # a step than 32-64-64 on these frames, which is what this machine allows
        data["policy"]["encoder"] = {"plugin": "multi",
                                     "cnn": {"plugin": "cnn", "channels": [16, 32, 32], "features_dim": 256}}
    return data


def run(name: str, data: dict, episodes: int, seed: int) -> tuple[float, float, float]:
    """(mean return, share cleared, training steps/s) of a fresh run."""
    from agentkit.evaluation import evaluate_onnx
    from agentkit.exporting import export_run
    from agentkit.host import load_run_config
    from agentkit.trainer import train

    cfg, host = load_run_config(data)
    run_dir = RUNS / f"{name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time
    start = time.perf_counter()
    result = train(cfg, host, run_dir=run_dir)
    if result["step"] < cfg.algorithm.total_steps:  # interrupted (it saved a checkpoint): nothing to evaluate
        sys.exit(f"{name}: interrupted at step {int(result['step'])}")
    sps = cfg.algorithm.total_steps / (time.perf_counter() - start)
    [path] = export_run(run_dir, stochastic=True)
    ev = evaluate_onnx(path, episodes=episodes, seed=10_000, deterministic=False)
    returns = np.asarray(ev.returns)
    return float(returns.mean()), float((returns > 0).mean()), sps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="the vector run's steps (pixels get 4x)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--side", choices=["both", "vector", "pixels"], default="both")
    args = parser.parse_args(argv)
    sides = {"vector": (args.steps, None), "pixels": (4 * args.steps, args.size)}
    figures = {}
    for side, (steps, size) in sides.items():
        name = "vector" if size is None else f"pixels{size}"
        out = RUNS / f"{name}-seed{args.seed}.json"
        if args.side in ("both", side):
            ret, cleared, sps = run(name, config(steps, args.seed, size), args.episodes, args.seed)
            out.write_text(json.dumps({"steps": steps, "mean_return": ret, "cleared": cleared, "steps_per_s": sps,
                                       "episodes": args.episodes}))
            print(f"{name}, {steps} steps: mean return {ret:.3f}, cleared {cleared:.0%} ({sps:.0f} steps/s)",
                  flush=True)
        if out.is_file():
            figures[side] = json.loads(out.read_text())
    if len(figures) == 2:
        vec, pix = figures["vector"], figures["pixels"]
        ratio = pix["cleared"] / max(vec["cleared"], 1e-9)
        print(f"pixels ({pix['steps']} steps) / vector ({vec['steps']}), seed {args.seed}: cleared {ratio:.2f}x, "
              f"mean return {pix['mean_return']:.3f} vs {vec['mean_return']:.3f} (target >= 0.9x)")


if __name__ == "__main__":
    main(sys.argv[1:])
