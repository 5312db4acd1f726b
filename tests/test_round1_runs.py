"""A run trained by the previous release (before encoders were plugins) still evaluates, exports and resumes.

``tests/fixtures/round1-cartpole`` was trained by agentkit at commit b1a2eaa (``agentkit train
examples/cartpole-ppo.yaml --set algorithm.total_steps=1024 --set run.tensorboard=false``). Its actor keeps
the old state-dict keys (``normalizer.*``, ``trunk.*``) and its config.yaml lacks keys added since
(``policy.encoder``). That release's ``agentkit eval RUN --episodes 3`` played returns 132, 77 and 61.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "round1-cartpole"
ROUND1_RETURNS = [132.0, 77.0, 61.0]


def _copy(tmp_path: Path) -> Path:
    run = tmp_path / "round1"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_fixture_holds_the_old_keys():
    state = torch.load(FIXTURE / "checkpoints" / "latest.pt", weights_only=True)
    actor_keys = set(state["algorithm"]["actor"])
    assert {"normalizer.mean", "trunk.0.weight"} <= actor_keys
    assert not any(key.startswith("encoder.") for key in actor_keys)


def test_a_round1_run_plays_the_same_episodes_and_exports(run_cli, tmp_path):
    run = _copy(tmp_path)
    proc = run_cli("eval", run, "--episodes", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["returns"] == ROUND1_RETURNS

    proc = run_cli("export", run, "--out", tmp_path / "round1.onnx")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", tmp_path / "round1.onnx", "--episodes", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["returns"] == ROUND1_RETURNS


def test_a_round1_run_resumes_to_a_bigger_budget(run_cli, tmp_path):
    run = _copy(tmp_path)
    proc = run_cli("train", run, "--resume", "--set", "algorithm.total_steps=1536", "--set", "run.progress=none")
    assert proc.returncode == 0, proc.stderr
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps[-1] == "1536"
