"""Image observations end to end: uint8 frames train (PPO, MAPPO, MADDPG with the CNN encoder), stay uint8
in storage and in the export's ``obs`` input, and the Python and JS runtimes act identically on the env's raw
frames; env wrappers from the config apply at train and eval; a run whose storage cannot fit stops with
exit 2 before allocating."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NODE
from image_test_envs import BrightSide

from agentkit import runtime
from agentkit.build import build_algorithm, build_env
from agentkit.evaluation import evaluate_onnx
from agentkit.exporting import export_run
from agentkit.host import load_run_config
from agentkit.rundir import load_run
from agentkit.trainer import train

IMAGE = {"plugin": "gymnasium", "id": "image_test_envs:BrightSide-v0", "num_envs": 2}
TESTS = Path(__file__).resolve().parent
#: the test envs' module: a run dir's config naming it is a file whose imports need consent (agentkit.trust)
ALLOW = ["image_test_envs"]
QUIET = {"tensorboard": False, "progress": "none", "checkpoint_every_steps": 0}


def _train(tmp_path, env, algorithm, policy=None, name="run"):
    data = {"env": env, "algorithm": algorithm, "run": QUIET, "seed": 0}
    if policy is not None:
        data["policy"] = policy
    config, host = load_run_config(data)
    run_dir = tmp_path / name
    train(config, host, run_dir=run_dir)
    return config, host, run_dir


def _frames(n: int, seed: int = 0) -> np.ndarray:
    env = BrightSide()
    obs = [env.reset(seed=seed + i)[0] for i in range(n)]
    return np.stack(obs)


def test_ppo_cnn_trains_on_uint8_frames_and_exports_them_as_uint8(tmp_path):
    config, host, run_dir = _train(tmp_path, IMAGE, {"plugin": "ppo", "total_steps": 256, "num_steps": 64,
                                                      "minibatch_size": 64, "update_epochs": 2})
    algo = build_algorithm(config, host.registry, build_env(config, host.registry), None)
    # [T, N env copies, 1 agent (a single-agent env is one policy group of one), H, W, C]
    assert algo.storage.obs.dtype == torch.uint8 and tuple(algo.storage.obs.shape) == (64, 2, 1, 16, 16, 3)
    assert type(algo.actor.encoder).__name__ == "CNNEncoder"  # policy.encoder: auto on an image
    [path] = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(path)
    obs_input = policy.session.get_inputs()[0]
    assert obs_input.type == "tensor(uint8)" and obs_input.shape[1:] == [16, 16, 3]
    meta = policy.metadata["observation"]
    assert meta["dtype"] == "uint8" and meta["shape"] == [16, 16, 3] and meta["layout"] == "HWC"
    # the runtime takes the env's own frame (one or a batch) and acts as the torch policy does
    frames = _frames(16)
    from agentkit.rundir import load_run

    actor = load_run(run_dir, allow_imports=ALLOW).algorithm.policies()[0].actor
    with torch.no_grad():
        want = actor(torch.from_numpy(frames)).mode().numpy()
    np.testing.assert_array_equal(policy.act(frames), want)
    assert int(policy.act(frames[0])) == int(want[0])
    # a frame scaled to 0..1 would be scaled twice: refused, naming the fix
    with pytest.raises(Exception, match="uint8 pixels 0..255"):
        policy.act(frames[0] / 255.0)


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript runtime check needs it")
def test_js_runtime_acts_as_python_on_raw_frames(tmp_path, js_ready):
    _, _, run_dir = _train(tmp_path, IMAGE, {"plugin": "ppo", "total_steps": 128, "num_steps": 64,
                                              "update_epochs": 1})
    [path] = export_run(run_dir, allow_imports=ALLOW)
    frames = _frames(8, seed=3)
    want = runtime.load(path).act(frames)
    jobs = [{"model": str(path), "obs": frames.tolist()}, {"model": str(path), "obs": frames[0].tolist()},
            {"model": str(path), "obs": (frames[0] / 255.0).tolist()}]
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    proc = subprocess.run([NODE, str(js_ready / "act.mjs"), "--jobs", str(job_file)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results[0] == {"action": want.tolist()}
    assert results[1] == {"action": int(want[0])}
    assert "uint8 pixels 0..255" in results[2]["error"]


def test_a_shipped_game_trains_from_its_rendered_frames_through_env_wrappers(tmp_path):
    """agentkit_envs.pixels:RenderedPixels shows Dungeon as its own rgb_array frame shrunk to 32x32 uint8, keeping
    the action mask; the run trains a CNN on it and exports the frame as a uint8 input; eval of the file needs
    no --allow-import (agentkit's own wrapper)."""
    env = {"plugin": "gymnasium", "id": "agentkit/Dungeon-v0", "num_envs": 2, "kwargs": {"render_mode": "rgb_array"},
           "wrappers": [{"wrapper": "agentkit_envs.pixels:RenderedPixels", "kwargs": {"size": 32}}]}
    _, _, run_dir = _train(tmp_path, env, {"plugin": "ppo", "total_steps": 64, "num_steps": 32, "minibatch_size": 32,
                                           "update_epochs": 1})
    [path] = export_run(run_dir)
    policy = runtime.load(path)
    assert {i.name: (i.type, i.shape[1:]) for i in policy.session.get_inputs()} == {
        "obs.pixels": ("tensor(uint8)", [32, 32, 3]), "action_mask": ("tensor(float)", [6])}
    assert len(evaluate_onnx(path, episodes=1).returns) == 1


def test_rendered_pixels_names_what_it_needs():
    import gymnasium as gym
    from agentkit_envs.pixels import RenderedPixels

    from agentkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"render_mode 'rgb_array'.*env.kwargs: \{render_mode: rgb_array\}"):
        RenderedPixels(gym.make("agentkit/Dungeon-v0"))
    with pytest.raises(ConfigError, match="size 30 does not divide the env's 256x256 frame"):
        RenderedPixels(gym.make("agentkit/Dungeon-v0", render_mode="rgb_array"), size=30)


def test_ppo_and_ippo_share_one_cnn_between_actor_and_critic_on_images_by_default(tmp_path):
    """``policy.shared_trunk: auto``: one CNN for images, whose run dir records ``true``; vector observations
    and a centralised critic keep their own networks (``false`` recorded)."""
    import yaml

    ppo = {"plugin": "ppo", "total_steps": 64, "num_steps": 32, "minibatch_size": 32, "update_epochs": 1}
    _, _, run_dir = _train(tmp_path, IMAGE, ppo)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["policy"]["shared_trunk"] is True
    algo = load_run(run_dir, allow_imports=ALLOW).algorithm
    assert algo.critic.encoder is algo.actor.encoder
    _, _, run_dir = _train(tmp_path, {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2}, ppo, name="vector")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["policy"]["shared_trunk"] is False
    env = {"plugin": "pettingzoo", "module": "image_test_envs", "num_envs": 2}
    for centralised in (False, True):
        config, host = load_run_config({"env": env, "algorithm": {"plugin": "mappo", "total_steps": 64,
                                                                  "centralised": centralised}, "run": QUIET})
        [unit] = build_algorithm(config, host.registry, build_env(config, host.registry), None).units
        assert (unit.critic.encoder is unit.actor.encoder) is not centralised


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript runtime check needs it")
def test_a_dict_of_frame_and_vectors_exports_one_input_per_entry_in_its_own_shape_and_dtype(tmp_path, js_ready):
    """A Dict observation holding an image trains with the multi encoder and exports one input per entry
    (contract 3): the frame uint8 [batch, 16, 16, 3] with its layout, the vector float32, the category int64;
    the Python runtime takes the env's dict (and the flat vector eval hands it) and acts as the torch policy
    does; the JS runtime acts identically on the same dicts."""
    from image_test_envs import BrightSideDict

    from agentkit.observations import ObservationLayout

    env = {"plugin": "gymnasium", "id": "image_test_envs:BrightSideDict-v0", "num_envs": 2}
    _, _, run_dir = _train(tmp_path, env, {"plugin": "ppo", "total_steps": 128, "num_steps": 64, "update_epochs": 1})
    [path] = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(path)
    inputs = {i.name: (i.type, i.shape[1:]) for i in policy.session.get_inputs()}
    assert inputs == {"obs.frame": ("tensor(uint8)", [16, 16, 3]), "obs.progress": ("tensor(float)", [1]),
                      "obs.step": ("tensor(int64)", [])}
    fields = {f["key"]: f for f in policy.metadata["observation"]["fields"]}
    assert fields["frame"]["layout"] == "HWC" and fields["frame"]["shape"] == [16, 16, 3]
    assert policy.metadata["contract_version"] == 3
    game = BrightSideDict()
    raws = []
    for i in range(12):
        raw, _ = game.reset(seed=i)
        for _ in range(i % 5):
            raw, *_ = game.step(0)
        raws.append(raw)
    layout = ObservationLayout(game.observation_space, "test")
    flat = np.concatenate([layout.split(r)[0] for r in raws])
    actor = load_run(run_dir, allow_imports=ALLOW).algorithm.policies()[0].actor
    with torch.no_grad():
        want = actor(torch.from_numpy(flat)).mode().numpy()
    np.testing.assert_array_equal(policy.act(raws), want)
    np.testing.assert_array_equal(policy.act(flat), want)
    assert [int(policy.act(r)) for r in raws[:3]] == want[:3].tolist()
    assert len(evaluate_onnx(path, episodes=2, allow_imports=ALLOW).returns) == 2
    jobs = [{"model": str(path), "obs": [{k: np.asarray(v).tolist() for k, v in r.items()} for r in raws]}]
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    proc = subprocess.run([NODE, str(js_ready / "act.mjs"), "--jobs", str(job_file)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"action": want.tolist()}]


HUD = {"plugin": "pettingzoo", "module": "image_test_envs", "num_envs": 2, "kwargs": {"hud": True}}
DICT_RUNS = {  # a Dict observation holding a 16x16x3 frame, for each kind of storage
    "ppo": ({"plugin": "gymnasium", "id": "image_test_envs:BrightSideDict-v0", "num_envs": 2},
            {"plugin": "ppo", "total_steps": 256, "num_steps": 64, "update_epochs": 2, "minibatch_size": 32}),
    "mappo": (HUD, {"plugin": "mappo", "total_steps": 256, "num_steps": 32, "update_epochs": 2}),
    "maddpg": (HUD, {"plugin": "maddpg", "total_steps": 256, "batch_size": 32, "learning_starts": 64,
                     "buffer_size": 1000, "iteration_steps": 64}),
}


def _allocated(obj) -> int:
    """Bytes of the tensors held by ``obj``'s attributes (a PackedObs's two parts included)."""
    from agentkit.storage import PackedObs

    total = 0
    for value in vars(obj).values():
        for t in (value.pixels, value.values) if isinstance(value, PackedObs) else (value,):
            if isinstance(t, torch.Tensor):
                total += t.element_size() * t.nelement()
    return total


@pytest.mark.parametrize("kind", list(DICT_RUNS))
def test_a_dicts_image_entries_are_stored_as_uint8_in_rollouts_and_replay(tmp_path, kind):
    """The frame of a Dict observation costs one byte a pixel in storage (the other entries float32), the
    memory estimate counts exactly what is allocated, and the run trains and exports the frame as uint8."""
    from agentkit.storage import rollout_bytes

    env, algorithm = DICT_RUNS[kind]
    config, host, run_dir = _train(tmp_path, env, algorithm)
    algo = build_algorithm(config, host.registry, build_env(config, host.registry), None)
    frame = 16 * 16 * 3
    if kind == "maddpg":
        data = algo.buffer.data
        for key in ("obs", "next_obs"):
            assert data[f"eye/{key}.pixels"].dtype == torch.uint8 and data[f"eye/{key}.pixels"].shape == (1000, 2, frame)
            assert data[f"eye/{key}.values"].dtype == torch.float32 and data[f"eye/{key}.values"].shape == (1000, 2, 1)
        assert type(algo.buffer).bytes_for(1000, algo.buffer.fields) == algo.buffer.nbytes()
    else:
        group = algo.group if kind == "ppo" else algo.groups[0]
        obs, others = group.storage.obs, 1 + 9 if kind == "ppo" else 1  # progress (+ the step, one-hot)
        agents = 1 if kind == "ppo" else 2
        assert obs.pixels.dtype == torch.uint8 and obs.pixels.shape == (algorithm["num_steps"], 2, agents, frame)
        assert obs.values.dtype == torch.float32 and obs.values.shape[-1] == others
        assert rollout_bytes(**group.storage_args) == _allocated(group.storage)
    algo.close()
    paths = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(paths[0])
    assert {i.name: i.type for i in policy.session.get_inputs()}["obs.frame"] == "tensor(uint8)"
    assert len(evaluate_onnx(paths[0], episodes=2, allow_imports=ALLOW).returns) == 2


@pytest.mark.parametrize("env", [{"plugin": "pettingzoo", "module": "image_test_envs", "num_envs": 2}, HUD],
                         ids=["frame", "dict"])
def test_an_agent_specific_critic_input_keeps_the_agents_pixels_as_uint8(env):
    """MAPPO's ``critic_input: agent_specific`` (state ⊕ own obs) stores the obs part's pixels as uint8, like
    the obs itself; they come back exactly, and the memory estimate counts what is allocated."""
    from agentkit.storage import PackedObs, rollout_bytes

    algorithm = {"plugin": "mappo", "total_steps": 32, "num_steps": 8, "update_epochs": 1,
                 "critic_input": "agent_specific"}
    config, host = load_run_config({"env": env, "algorithm": algorithm, "run": QUIET, "seed": 0})
    algo = build_algorithm(config, host.registry, build_env(config, host.registry), None)
    algo.iterate()
    group = algo.groups[0]
    st, frame = group.storage, 16 * 16 * 3
    obs = st.obs.unpack() if isinstance(st.obs, PackedObs) else st.obs.reshape(8, 2, 2, -1).float()
    critic = st.critic_obs
    assert isinstance(critic, PackedObs) and critic.pixels.dtype == torch.uint8
    assert critic.pixels.shape == (8, 2, 2, frame) and critic.shape[-1] == algo.state_dim + obs.shape[-1]
    torch.testing.assert_close(critic.unpack()[..., algo.state_dim:], obs, rtol=0, atol=0)  # own obs, exactly
    assert rollout_bytes(**group.storage_args) == _allocated(st)
    algo.close()


def test_packed_storage_trains_as_float32_storage_did(tmp_path, monkeypatch):
    """Keeping a Dict's frame as uint8 loses nothing: the same run with the frame stored as float32 ends with
    the same weights."""
    from agentkit.storage import ObsPacking

    env, algorithm = DICT_RUNS["ppo"]
    weights = []
    for packed in (True, False):
        if not packed:
            monkeypatch.setattr(ObsPacking, "of", classmethod(lambda cls, space, fields: None))
        _, _, run_dir = _train(tmp_path, env, algorithm, name=f"packed-{packed}")
        weights.append(load_run(run_dir, allow_imports=ALLOW).algorithm.policies()[0].actor.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], msg=key)


@pytest.mark.parametrize("algorithm", [
    {"plugin": "mappo", "total_steps": 256, "num_steps": 32, "update_epochs": 2},
    {"plugin": "mappo", "total_steps": 256, "num_steps": 32, "update_epochs": 2, "centralised": False},
    {"plugin": "maddpg", "total_steps": 256, "batch_size": 32, "learning_starts": 64, "buffer_size": 1000,
     "iteration_steps": 64},
], ids=["mappo", "ippo", "maddpg"])
def test_multi_agent_algorithms_train_on_frames_with_the_cnn(tmp_path, algorithm):
    env = {"plugin": "pettingzoo", "module": "image_test_envs", "num_envs": 2}
    config, host, run_dir = _train(tmp_path, env, algorithm, policy={"encoder": "cnn"})
    [path] = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(path)
    assert policy.session.get_inputs()[0].type == "tensor(uint8)"
    assert policy.metadata["inputs"][0]["shape"] == ["batch", 16, 16, 3]
    frames = _frames(4)
    assert policy.act(frames, agent=[0, 1, 0, 1]).shape == (4,)
    result = evaluate_onnx(path, episodes=2, allow_imports=["image_test_envs"])
    assert len(result.returns) == 2


def test_wrappers_from_the_config_apply_in_order_at_train_and_eval(tmp_path):
    from agentkit.trust import UntrustedImportError

    env = dict(IMAGE, wrappers=[{"wrapper": "image_test_envs:Invert"},
                                {"wrapper": "gymnasium.wrappers:FrameStackObservation", "kwargs": {"stack_size": 2}}])
    config, host, run_dir = _train(tmp_path, env, {"plugin": "ppo", "total_steps": 128, "num_steps": 64,
                                                   "update_epochs": 1})
    venv = build_env(config, host.registry).make_vec(1, seed=5)
    stacked = venv.reset().obs[0]
    first, _ = BrightSide().reset(seed=5)
    np.testing.assert_array_equal(stacked[-1], 255 - first)  # inverted, then stacked (latest frame last)
    [path] = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(path)
    assert policy.metadata["observation"]["shape"] == [2, 16, 16, 3]
    assert policy.metadata["observation"]["layout"] == "SHWC"
    assert policy.metadata["env"]["config"]["wrappers"] == [{"kwargs": {}, **w} for w in env["wrappers"]]
    # a file made elsewhere names the wrapper module: not imported without consent (gymnasium's own need none)
    with pytest.raises(UntrustedImportError) as refused:
        evaluate_onnx(path, episodes=1)
    assert [where for where, _ in refused.value.refused] == ["env.id", "env.wrappers[0].wrapper"]
    result = evaluate_onnx(path, episodes=2, allow_imports=["image_test_envs"])  # rebuilt with the wrappers
    assert result.lengths == [8, 8]


def _config_file(tmp_path, env: dict, algorithm: dict):
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({"env": env, "algorithm": algorithm, "run": QUIET}))  # JSON is YAML
    return path


def test_a_wrapper_that_cannot_be_imported_is_a_config_error(run_cli, tmp_path):
    env = {"plugin": "gymnasium", "id": "CartPole-v1", "wrappers": [{"wrapper": "no_such_pkg.wrappers:Thing"}]}
    proc = run_cli("train", _config_file(tmp_path, env, {"plugin": "ppo", "total_steps": 64}), "--run-dir",
                   tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    assert "env.wrappers[0].wrapper: cannot import 'no_such_pkg.wrappers'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_storage_that_cannot_fit_stops_with_exit_2_naming_bytes_and_knobs(run_cli, tmp_path):
    """256x256x3 frames x 2 envs x 400k steps = 157 GB of uint8: refused before anything is allocated."""
    env = {"plugin": "gymnasium", "id": "image_test_envs:BigFrames-v0", "num_envs": 2}
    config = _config_file(tmp_path, env, {"plugin": "ppo", "total_steps": 800_000, "num_steps": 400_000})
    proc = run_cli("train", config, "--run-dir", tmp_path / "r", env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 2, proc.stderr
    needed = re.search(r"storage needs [\d.,]+ GiB \(([\d,]+) bytes", proc.stderr)
    assert needed and int(needed.group(1).replace(",", "")) >= 400_000 * 2 * 256 * 256 * 3  # the frames alone
    assert "env.num_envs" in proc.stderr and "algorithm.num_steps" in proc.stderr
    assert "gymnasium.wrappers:GrayscaleObservation" in proc.stderr  # a wrapper that is there (Resize needs cv2)
    assert "Traceback" not in proc.stderr and "DefaultCPUAllocator" not in proc.stderr


def test_replay_that_cannot_fit_names_the_buffer_size(tmp_path):
    from agentkit.errors import ConfigError

    config, host = load_run_config({"env": {"plugin": "pettingzoo", "module": "image_test_envs"},
                                    "algorithm": {"plugin": "maddpg", "total_steps": 1000, "buffer_size": 10**9},
                                    "run": QUIET})
    with pytest.raises(ConfigError, match=r"replay buffer of algorithm.buffer_size=1000000000 .*uint8.*Lower algorithm.buffer_size"):
        build_algorithm(config, host.registry, build_env(config, host.registry), None)


def test_hint_for_an_unsupported_entry_suggests_a_wrapper_that_works_on_it():
    """MiniGrid's observation has a Text mission: FlattenObservation fails on it, so the hint keeps the
    entries agentkit takes instead."""
    from gymnasium import spaces

    from agentkit.errors import ConfigError
    from agentkit.observations import ObservationLayout

    minigrid_like = spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "direction": spaces.Discrete(4),
                                 "mission": spaces.Text(20)})
    with pytest.raises(ConfigError) as err:
        ObservationLayout(minigrid_like, "env.id 'MiniGrid-DoorKey-5x5-v0'")
    assert "FilterObservation" in str(err.value) and "['direction', 'image']" in str(err.value)
    assert "FlattenObservation" not in str(err.value)
    with pytest.raises(ConfigError, match="FlattenObservation"):  # where flattening does work, it is offered
        ObservationLayout(spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.Discrete(2),)))), "env")


FRAMES = [{"wrapper": "agentkit_envs.frames:ShrinkFrames", "kwargs": {"factor": 2, "grey": True}},
          {"wrapper": "agentkit_envs.frames:StackFrames", "kwargs": {"stack_size": 3}}]


def test_pettingzoo_frames_shrink_to_grey_and_stack_at_train_and_eval(tmp_path):
    """agentkit_envs.frames: each agent's 16x16 RGB frame becomes its 8x8 grey block mean, the last 3 stacked
    as gymnasium's FrameStackObservation stacks (reset frame repeated, oldest first); MAPPO trains its CNN on
    them and the export plays through the recorded wrappers (agentkit's own: no consent needed for them)."""
    from image_test_envs import BrightSideParallel

    env = {"plugin": "pettingzoo", "module": "image_test_envs", "num_envs": 2, "wrappers": FRAMES}
    config, host, run_dir = _train(tmp_path, env, {"plugin": "mappo", "total_steps": 128, "num_steps": 16,
                                                   "update_epochs": 1, "centralised": False},
                                   policy={"encoder": {"plugin": "cnn", "channels": [8], "kernels": [3],
                                                       "strides": [1], "features_dim": 16}})
    venv = build_env(config, host.registry).make_vec(1, seed=5)
    stacked = venv.reset()["eye"].obs[0]  # [agents, stack, H, W, 1]
    raw, _ = BrightSideParallel().reset(seed=5)
    for i, agent in enumerate(["eye_0", "eye_1"]):
        luma = raw[agent].astype(np.float64) @ [0.299, 0.587, 0.114]
        expected = luma.reshape(8, 2, 8, 2).mean(axis=(1, 3))
        assert stacked.shape == (2, 3, 8, 8, 1) and stacked.dtype == np.uint8
        assert np.abs(stacked[i, :, :, :, 0] - expected).max() <= 0.51  # rounded, in 1/256ths of the weights
        assert (stacked[i] == stacked[i, :1]).all()  # the reset frame, 3 times
    after = venv.step({"eye": np.array([0, 1])}).groups["eye"].next.obs[0]
    np.testing.assert_array_equal(after[:, :2], stacked[:, 1:])  # shifted by one, the new frame last
    assert not np.array_equal(after[:, 2], stacked[:, 2])
    [path] = export_run(run_dir, allow_imports=ALLOW)
    policy = runtime.load(path)
    assert policy.metadata["observation"]["shape"] == [3, 8, 8, 1]
    assert policy.metadata["observation"]["layout"] == "SHWC"
    result = evaluate_onnx(path, episodes=2, allow_imports=ALLOW)  # the env module only: the wrappers are known
    assert result.lengths == [8, 8]


def test_pettingzoo_frame_wrappers_name_what_they_need():
    from agentkit_envs.frames import ShrinkFrames, StackFrames
    from image_test_envs import BrightSideParallel

    from agentkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ShrinkFrames: agent 'eye_0' observes Dict.*not a uint8 \[H, W, C\]"):
        ShrinkFrames(BrightSideParallel(hud=True))
    with pytest.raises(ConfigError, match="factor 32 is larger than the 16x16 frame of agent 'eye_0'"):
        ShrinkFrames(BrightSideParallel(), factor=32)
    with pytest.raises(ConfigError, match="StackFrames: agent 'eye_0' observes Dict"):
        StackFrames(BrightSideParallel(hud=True))
    colour = ShrinkFrames(BrightSideParallel(), factor=4, grey=False)
    obs, _ = colour.reset(seed=1)
    raw, _ = BrightSideParallel().reset(seed=1)
    expected = np.rint(raw["eye_1"].reshape(4, 4, 4, 4, 3).mean(axis=(1, 3)))
    np.testing.assert_array_equal(obs["eye_1"], expected.astype(np.uint8))
    stacked = StackFrames(BrightSideParallel(), stack_size=2)
    first, _ = stacked.reset(seed=0)
    second = stacked.step({"eye_0": 0, "eye_1": 1})[0]
    np.testing.assert_array_equal(second["eye_0"][0], first["eye_0"][1])  # the caller's copy is not overwritten
    assert not np.array_equal(first["eye_0"][0], second["eye_0"][1])
