"""examples/demo.py (`make demo`) at a small budget: it ends by saying which mode it plays and why, with the
game's success rate, and the figures it reports are those of the exported file in that mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

from agentkit.evaluation import evaluate_onnx


def test_demo_plays_the_better_mode_of_its_export_and_reports_the_success_rate(tmp_path):
    run_dir = tmp_path / "demo"
    env = cli_env(DEMO_STEPS="4096", DEMO_EPISODES="4", DEMO_RUN_DIR=str(run_dir))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "np.int64(" not in out and "np.float32(" not in out and "1 episodes" not in out

    demo = json.loads((run_dir / "demo.json").read_text())
    mode = demo["mode"]
    assert mode in ("greedy", "stochastic")
    score = {m: (demo[m]["infos"]["success"], demo[m]["mean_return"]) for m in ("greedy", "stochastic")}
    assert mode == ("stochastic" if score["stochastic"] > score["greedy"] else "greedy")
    # The final figure is the exported file's, in the mode played, and the run plays the same episodes.
    again = evaluate_onnx(run_dir / "policy.onnx", episodes=4, seed=0, deterministic=mode == "greedy")
    assert demo["mean_return"] == pytest.approx(again.mean_return, abs=1e-4)
    assert demo["success"] == again.infos["success"] == demo["run"]["infos"]["success"]
    assert demo["run"]["mean_return"] == pytest.approx(demo["mean_return"], abs=1e-4)

    summary = out[out.rindex("\nSummary"):]
    assert f"plays {mode}: " in summary
    assert f"success {demo['success']:.0%}, mean return {demo['mean_return']:.3f}" in summary
    assert ("deterministic=False" in summary) == (mode == "stochastic")
    assert (run_dir / "policy.gif").is_file() and (run_dir / "curve.png").is_file()
