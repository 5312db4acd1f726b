"""exports/CONTRACT.md's worked example is a real export, not an illustration.

Its metadata block matches what ``agentkit export --stochastic`` writes for agentkit/Moving-v0, the
observations in its step table are the env's own, and its Python and JavaScript snippets run on that file
and act alike. (The step's outputs come from a policy trained for 1M steps, which CI does not train.)
"""

from __future__ import annotations

import json
import re
import subprocess

import gymnasium as gym
import numpy as np
import pytest
from conftest import AGENTKIT, NODE, REPO, cli_env

from agentkit import runtime

SECTION = "## Worked example"
MOVING = "agentkit_envs.games:agentkit/Moving-v0"


def worked_example() -> str:
    text = (REPO / "exports" / "CONTRACT.md").read_text()
    section = text[text.index(SECTION):]
    return section[:section.index("\n## ", len(SECTION))]


def code_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", worked_example(), re.S)
    assert len(blocks) == 1, f"the worked example should have one {language} block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def moving_export(tmp_path_factory):
    """A briefly trained Moving policy, exported as the worked example says (``--stochastic``)."""
    folder = tmp_path_factory.mktemp("moving")
    run = [
        "train", str(REPO / "examples" / "moving-hybrid-ppo.yaml"), "--run-dir", str(folder / "run"),
        "--set", "algorithm.total_steps=256", "--set", "env.num_envs=2", "--set", "algorithm.num_steps=64",
        "--set", "algorithm.minibatch_size=64", "--set", "run.progress=none", "--set", "run.tensorboard=false",
    ]
    export = ["export", str(folder / "run"), "--stochastic", "--out", str(folder / "moving.onnx")]
    for args in (run, export):
        proc = subprocess.run([*AGENTKIT, *args], capture_output=True, text=True, env=cli_env(), timeout=300)
        assert proc.returncode == 0, proc.stderr
    return folder / "moving.onnx"


def assert_abridged(doc, real, path: str = "metadata") -> None:
    """Everything the document shows is in the export: ``{"...": "..."}`` stands for anything, lists are
    whole, floats are shown to 3 decimals."""
    if doc == {"...": "..."}:
        return
    if isinstance(doc, dict):
        assert isinstance(real, dict), f"{path}: CONTRACT.md shows an object, the export has {real!r}"
        for key, value in doc.items():
            assert key in real, f"{path}.{key} is in CONTRACT.md but not in the export ({sorted(real)})"
            assert_abridged(value, real[key], f"{path}.{key}")
    elif isinstance(doc, list):
        assert isinstance(real, list) and len(real) == len(doc), f"{path}: CONTRACT.md {doc}, export {real}"
        for i, (d, r) in enumerate(zip(doc, real, strict=True)):
            assert_abridged(d, r, f"{path}[{i}]")
    elif isinstance(doc, float):
        assert real == pytest.approx(doc, abs=5e-4), f"{path}: CONTRACT.md {doc}, export {real}"
    else:
        assert doc == real, f"{path}: CONTRACT.md {doc!r}, export {real!r}"


def step_observations() -> np.ndarray:
    row = re.search(r"^\| `obs` \| `(.*)` \|$", worked_example(), re.M)
    assert row, "the worked example's step table has no `obs` row"
    return np.array(json.loads(row.group(1)), np.float32)


def env_observations() -> np.ndarray:
    return np.stack([gym.make(MOVING).reset(seed=seed)[0] for seed in (3, 7)])  # the seeds the example names


def test_metadata_block_is_what_the_export_writes(moving_export):
    assert_abridged(json.loads(code_block("json")), runtime.load(moving_export).metadata)


def test_step_table_observations_are_the_envs():
    np.testing.assert_allclose(step_observations(), env_observations(), atol=5e-4)


def test_python_snippet_runs_on_the_export(moving_export, monkeypatch):
    obs_batch = env_observations()
    namespace = {"obs": obs_batch[0], "obs_batch": obs_batch}
    monkeypatch.chdir(moving_export.parent)
    exec(code_block("python"), namespace)
    assert namespace["types"].shape == (2,) and namespace["params"].shape == (2, 2)
    assert int(namespace["k"]) in (0, 1, 2)


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript snippet needs it")
def test_javascript_snippet_runs_on_the_export_and_acts_as_python(moving_export, js_ready):
    obs = env_observations()[0]
    snippet = code_block("js").replace('"./agentkit-runtime.mjs"', json.dumps((js_ready / "agentkit-runtime.mjs").as_uri()))
    script = moving_export.parent / "snippet.mjs"
    script.write_text(f"const obs = {json.dumps(obs.tolist())};\n{snippet}\n"
                      "console.log(JSON.stringify({ action_type, action_params, sampled }));\n")
    proc = subprocess.run([NODE, str(script)], cwd=moving_export.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    noise = re.search(r"noise: (\[\[.*?\]\])", snippet).group(1)
    policy = runtime.load(moving_export)
    for (k, params), js in (
        (policy.act(obs), got),
        (policy.act(obs, deterministic=False, noise=json.loads(noise)), got["sampled"]),
    ):
        assert js["action_type"] == int(k)
        np.testing.assert_allclose(js["action_params"], params, atol=1e-6)
