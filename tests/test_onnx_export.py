"""The ``onnx`` exporter: every registered head exports, passes parity, and follows exports/CONTRACT.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from agentkit_exports import onnx_exporter
from agentkit_exports.onnx_exporter import (
    DEFAULT_OPSET,
    ExportParityError,
    OnnxExporter,
    OnnxExporterConfig,
)
from onnx_cases import CASES, host, make_artifact, random_masks, torch_env_actions

from agentkit import runtime


def _export(artifact, path, **options):
    exporter = OnnxExporter(OnnxExporterConfig(plugin="onnx", **options))
    return exporter.export(artifact, path), exporter


def test_exporter_is_a_registered_builtin():
    reg = host().registry.get("exporter", "onnx")
    assert reg.provider == "built-in"
    assert isinstance(reg.factory(reg.default_config()), OnnxExporter)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("stochastic", [False, True], ids=["deterministic", "stochastic"])
def test_every_head_exports_with_contract_and_parity(case, stochastic, tmp_path):
    artifact = make_artifact(case)
    head = artifact.actor.head
    path, exporter = _export(artifact, tmp_path / "p.onnx", stochastic=stochastic)
    assert path.is_file()
    assert exporter.last_report["samples"] >= 1000

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    inputs = [i.name for i in model.graph.input]
    mask_dim = head.mask_dim if case.uses_mask else 0
    expected_inputs = ["obs"] + (["action_mask"] if mask_dim else []) + (
        ["agent_id"] if case.agent_id_dim else []) + (["noise"] if stochastic else [])
    assert inputs == expected_inputs
    outputs = [o.name for o in model.graph.output]
    names = list(head.output_names)
    assert outputs == (names + [f"deterministic_{n}" for n in names] if stochastic else names)
    for value in [*model.graph.input, *model.graph.output]:  # dynamic batch axis everywhere
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    for value in model.graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    meta = json.loads({p.key: p.value for p in model.metadata_props}["agentkit"])
    assert meta["contract_version"] == 3
    assert meta["action"] == json.loads(json.dumps(head.action_spec()))
    assert [i["name"] for i in meta["inputs"]] == expected_inputs
    assert [o["name"] for o in meta["outputs"]] == outputs
    assert meta["observation"]["shape"] == [case.obs_dim]
    assert meta["agents"] == list(case.agents)
    assert (meta["mask"] or {}).get("dim", 0) == mask_dim
    assert (meta["stochastic"] is not None) == stochastic
    if case.agent_id_dim:
        assert meta["agent_id"] == {"input": "agent_id", "dim": 3, "encoding": "one-hot", "agents": list(case.agents)}

    # independent of the exporter's own check: the runtime hands the env what the trainer would
    rng = np.random.default_rng(1)
    n = 300
    obs = rng.normal(0.5, 3.0, (n, case.obs_dim)).astype(np.float32)
    mask = random_masks(artifact, n, rng)
    agents = rng.integers(0, case.agent_id_dim, n) if case.agent_id_dim else None
    onehot = np.eye(case.agent_id_dim, dtype=np.float32)[agents] if case.agent_id_dim else None
    policy = runtime.load(path)
    _assert_same_actions(policy.act(obs, mask=mask, agent=agents), torch_env_actions(artifact, obs, mask, None, onehot))
    if stochastic:
        noise = rng.random((n, head.noise_dim), dtype=np.float32)
        got = policy.act(obs, mask=mask, agent=agents, deterministic=False, noise=noise)
        _assert_same_actions(got, torch_env_actions(artifact, obs, mask, noise, onehot))


def _assert_same_actions(got, want):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


def test_masks_change_the_exported_action(tmp_path):
    artifact = make_artifact(CASES[0])
    policy = runtime.load(_export(artifact, tmp_path / "d.onnx")[0])
    obs = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    free = policy.act(obs)
    for only in range(5):
        mask = np.zeros(5, bool)
        mask[only] = True
        assert (policy.act(obs, mask=mask) == only).all()
    assert len(np.unique(free)) > 1  # the observation matters


def test_stochastic_export_samples_the_distribution(tmp_path):
    artifact = make_artifact(CASES[0])
    policy = runtime.load(_export(artifact, tmp_path / "s.onnx", stochastic=True)[0])
    obs = np.tile(np.random.default_rng(3).normal(size=(1, 6)).astype(np.float32), (20000, 1))
    counts = np.bincount(policy.act(obs, deterministic=False, rng=0), minlength=5) / len(obs)
    with torch.no_grad():
        probs = torch.softmax(artifact.actor(torch.as_tensor(obs[:1])).logits, -1)[0].numpy()
    np.testing.assert_allclose(counts, probs, atol=0.015)
    same = policy.act(obs[:50], deterministic=False, rng=7)
    np.testing.assert_array_equal(same, policy.act(obs[:50], deterministic=False, rng=7))


def test_opset_option_and_metadata_of_a_run_config(tmp_path):
    from agentkit.config import load_config

    artifact = make_artifact(CASES[3])
    config = load_config(
        {"seed": 3, "env": {"plugin": "gymnasium", "id": "Pendulum-v1"}, "algorithm": {"plugin": "ppo", "total_steps": 100}},
        host().registry,
    )
    exporter = OnnxExporter(OnnxExporterConfig(plugin="onnx", opset=17))
    path = exporter.export(artifact, tmp_path / "nested" / "p17.onnx", config)
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    meta = runtime.load(path).metadata
    assert meta["algorithm"] == "ppo" and meta["seed"] == 3
    assert meta["env"]["plugin"] == "gymnasium" and meta["env"]["id"] == "Pendulum-v1"
    assert meta["env"]["config"]["id"] == "Pendulum-v1"
    with pytest.raises(ValueError):
        OnnxExporterConfig(plugin="onnx", opset=11)


def test_parity_mismatch_fails_and_leaves_nothing(tmp_path, monkeypatch):
    """A head that acts differently in torch than in its traced graph must fail the export, print the largest
    error, and leave the output path as it was."""
    artifact = make_artifact(CASES[3])  # gaussian, clipped
    head = artifact.actor.head
    original = head.env_outputs

    def drifting(action):
        out = original(action)
        if torch.onnx.is_in_onnx_export():
            return out
        return {"action": out["action"] + 1e-3}  # the bug: torch-side outputs differ from the graph's

    monkeypatch.setattr(head, "env_outputs", drifting)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous export")
    with pytest.raises(ExportParityError, match=r"action: largest error 0\.001"):
        _export(artifact, target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no temporary file left behind
    fresh = tmp_path / "fresh.onnx"
    with pytest.raises(ExportParityError):
        _export(artifact, fresh)
    assert not fresh.exists()


def test_discrete_parity_is_exact(tmp_path):
    """check_parity reports integer outputs that differ in a single row."""
    artifact = make_artifact(CASES[0])
    graph = onnx_exporter.PolicyGraph(artifact, stochastic=False)
    artifact.actor.eval()
    data = onnx_exporter.trace_to_onnx(graph, DEFAULT_OPSET)
    feeds = onnx_exporter.parity_inputs(artifact, graph, 1000, 0)
    assert onnx_exporter.check_parity(data, graph, feeds, 1e-5) == {"action": 0.0}
    with torch.no_grad():  # change the torch policy after tracing: the file no longer matches it
        artifact.actor.head.logits.bias[2] += 50.0
    with pytest.raises(ExportParityError, match=r"action: largest error \d+ \(must be 0\)"):
        onnx_exporter.check_parity(data, graph, feeds, 1e-5)


def test_parity_inputs_respect_bounds_and_masks():
    from gymnasium import spaces

    artifact = make_artifact(CASES[2])  # multi_discrete [3, 4, 2]
    artifact.observation_space = spaces.Box(np.array([0, -1, -np.inf, 2, -np.inf, -5], np.float32),
                                            np.array([1, 1, np.inf, np.inf, 4, 5], np.float32))
    graph = onnx_exporter.PolicyGraph(artifact, stochastic=True)
    feeds = onnx_exporter.parity_inputs(artifact, graph, 1000, 0)
    obs, mask = feeds["obs"], feeds["action_mask"]
    assert obs.shape == (1000, 6) and obs.dtype == np.float32
    assert (obs[:, 0] >= 0).all() and (obs[:, 0] <= 1).all() and (obs[:, 3] >= 2).all() and (obs[:, 4] <= 4).all()
    assert obs[:, 2].std() > 1.0
    for start, width in ((0, 3), (3, 4), (7, 2)):
        assert mask[:, start:start + width].any(axis=1).all()
    assert (mask == 0).any()
    assert feeds["noise"].shape == (1000, 3) and (0 <= feeds["noise"]).all() and (feeds["noise"] < 1).all()


# -- end to end: train a tiny run, export it, play the file and the run dir with the same seed ----------------

E2E = {
    "cartpole": {"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 4},
                 "policy": {"hidden_sizes": [32, 32], "normalize_obs": True}},
    "dungeon-masked": {"env": {"plugin": "gymnasium", "id": "agentkit/Dungeon-v0", "num_envs": 4,
                               "kwargs": {"size": 8}},
                       "policy": {"hidden_sizes": [32, 32]}},
    "moving-hybrid": {"env": {"plugin": "gymnasium", "id": "agentkit/Moving-v0", "num_envs": 4},
                      "policy": {"hidden_sizes": [32, 32], "head": {"plugin": "hybrid"}}},
}


def _train_tiny(name, tmp_path):
    from agentkit.config import load_config
    from agentkit.trainer import train

    section = E2E[name]
    data = {"seed": 1, **section,
            "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 64, "update_epochs": 1},
            "run": {"tensorboard": False, "progress": "none"}}
    registry = host().registry
    if section["env"]["id"].startswith("agentkit/"):
        pytest.importorskip("agentkit_envs.games")
    config = load_config(data, registry)
    run_dir = tmp_path / name
    train(config, host(), run_dir=run_dir)
    return run_dir


@pytest.mark.parametrize("name", ["dungeon-masked", "moving-hybrid"])
def test_export_run_plays_exactly_like_the_run_dir(name, tmp_path):
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run

    run_dir = _train_tiny(name, tmp_path)
    (path,) = export_run(run_dir)
    assert path == run_dir / "policy.onnx"
    meta = runtime.load(path).metadata
    assert meta["algorithm"] == "ppo" and meta["env"]["id"] == E2E[name]["env"]["id"]
    if name == "dungeon-masked":
        assert meta["mask"] is not None  # the env's action mask reaches the exported graph
    want = evaluate_run(run_dir, episodes=3, seed=5)
    got = evaluate_onnx(path, episodes=3, seed=5)
    assert got.lengths == want.lengths
    np.testing.assert_allclose(got.returns, want.returns, rtol=0, atol=1e-4)
    if name == "dungeon-masked":
        assert got.returns == want.returns  # discrete actions: exactly the same episodes
    (stochastic,) = export_run(run_dir, out=tmp_path / "out", stochastic=True, opset=17)
    assert stochastic == tmp_path / "out" / "policy.onnx"
    assert runtime.load(stochastic).stochastic
    a = evaluate_onnx(stochastic, episodes=2, seed=3, deterministic=False)
    assert a.returns == evaluate_onnx(stochastic, episodes=2, seed=3, deterministic=False).returns


def test_cli_train_export_eval_onnx(tmp_path, run_cli):
    """`agentkit export RUN_DIR` then `agentkit eval FILE.onnx` gives the run dir's evaluation exactly."""
    from agentkit.errors import UserError
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run

    run_dir = _train_tiny("cartpole", tmp_path)
    proc = run_cli("export", run_dir, "--out", tmp_path / "cartpole.onnx")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "cartpole.onnx")
    # CartPole never supplies masks: the discrete head's file has no action_mask input
    meta = runtime.load(tmp_path / "cartpole.onnx").metadata
    assert meta["mask"] is None and [i["name"] for i in meta["inputs"]] == ["obs"]
    proc = run_cli("eval", tmp_path / "cartpole.onnx", "--episodes", "3", "--seed", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == evaluate_run(run_dir, episodes=3, seed=2).to_json()
    with pytest.raises(UserError, match="opset"):
        export_run(run_dir, out=tmp_path / "x.onnx", opset=9)
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(UserError, match="NoSuchEnv-v0"):
        evaluate_onnx(tmp_path / "cartpole.onnx", episodes=1, env="NoSuchEnv-v0")


def test_masked_fill_is_simplified_to_a_scalar_where(tmp_path):
    """torch.full_like traces to Shape + ConstantOfShape on every call; the exporter folds it into Where's
    broadcasting scalar (parity is checked on the simplified graph)."""
    artifact = make_artifact(CASES[0])
    path, _ = _export(artifact, tmp_path / "d.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "ConstantOfShape" not in ops and "Shape" not in ops
    assert ops.count("Where") == 1


def test_noop_casts_dropped_and_uniform_bounds_become_one_clip(tmp_path):
    from gymnasium import spaces
    from onnx_cases import Case

    ops = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node]  # noqa: E731
    discrete = ops(_export(make_artifact(CASES[0]), tmp_path / "d.onnx")[0])
    assert "Cast" not in discrete and discrete[-1] == "ArgMax"  # ArgMax already gives int64
    box = ops(_export(make_artifact(CASES[3]), tmp_path / "b.onnx")[0])  # Box(-1, 1, (3,)): clipped
    assert box[-1] == "Clip" and "Max" not in box and "Min" not in box
    uneven = Case("uneven", "gaussian", spaces.Box(np.array([-1, 0], np.float32), np.array([1, 5], np.float32)))
    path, _ = _export(make_artifact(uneven), tmp_path / "u.onnx")  # per-dim bounds: Max/Min stay, parity holds
    assert "Max" in ops(path) and ops(path)[-1] == "Min" and "Clip" not in ops(path)[-3:]
    out = runtime.load(path).act(np.random.default_rng(0).normal(0, 5, (500, 6)))
    assert (out[:, 0] >= -1).all() and (out[:, 0] <= 1).all() and (out[:, 1] >= 0).all() and (out[:, 1] <= 5).all()
    assert (out[:, 1] == 0).any() and (np.abs(out[:, 0]) == 1).any()  # the bounds bind


@pytest.mark.parametrize("example", ["speaker-listener-mappo", "spread-mappo"])
def test_multi_agent_run_exports_one_file_per_group_and_plays_like_the_run(example, tmp_path):
    """One file per policy group (an agent-id input for shared groups when configured); eval of one file finds
    its siblings."""
    pytest.importorskip("mpe2")
    from agentkit.config import read_yaml
    from agentkit.evaluation import evaluate_onnx, evaluate_run
    from agentkit.exporting import export_run
    from agentkit.host import load_run_config
    from agentkit.trainer import train

    data = read_yaml(Path(__file__).resolve().parents[1] / "examples" / f"{example}.yaml")
    data["algorithm"].update(total_steps=256, num_steps=16)
    data["env"]["num_envs"] = 2
    data["run"] = {"tensorboard": False, "progress": "none"}
    config, run_host = load_run_config(data)
    run_dir = tmp_path / "run"
    train(config, run_host, run_dir=run_dir)
    paths = export_run(run_dir, out=tmp_path / "team.onnx")
    policies = [runtime.load(p) for p in paths]
    groups = [p.metadata["policy"] for p in policies]
    if len(paths) > 1:
        assert paths == [tmp_path / f"team-{g}.onnx" for g in groups]
    for p in policies:
        assert p.metadata["algorithm"] == "mappo" and p.metadata["env"]["plugin"] == "pettingzoo"
        if len(p.agents) > 1 and data["algorithm"].get("agent_id", True):
            assert p.agent_id_dim == len(p.agents) and "agent_id" in p.input_names
        else:
            assert p.agent_id_dim == 0 and "agent_id" not in p.input_names
    want = evaluate_run(run_dir, episodes=2, seed=4)
    got = evaluate_onnx(paths[-1], episodes=2, seed=4)
    assert got.lengths == want.lengths
    np.testing.assert_allclose(got.returns, want.returns, rtol=0, atol=1e-4)
    assert set(got.groups) == set(want.groups)


def test_non_finite_weights_are_refused_naming_the_parameter(tmp_path):
    """Issue 22: an export of a diverged policy passed its parity check (NaN == NaN in argmax)."""
    from agentkit.errors import UserError

    for poison in ("weight", "buffer"):
        artifact = make_artifact(CASES[0])
        with torch.no_grad():
            if poison == "weight":
                name, tensor = next(iter(artifact.actor.named_parameters()))
                tensor.view(-1)[3] = float("nan")
            else:
                name, tensor = next((n, b) for n, b in artifact.actor.named_buffers() if b.is_floating_point())
                tensor.view(-1)[0] = float("inf")
        with pytest.raises(onnx_exporter.NonFiniteWeightsError, match=f"{name} holds 1 of") as info:
            _export(artifact, tmp_path / "p.onnx")
        assert isinstance(info.value, UserError)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_exported_files_follow_the_umask(tmp_path, umask, mode):
    """Issue 22: exports were always 0600 (mkstemp's mode), unreadable by a game server running as another user."""
    import os

    old = os.umask(umask)
    try:
        path, _ = _export(make_artifact(CASES[0]), tmp_path / "p.onnx")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_export_out_naming_a_directory_exits_2_before_any_work(tmp_path, capsys):
    from agentkit import cli

    (tmp_path / "d.onnx").mkdir()
    # tmp_path holds no run: the --out check comes first
    assert cli.main(["export", str(tmp_path), "--out", str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert "export --out" in err and "is a directory" in err and "Traceback" not in err
