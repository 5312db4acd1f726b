"""The browser game of exports/web (Moving, hybrid actions, on a canvas) trains over the bridge's WebSocket
transport in real headless Chromium (Debian's chromium, installed by `make engines`, driven by puppeteer-core),
and the page then plays the exported policy with onnxruntime-web (wasm): the page's actions are the Python
runtime's on the same observations. The test takes a screenshot of the page and checks that it shows the game."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import NODE, cli_env, npm_cached_install

from agentkit import runtime

REPO = Path(__file__).resolve().parents[1]
COMMAND = "node exports/web/browser.mjs --port={port} --instance={instance}"  # the example's launch command
WEB = REPO / "exports" / "web"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or NODE is None,
    reason="Chromium or node is not installed: `make engines` (as root) installs Debian's chromium; node is needed "
    "to drive it",
)


@pytest.fixture(scope="module")
def web_env() -> dict[str, str]:
    """exports/web's packages (onnxruntime-web, puppeteer-core) from the npm cache outside the repo."""
    return {"AGENTKIT_WEB_MODULES": str(npm_cached_install(WEB, "onnxruntime-web"))}


def test_browser_page_trains_then_plays_the_export_like_python(run_cli, tmp_path, web_env):
    import subprocess

    run_dir = tmp_path / "web"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-browser-moving.yaml", "--run-dir", run_dir,
        "--set", "env.num_envs=2", "--set", "algorithm.total_steps=512", "--set", "algorithm.num_steps=256",
        "--set", "algorithm.minibatch_size=256", cwd=REPO, env=web_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["step"]) == 512

    policy_file = tmp_path / "moving.onnx"
    proc = run_cli("export", run_dir, "--out", policy_file, "--allow-import", COMMAND, cwd=REPO, env=web_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Observations from all over Moving's observation space, so that every action type shows up.
    rng = np.random.default_rng(0)
    low = np.array([-1, -1, 0, -1, -1, -1, -1, 0, 0], np.float32)
    high = np.array([1, 1, 1, 1, 1, 1, 1, 2.83, 1], np.float32)
    probe = rng.uniform(low, high, size=(256, 9)).astype(np.float32)
    (tmp_path / "probe.json").write_text(json.dumps(probe.tolist()))
    shot, record = tmp_path / "page.png", tmp_path / "record.json"
    proc = subprocess.run(
        [NODE, str(WEB / "browser.mjs"), f"--policy={policy_file}", "--episodes=2", f"--record={record}",
         f"--screenshot={shot}", f"--observations={tmp_path / 'probe.json'}"],
        capture_output=True, text=True, env=cli_env(**web_env), cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("done"), proc.stdout  # the page's status line
    state = json.loads(record.read_text())
    assert state["status"] == "done" and state["episodes"] == 2 and state["error"] is None

    python = runtime.load(policy_file)
    # The steps the page played: its observation -> its action, against the Python runtime on that observation.
    played = state["record"]
    assert len(played) == state["steps"] > 0
    obs = np.array([r["obs"] for r in played], np.float32)
    kinds, params = python.act(obs)
    assert np.array_equal(kinds, [r["action_type"] for r in played])
    np.testing.assert_allclose(params, np.array([r["action_params"] for r in played], np.float32), atol=1e-5, rtol=0)
    # The batch of probe observations, in one onnxruntime-web call.
    kinds, params = python.act(probe)
    assert np.array_equal(kinds, state["probe"]["action_type"])
    np.testing.assert_allclose(params, np.array(state["probe"]["action_params"], np.float32), atol=1e-5, rtol=0)

    # The screenshot shows the page: the canvas (the green target circle, the blue vehicle) and the status.
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    green = (image[..., 1] > 200) & (image[..., 0] > 180) & (image[..., 0] < 220) & (image[..., 2] < 220)
    blue = (image[..., 2] > 180) & (image[..., 0] < 80)
    assert green.sum() > 50 and blue.sum() > 20, "the canvas does not show the target and the vehicle"
