"""What stops a run, and what exit 2 means (issue 22, training side; docs/runs.md).

Bad configs and command lines, envs that return NaN, infinities, None or misshapen values, a run that
diverges, a checkpoint from another run, a full disk, a read-only run dir, a hung env, signals, and the
smaller cases of the issue's item 10. Each test drives the real code path (mostly ``agentkit.cli.main`` in
this process; the hung env and the signals a real ``agentkit train`` subprocess) on tiny envs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import AGENTKIT, cli_env
from gymnasium import spaces
from pettingzoo import ParallelEnv

import agentkit
from agentkit import checkpoint as ckpt
from agentkit import cli
from agentkit.algorithm import Progress
from agentkit.config import load_config
from agentkit.errors import CheckpointError, NonFiniteError, PluginError
from agentkit.rundir import RunDirError, load_run
from agentkit.runlog import read_metrics
from agentkit.trainer import train

# -- tiny envs that go wrong on request -----------------------------------------------------------------------


class BadEnv(gym.Env):
    """3 floats in [-1, 1], 2 actions, 8-step episodes; from step ``at`` on it returns what ``bad`` names."""

    def __init__(self, bad: str = "", at: int = 5, masked: bool = False):
        self.bad, self.at, self.masked = bad, at, masked
        box = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.observation_space = spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(2)}) if masked else box
        self.action_space = spaces.Discrete(2)
        self.steps = 0

    def _obs(self):
        obs = np.full(3, 0.5, np.float32)
        late = self.steps >= self.at
        if late and self.bad == "nan_obs":
            obs[1] = np.nan
        if late and self.bad == "shape":
            obs = np.zeros(4, np.float32)
        if late and self.bad == "string":
            obs = np.array(["up", "down", "left"])
        if not self.masked:
            return obs
        mask = np.ones(3 if late and self.bad == "mask_len" else 2, np.int8)
        return {"observation": obs, "action_mask": mask}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        late = self.steps >= self.at
        reward = {"inf_reward": float("inf"), "none_reward": None, "huge_reward": 1e30}.get(self.bad, 1.0) if late else 1.0
        return self._obs(), reward, False, self.t >= 8, {}


gym.register("robust-test/Bad-v0", entry_point=BadEnv)


class BadParallelEnv(ParallelEnv):
    """Two agents, 3-float observations; agent ``b`` returns NaN (``bad="nan_obs"``) or 5 floats
    (``bad="shape"``) from step ``at`` on."""

    metadata = {"name": "bad_parallel_v0"}

    def __init__(self, bad: str = "", at: int = 3, render_mode=None):
        self.possible_agents = ["a", "b"]
        self.bad, self.at, self.steps = bad, at, 0

    @functools.cache  # noqa: B019 - pettingzoo wants the same space object every call
    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (3,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self, agent):
        obs = np.zeros(3, np.float32)
        if agent == "b" and self.steps >= self.at:
            if self.bad == "nan_obs":
                obs[2] = np.nan
            elif self.bad == "shape":
                obs = np.zeros(5, np.float32)
        return obs

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        self.steps += 1
        done = self.t >= 6
        obs = {a: self._obs(a) for a in self.agents}
        out = obs, {a: 0.0 for a in self.agents}, {a: False for a in self.agents}, {a: done for a in self.agents}
        if done:
            self.agents = []
        return (*out, {a: {} for a in obs})


def bad_parallel_env(**kwargs):
    return BadParallelEnv(**kwargs)


TINY = {
    "seed": 0,
    "env": {"plugin": "gymnasium", "id": "robust-test/Bad-v0", "num_envs": 2},
    "algorithm": {"plugin": "ppo", "total_steps": 128, "num_steps": 16, "minibatch_size": 16, "update_epochs": 1},
    "policy": {"hidden_sizes": [8]},
    "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0},
}


def _write_config(tmp_path: Path, name: str = "c.yaml", **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _main(capsys, *args: str) -> tuple[int, str]:
    """``agentkit ARGS`` in this process: (exit code, stderr)."""
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _one_message(err: str) -> str:
    assert err.startswith("agentkit: error: ") and "Traceback" not in err, err
    return err


# -- configs and command lines (item 4 and item 5) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x01\x02\xff\xfe binary", "not a YAML config"),
        ("seed: 1\nenv: {plugin: gymnasium, id: caf\u00e9}\n".encode("latin-1"), "not UTF-8"),
        (b"seed: " + b"7" * 5000 + b"\n", "cannot be read"),
        (b"env: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests too deeply"),
        (b"env: " + b"[" * 100 + b"]" * 100 + b"\n", "nests more than 64 levels deep"),
    ],
    ids=["binary", "latin-1", "5000-digit-int", "nested-5000", "nested-100"],
)
def test_unreadable_configs_exit_2_with_one_message(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code, err = _main(capsys, "config", "show", path)
    assert code == 2 and expected in _one_message(err) and str(path) in err


def test_train_on_something_that_is_not_a_file_says_so(capsys):
    code, err = _main(capsys, "train", "/dev/zero")
    assert code == 2 and "'/dev/zero' is not a regular file" in _one_message(err) and "does not exist" not in err


@pytest.mark.parametrize(
    ("changes", "culprit"),
    [
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 99999999999999999999999}, "seed: Input should be less than or equal to 4294967295"),
        ({"policy__hidden_sizes": [0]}, "policy.hidden_sizes.0: Input should be greater than 0"),
        ({"policy__hidden_sizes": [64, -5]}, "policy.hidden_sizes.1: Input should be greater than 0"),
    ],
    ids=["seed-1", "seed-huge", "hidden-0", "hidden-negative"],
)
def test_bad_numbers_are_refused_at_validation(tmp_path, capsys, changes, culprit):
    code, err = _main(capsys, "train", _write_config(tmp_path, **changes), "--run-dir", tmp_path / "run")
    assert code == 2 and culprit in _one_message(err)
    assert not (tmp_path / "run").exists()


def test_a_huge_seed_on_the_command_line_is_refused(tmp_path, capsys):
    code, err = _main(capsys, "train", _write_config(tmp_path), "--set", "seed=99999999999999999999999")
    assert code == 2 and "seed: Input should be less than or equal to 4294967295" in _one_message(err)
    code, err = _main(capsys, "train", _write_config(tmp_path), "--set", "seed=" + "9" * 5000)
    assert code == 2 and "--set seed=...: the value cannot be read" in _one_message(err)


def test_an_empty_hidden_sizes_list_is_a_linear_policy(host):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["policy"]["hidden_sizes"] = []
    assert load_config(data, host.registry).policy.hidden_sizes == []


def test_an_unimportable_env_module_names_it(tmp_path, capsys):
    code, err = _main(capsys, "train", _write_config(tmp_path, env__id="nosuchmodule:Foo-v0"))
    assert code == 2 and "cannot import module 'nosuchmodule'" in _one_message(err)


def test_a_minibatch_larger_than_the_batch_is_refused(tmp_path, capsys):
    code, err = _main(capsys, "train", _write_config(tmp_path, algorithm__minibatch_size=64), "--run-dir",
                      tmp_path / "run")
    assert code == 2 and "algorithm.minibatch_size: 64 is larger than the batch" in _one_message(err)
    assert "= 32" in err and not (tmp_path / "run").exists()


# -- the env boundary (item 2 and item 5) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("nan_obs", "returned nan in the observation at step 5 (env copy 0, element 1)"),
        ("inf_reward", "returned inf in the reward at step 5 (env copy 0)"),
        ("none_reward", "returned nan in the reward at step 5 (env copy 0) (an env returning None as a reward"),
        ("shape", "(env copy 0): the observation has shape (4,), expected (3,)"),
        ("string", "(env copy 0): the observation holds <U4 data"),
    ],
)
def test_bad_env_values_stop_the_run_naming_them(tmp_path, capsys, bad, expected):
    run = tmp_path / "run"
    code, err = _main(capsys, "train", _write_config(tmp_path, env__kwargs={"bad": bad}), "--run-dir", run)
    assert code == 2 and "'robust-test/Bad-v0'" in _one_message(err) and expected in err, err
    assert "checkpoints/latest.pt holds the last good state (step 0)" in err
    assert load_checkpoint_step(run) == 0
    assert all(torch.isfinite(t).all() for t in _actor_tensors(run))


def test_a_wrong_shape_under_async_vectorization_is_named_as_under_sync(tmp_path, capsys):
    """gymnasium's AsyncVectorEnv fails in its worker's shared-memory write; each copy reports the misfit
    instead, and the parent names it with the sync message (no worker traceback)."""
    config = _write_config(tmp_path, env__kwargs={"bad": "shape"}, env__vectorization="async")
    code, err = _main(capsys, "train", config, "--run-dir", tmp_path / "run")
    assert code == 2 and "(env copy 0): the observation has shape (4,), expected (3,)" in _one_message(err), err
    assert "Traceback" not in err and "Worker" not in err


def test_a_mask_of_the_wrong_length_names_the_entry_and_shapes(tmp_path, capsys):
    config = _write_config(tmp_path, env__kwargs={"bad": "mask_len", "masked": True})
    code, err = _main(capsys, "train", config, "--run-dir", tmp_path / "run")
    assert code == 2 and "entry 'action_mask' has shape (3,), expected (2,)" in _one_message(err)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("nan_obs", "returned nan in the observation of group 'agents' at step 3 (env copy 0, agent 'b', element 2)"),
        ("shape", "(env copy 0, agent 'b'): the observation has shape (5,), expected (3,)"),
    ],
)
def test_multi_agent_env_values_are_checked_the_same_way(tmp_path, capsys, bad, expected):
    config = _write_config(
        tmp_path,
        env={"plugin": "pettingzoo", "module": "test_robustness:bad_parallel_env", "num_envs": 2,
             "kwargs": {"bad": bad}, "groups": {"agents": ["a", "b"]}},
        algorithm={"plugin": "mappo", "total_steps": 64, "num_steps": 8, "update_epochs": 1},
    )
    code, err = _main(capsys, "train", config, "--run-dir", tmp_path / "run")
    assert code == 2 and expected in _one_message(err), err


def load_checkpoint_step(run: Path) -> int:
    return int(ckpt.load_checkpoint(run / "checkpoints" / "latest.pt")["step"])


def _actor_tensors(run: Path) -> list[torch.Tensor]:
    state = ckpt.load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]["actor"]
    return [t for t in state.values() if t.is_floating_point()]


# -- losses, gradients, weights (item 2) -----------------------------------------------------------------------


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    config = _write_config(tmp_path, env__kwargs={"bad": "huge_reward", "at": 40},
                           run__checkpoint_every_steps=32, algorithm__total_steps=512)
    code, err = _main(capsys, "train", config, "--run-dir", run)
    assert code == 2 and "training diverged in iteration" in _one_message(err), err
    assert "non-finite losses: losses/value = inf" in err
    step = load_checkpoint_step(run)
    assert f"holds the last good state (step {step})" in err and 0 < step < 512
    assert all(torch.isfinite(t).all() for t in _actor_tensors(run))
    _, rows = read_metrics(run / "metrics.csv")
    assert rows and all(np.isfinite(float(r["losses/value"])) for r in rows)  # the bad iteration is not logged


class Saboteur:
    """Puts a NaN into the critic (which eval and export never see) at iteration ``at``."""

    def __init__(self, at: int):
        self.at = at

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        if iteration == self.at:
            with torch.no_grad():
                run.algorithm.critic.value_out.weight[0, 0] = float("nan")


def test_a_checkpoint_is_never_saved_with_non_finite_weights(tmp_path, host):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"]["checkpoint_every_steps"] = 64
    config = load_config(data, host.registry)
    host.pm.register(saboteur := Saboteur(at=4), name="saboteur")
    try:
        with pytest.raises(NonFiniteError, match=r"state holds nan at critic\.value_out\.weight\[0, 0\]"):
            train(config, host, run_dir=tmp_path / "run")
    finally:
        host.pm.unregister(saboteur)
    assert load_checkpoint_step(tmp_path / "run") == 64  # iteration 2's; iteration 4's was refused


# -- checkpoints know their run (item 3) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished tiny runs that differ in the learning rate: (run a, run b)."""
    base = tmp_path_factory.mktemp("runs")
    runs = []
    for name, lr in (("a", 3e-4), ("b", 1e-3)):
        config = _write_config(base, f"{name}.yaml", algorithm__learning_rate=lr, algorithm__total_steps=64)
        assert cli.main(["train", str(config), "--run-dir", str(base / name)]) == 0
        runs.append(base / name)
    return runs


def test_a_checkpoint_from_another_run_is_refused_naming_the_keys(two_runs, tmp_path, capsys):
    a, b = two_runs
    victim = tmp_path / "a"
    shutil.copytree(a, victim)
    shutil.copy(b / "checkpoints" / "latest.pt", victim / "checkpoints" / "latest.pt")
    for args in (["eval", victim, "--episodes", "1"], ["export", victim, "--out", tmp_path / "x.onnx"],
                 ["train", victim, "--resume", "--set", "algorithm.total_steps=128"]):
        code, err = _main(capsys, *args)
        assert code == 2 and "belongs to another run" in _one_message(err), (args, err)
        assert "algorithm.learning_rate: 0.001 in the checkpoint, 0.0003 in" in err
    assert not (tmp_path / "x.onnx").exists()


def test_an_old_checkpoint_without_a_fingerprint_is_checked_on_its_config(two_runs, tmp_path):
    a, b = two_runs
    victim = tmp_path / "a"
    shutil.copytree(a, victim)
    for source, accepted in ((a, True), (b, False)):
        payload = ckpt.load_checkpoint(source / "checkpoints" / "latest.pt")
        del payload["fingerprint"], payload["sha256"], payload["format"], payload["version"]
        ckpt.save_checkpoint(victim / "checkpoints" / "latest.pt", payload)
        if accepted:
            load_run(victim).algorithm.close()
        else:
            with pytest.raises(CheckpointError, match="algorithm.learning_rate"):
                load_run(victim)


def test_a_bigger_budget_still_resumes_and_a_linear_lr_continues_smoothly(tmp_path, capsys):
    run = tmp_path / "run"
    config = _write_config(tmp_path, algorithm__lr_schedule="linear", algorithm__total_steps=128)
    assert _main(capsys, "train", config, "--run-dir", run)[0] == 0
    code, err = _main(capsys, "train", run, "--resume", "--set", "algorithm.total_steps=256")
    assert code == 0, err
    _, rows = read_metrics(run / "metrics.csv")
    lrs = [float(r["charts/lr_actor"]) for r in rows]
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(32, 257, 32))
    first, extension = lrs[:4], lrs[4:]
    assert first == pytest.approx([3e-4 * (1 - s / 128) for s in (0, 32, 64, 96)])
    assert extension[0] == pytest.approx(first[-1])  # no jump back up to 3e-4 * (1 - 128/256)
    assert all(x > y for x, y in zip(extension, extension[1:], strict=False)) and extension[-1] > 0


def test_maddpg_exploration_noise_continues_when_a_run_is_extended(host):
    from agentkit.algorithm import BuildContext

    def build(total: int):
        data = {"env": {"plugin": "pettingzoo", "module": "test_robustness:bad_parallel_env", "num_envs": 1},
                "algorithm": {"plugin": "maddpg", "total_steps": total, "noise_decay_fraction": 1.0,
                              "buffer_size": 100, "batch_size": 8},
                "policy": {"hidden_sizes": [8]}}
        config = load_config(data, host.registry)
        source = host.registry.get("env", "pettingzoo").factory(config.env)
        return host.registry.get("algorithm", "maddpg").factory(
            config.algorithm, BuildContext(config, host.registry, source, None, torch.device("cpu")))

    finished = build(1000)
    finished.steps_done = 1000
    assert finished.noise_std() == pytest.approx(finished.cfg.noise_std_final)
    extended = build(2000)
    extended.load_state_dict(finished.state_dict())
    # the noise stays where the run left it (the budget alone would put it back halfway, at 0.175)
    assert extended.noise_std() == pytest.approx(finished.cfg.noise_std_final)
    extended.steps_done = 1500
    assert extended.noise_std() == pytest.approx(finished.cfg.noise_std_final)
    finished.close()
    extended.close()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    code, err = _main(capsys, "train", _write_config(tmp_path), "--run-dir", tmp_path / "run")
    assert code == 2 and "is a file, not a directory" in _one_message(err)


def test_progress_reanchors_only_when_the_budget_changes():
    p = Progress(100)
    assert [p.at(s) for s in (0, 50, 90)] == [0.0, 0.5, 0.9]
    same = Progress(100)
    same.load_state_dict(p.state_dict(), 90)
    assert same.at(95) == pytest.approx(0.95)
    longer = Progress(200)
    longer.load_state_dict(p.state_dict(), 100)
    assert longer.at(100) == pytest.approx(0.9) and longer.at(150) == pytest.approx(0.95) and longer.at(200) == 1.0


# -- writes that fail (items 5 and 6) --------------------------------------------------------------------------


class DiskFiller:
    """At iteration ``at``, points the temporary files of the next checkpoint writes at /dev/full, so that the
    trainer's real write path gets a real ENOSPC from the kernel."""

    def __init__(self, at: int, names: tuple[str, ...]):
        self.at, self.names = at, names

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        if iteration == self.at:
            for name in self.names:
                (run.checkpoint_dir / f".{name}{ckpt.TMP_MARK}{os.getpid()}").symlink_to("/dev/full")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_during_a_checkpoint_exits_2_and_leaves_no_temp_file(tmp_path, host):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["run"]["checkpoint_every_steps"] = 64
    config = load_config(data, host.registry)
    host.pm.register(filler := DiskFiller(at=4, names=("step_128.pt",)), name="filler")
    run = tmp_path / "run"
    try:
        with pytest.raises(RunDirError, match=r"step_128\.pt'?: No space left on device\. Free some space") as info:
            train(config, host, run_dir=run)
    finally:
        host.pm.unregister(filler)
    assert "--resume" in str(info.value)
    assert load_checkpoint_step(run) == 64
    leftovers = [p.name for p in run.rglob("*") if ckpt.TMP_MARK in p.name]
    assert leftovers == [] and not (run / "checkpoints" / "step_128.pt").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_config_schema_out_leaves_no_file_when_the_write_fails(tmp_path, capsys):
    out = tmp_path / "schema.json"
    (tmp_path / f".schema.json{ckpt.TMP_MARK}{os.getpid()}").symlink_to("/dev/full")
    code, err = _main(capsys, "config", "schema", "--out", out)
    assert code == 2 and "No space left on device" in _one_message(err)
    assert list(tmp_path.iterdir()) == []  # neither a 0-byte schema.json nor the temp file
    code, err = _main(capsys, "config", "schema", "--out", tmp_path)
    assert code == 2 and "is a directory" in _one_message(err)


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` unwritable, even for root (``chattr +i``), for the length of the block."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_a_read_only_run_dir_exits_2_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with _read_only(run):
        code, err = _main(capsys, "train", _write_config(tmp_path), "--run-dir", run)
    assert code == 2 and f"The run dir {str(run)!r} is not writable" in _one_message(err), err


# -- start-up interrupted (item 10) ----------------------------------------------------------------------------


class Interrupter:
    @agentkit.hookimpl
    def agentkit_train_start(self, run):
        raise KeyboardInterrupt  # what a Ctrl-C in the first seconds does


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_interrupted_at_start_up_leaves_a_dir_a_plain_retrain_accepts(tmp_path, host, existed):
    run = tmp_path / "run"
    if existed:
        run.mkdir()
    config = load_config(yaml.safe_load(yaml.safe_dump(TINY)), host.registry)
    host.pm.register(interrupter := Interrupter(), name="interrupter")
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, host, run_dir=run)
    finally:
        host.pm.unregister(interrupter)
    assert run.exists() == existed
    assert train(config, host, run_dir=run).reason == "completed"
    with pytest.raises(RunDirError, match="already holds a run"):  # a run that saved is still protected
        train(config, host, run_dir=run)


# -- plugins (item 10) -----------------------------------------------------------------------------------------


def test_a_plugin_calling_sys_exit_at_import_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "exiting_plugin.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = _main(capsys, "plugins", "-p", "exiting_plugin")
    assert code == 2 and 'plugin module "exiting_plugin" called sys.exit(3)' in _one_message(err)


class BadMetric:
    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        metrics["custom/label"] = "fast"


def test_a_hooks_non_numeric_metric_is_blamed_on_the_hook(tmp_path, host):
    config = load_config(yaml.safe_load(yaml.safe_dump(TINY)), host.registry)
    host.pm.register(bad := BadMetric(), name="bad-metric-plugin")
    try:
        with pytest.raises(PluginError) as info:
            train(config, host, run_dir=tmp_path / "run")
    finally:
        host.pm.unregister(bad)
    message = str(info.value)
    assert "'custom/label' = 'fast', set in agentkit_iteration_end by plugin 'bad-metric-plugin'" in message
    assert "algorithm plugin" not in message


def test_a_refused_checkpoint_does_not_advise_weights_only_false(tmp_path):
    class Code:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "latest.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Code()}, path)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert "weights_only=False" not in message and "Re-running" not in message
    assert "GLOBAL posix.system" in message or "GLOBAL os.system" in message


# -- a hung env, and signals (item 8) --------------------------------------------------------------------------

HANG_PLUGIN = '''
"""An env plugin module for the tests: registers robust-test/Hang-v0, whose step hangs from step `at` on."""
import time
from pathlib import Path

import gymnasium as gym
import numpy as np


class HangEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, at=40, marker=""):
        self.at, self.marker, self.steps = at, marker, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps >= self.at:
            if self.marker:
                Path(self.marker).write_text("hung")
            while True:
                time.sleep(1000)
        return np.zeros(2, np.float32), 1.0, False, self.steps % 8 == 0, {}


gym.register("robust-test/Hang-v0", entry_point=HangEnv)
'''


def _hang_run(tmp_path: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "hang_plugin.py").write_text(textwrap.dedent(HANG_PLUGIN))
    config = _write_config(tmp_path, env={"plugin": "gymnasium", "id": "robust-test/Hang-v0", "num_envs": 1,
                                          "kwargs": {"at": 40, "marker": str(tmp_path / "hung")}},
                           algorithm__total_steps=10_000, run__checkpoint_every_steps=32)
    args = [*AGENTKIT, "train", str(config), "-p", "hang_plugin", "--run-dir", str(tmp_path / "run"), *extra]
    return args, cli_env(PYTHONPATH=str(tmp_path))


def test_a_step_past_env_step_timeout_stops_the_run_naming_the_env(tmp_path):
    args, env = _hang_run(tmp_path, "--set", "env.step_timeout=1")
    start = time.monotonic()
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "env 'robust-test/Hang-v0': step 40 did not return within env.step_timeout = 1 s" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - start < 100
    assert load_checkpoint_step(tmp_path / "run") == 32


def test_a_second_sigterm_ends_a_hung_run_at_once(tmp_path):
    """(A second Ctrl-C takes the same path, raising KeyboardInterrupt: exit 130.)"""
    signum = signal.SIGTERM
    args, env = _hang_run(tmp_path)
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "hung").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signum)
        time.sleep(1.0)
        assert proc.poll() is None  # the first signal waits for the iteration, which the env holds up
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert load_checkpoint_step(tmp_path / "run") == 32


def test_identical_maddpg_runs_agree_except_the_wall_clock_columns(tmp_path, host):
    """MADDPG's steps-per-second figure is one of the documented wall-clock columns (*steps_per_second)."""
    data = {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": "test_robustness:bad_parallel_env", "num_envs": 2},
        "algorithm": {"plugin": "maddpg", "total_steps": 240, "learning_starts": 40, "batch_size": 16,
                      "train_every": 20, "iteration_steps": 80, "buffer_size": 500},
        "policy": {"hidden_sizes": [8]},
        "run": {"progress": "none", "tensorboard": False},
    }
    tables = []
    for name in ("a", "b"):
        train(load_config(data, host.registry), host, run_dir=tmp_path / name)
        header, rows = read_metrics(tmp_path / name / "metrics.csv")
        tables.append((header, rows))
    (header, rows_a), (_, rows_b) = tables
    differing = {c for c in header for ra, rb in zip(rows_a, rows_b, strict=True) if ra[c] != rb[c]}
    wall_clock = {c for c in header if c == "time" or c.startswith("time/") or c.endswith("steps_per_second")}
    assert "losses/critic" in header and differing <= wall_clock and "charts/sps" not in header


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_an_env_source_that_leaves_a_protocol_attribute_out_is_refused_by_name():
    """The env boundary (agentkit.envcheck.CheckedSource) is the one place a source's declarations are checked;
    algorithms, eval and export then read them without probing."""
    from agentkit.envcheck import CheckedSource
    from agentkit.errors import PluginError

    class Partial:  # an EnvSource from before observation_fields and enforces_step_timeout were declared
        env_id, multi_agent, has_mask = "partial", False, False
        observation_space, action_space = spaces.Box(-1, 1, (2,)), spaces.Discrete(2)

    with pytest.raises(PluginError, match="Partial does not declare observation_fields, enforces_step_timeout, "
                                          "make_vec, close: "):
        CheckedSource(Partial())

    class Unclosable(Partial):  # everything but close(), which the trainer calls when the run ends
        observation_fields, enforces_step_timeout = None, False

        def make_vec(self, num_envs, seed, render_mode=None):
            raise AssertionError("not called")

    with pytest.raises(PluginError, match=r"Unclosable does not declare close: .*def close\(self\): pass"):
        CheckedSource(Unclosable())

    class PartialTeam(Unclosable):
        multi_agent = True
        groups, agents, state_dim = {}, [], 0

        def close(self):
            pass

    with pytest.raises(PluginError, match="PartialTeam does not declare turn_based"):
        CheckedSource(PartialTeam())
