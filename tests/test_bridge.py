"""The engine bridge (docs/bridge.md) with the Python client: protocol, handshake refusals, bridged training
(TCP and WebSocket), the same transitions as in-process, params at reset, and every fault of issue 23."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from agentkit_envs.remote.protocol import PROTOCOL_VERSION, BridgeError, decode, encode, parse_hello
from conftest import AGENTKIT, REPO, cli_env

from agentkit.build import build_env
from agentkit.config import load_config
from agentkit.host import PluginHost
from agentkit.trainer import train

PY = sys.executable
SERVE_GYM = REPO / "exports" / "python" / "serve_gymnasium.py"
GAMES = REPO / "tests" / "bridge_games.py"


def counter(mode: str = "good", **env) -> dict:
    return {"plugin": "remote", "command": f"{PY} {GAMES} {mode} --port {{port}} --instance {{instance}}",
            "num_envs": 2, "connect_timeout": 20, **env}


def gym_game(env_id: str, extra: str = "", **env) -> dict:
    return {"plugin": "remote", "command": f"{PY} {SERVE_GYM} {env_id} --port {{port}} --instance {{instance}} {extra}".strip(),
            "num_envs": 2, "connect_timeout": 20, **env}


def source_of(env: dict):
    host = PluginHost()
    config = load_config({"env": env, "algorithm": {"plugin": "ppo", "total_steps": 1}}, host.registry)
    return build_env(config, host.registry)


def train_cli(tmp_path: Path, env: dict, algorithm: dict | None = None, timeout: float = 120):
    cfg = {"seed": 0, "env": env, "algorithm": algorithm or {"plugin": "ppo", "total_steps": 256, "num_steps": 64},
           "run": {"progress": "none", "tensorboard": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([*AGENTKIT, "train", str(path), "--run-dir", str(tmp_path / "run")], capture_output=True,
                          text=True, env=cli_env(), cwd=tmp_path, timeout=timeout)


def assert_exit_2(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


# -- the protocol ----------------------------------------------------------------------------------------


def test_payload_round_trip_and_layout():
    payload = encode({"type": "step"}, {"action_int": np.array([2, -1], np.int32),
                                        "action_float": np.array([0.5], np.float32)})
    hlen = int.from_bytes(payload[:4], "little")
    assert payload[4 + hlen:] == np.array([2, -1], "<i4").tobytes() + np.array([0.5], "<f4").tobytes()
    header, blobs = decode(payload)
    assert header["type"] == "step"
    assert header["blobs"] == [{"name": "action_int", "dtype": "int32", "count": 2},
                               {"name": "action_float", "dtype": "float32", "count": 1}]
    assert blobs["action_int"].tolist() == [2, -1] and blobs["action_float"].tolist() == [0.5]


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p[:-2], "action_float"),                                        # cut short
    (lambda p: p + b"\0", "header.blobs"),                                     # bytes left over
    (lambda p: p.replace(b'"float32"', b'"float64"'), "action_float"),         # unknown dtype
    (lambda p: p[:4] + b"\xff" + p[5:], "header"),                             # header not JSON
])
def test_malformed_payloads_name_the_field(mutate, field):
    payload = encode({"type": "step"}, {"action_int": np.array([1], np.int32),
                                        "action_float": np.array([0.5, 0.25], np.float32)})
    with pytest.raises(BridgeError) as info:
        decode(mutate(payload))
    assert info.value.details["field"] == field
    assert field.split(".")[0] in str(info.value)


def test_hello_refusals_give_both_sides():
    agent = {"name": "a", "observation": {"shape": [2]}, "action": {"kind": "discrete", "n": 2}}
    with pytest.raises(BridgeError) as info:
        parse_hello({"type": "hello", "protocol": 7, "game": "g", "agents": [agent]})
    assert info.value.code == "protocol_mismatch"
    assert info.value.details == {"trainer": [1, PROTOCOL_VERSION], "game": 7}
    assert "protocol 7" in str(info.value) and f"speaks 1 and {PROTOCOL_VERSION}" in str(info.value)
    bad = dict(agent, action={"kind": "wheel"})
    with pytest.raises(BridgeError, match=r"agents\[0\]\.action\.kind"):
        parse_hello({"type": "hello", "protocol": 1, "game": "g", "agents": [bad]})
    hybrid = {"kind": "hybrid", "types": [{"name": "go", "params": ["x"]}, {"name": "stop", "params": []}],
              "params": [{"name": "x", "low": 0, "high": 1}]}
    hello = parse_hello({"type": "hello", "protocol": 1, "game": "g", "agents": [dict(agent, action=hybrid, mask=True)]})
    spec = hello.agents[0]
    assert (spec.mask_dim, spec.n_int, spec.n_float) == (2, 1, 1)
    assert spec.action.type_names == ["go", "stop"]


# -- bridged games behave like in-process ones ------------------------------------------------------------


@pytest.mark.parametrize("spin_us", [0, 2000])  # reads that block at once, reads that busy-wait first
def test_bridged_moving_gives_the_in_process_transitions(spin_us):
    """Same seeds, same actions: the bridged Python game returns what gymnasium's env returns, bit for bit."""
    import agentkit_envs.games  # noqa: F401

    source = source_of(gym_game("agentkit/Moving-v0", spin_us=spin_us))
    try:
        venv = source.make_vec(2, seed=5)
        local = [gym.make("agentkit/Moving-v0") for _ in range(2)]
        o = venv.reset()
        expect = np.stack([e.reset(seed=5 + i)[0] for i, e in enumerate(local)])
        np.testing.assert_array_equal(o.obs, expect)
        rng = np.random.default_rng(0)
        returns = np.zeros(2)
        for _ in range(230):  # past the 200-step time limit: one auto-reset
            types = rng.integers(0, 3, size=2)
            params = rng.uniform(-1, 1, size=(2, 2)).astype(np.float32)
            tr = venv.step((types, params))
            for i, e in enumerate(local):
                obs, r, term, trunc, _ = e.step((int(types[i]), params[i]))
                returns[i] += r
                assert tr.reward[i] == np.float32(r) and tr.terminated[i] == term and tr.truncated[i] == trunc
                if term or trunc:
                    np.testing.assert_array_equal(tr.final_obs[i], obs)
                    obs, _ = e.reset()
                np.testing.assert_array_equal(tr.next.obs[i], obs)
            if tr.episode_returns:
                assert np.allclose(sorted(tr.episode_returns), sorted(returns[(tr.terminated | tr.truncated)]), atol=1e-4)
                returns[tr.terminated | tr.truncated] = 0.0
        venv.close()
    finally:
        source.close()


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
def test_ppo_trains_masked_dungeon_over_the_bridge_then_eval_and_export(tmp_path, transport):
    host = PluginHost()
    config = load_config({
        "seed": 0, "env": gym_game("agentkit/Dungeon-v0", transport=transport),
        "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 128},
        "run": {"progress": "none", "tensorboard": False},
    }, host.registry)
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 512
    assert result["bridge/restarts"] == 0.0
    assert result["charts/episodes"] >= 1
    if transport == "websocket":
        return
    env = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["env"]
    allow = ["--allow-import", env["command"]]
    ev = subprocess.run([*AGENTKIT, "eval", str(tmp_path / "run"), "--episodes", "2", "--json", *allow],
                        capture_output=True, text=True, env=cli_env(), timeout=120)
    assert ev.returncode == 0, ev.stderr
    ex = subprocess.run([*AGENTKIT, "export", str(tmp_path / "run"), "--out", str(tmp_path / "p.onnx"), *allow],
                        capture_output=True, text=True, env=cli_env(), timeout=120)
    assert ex.returncode == 0, ex.stderr
    from agentkit import runtime

    policy = runtime.load(tmp_path / "p.onnx")
    assert policy.metadata["mask"]["dim"] == 6 and policy.metadata["env"]["plugin"] == "remote"
    # the game trained over the bridge is also a Python env here: --env plays the file in it, no game started
    from agentkit.evaluation import evaluate_onnx

    played = evaluate_onnx(tmp_path / "p.onnx", episodes=2, env="agentkit/Dungeon-v0")
    assert played.episodes == 2


def test_a_launch_mode_run_exports_without_trusting_its_command_but_eval_still_asks(tmp_path):
    """Export rebuilds the run from the game's hello kept in game.json: no game starts, so the launch command
    needs no --allow-import. Eval plays, so it launches the game: refused without the flag, and so is an export
    of a run that has no game.json (it would ask a launched game for its spaces). The command touches a marker
    file: a refused command never ran."""
    marker = tmp_path / "launched"
    env = counter()
    env["command"] = f"sh -c 'touch {marker}; exec \"$0\" \"$@\"' " + env["command"]
    proc = train_cli(tmp_path, env, {"plugin": "ppo", "total_steps": 64, "num_steps": 32}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert marker.exists() and (run / "game.json").is_file()
    marker.unlink()
    ex = subprocess.run([*AGENTKIT, "export", str(run), "--out", str(tmp_path / "p.onnx")],
                        capture_output=True, text=True, env=cli_env(), timeout=300)
    assert ex.returncode == 0, ex.stderr
    assert (tmp_path / "p.onnx").is_file() and not marker.exists()
    ev = subprocess.run([*AGENTKIT, "eval", str(run), "--episodes", "1"], capture_output=True, text=True,
                        env=cli_env(), timeout=300)
    assert_exit_2(ev, "env.command", "--allow-import")
    assert not marker.exists()
    ev = subprocess.run([*AGENTKIT, "eval", str(run), "--episodes", "1", "--allow-import", env["command"]],
                        capture_output=True, text=True, env=cli_env(), timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert marker.exists()
    marker.unlink()
    (run / "game.json").unlink()  # a run from before game.json: its spaces come from a launched game
    ex = subprocess.run([*AGENTKIT, "export", str(run), "--out", str(tmp_path / "q.onnx")],
                        capture_output=True, text=True, env=cli_env(), timeout=300)
    assert_exit_2(ex, "env.command", "--allow-import")
    assert not marker.exists()


def test_params_reach_the_game_at_every_reset_and_hooks_may_change_them():
    source = source_of(counter(params={"bonus": 0.5}))
    try:
        venv = source.make_vec(2, seed=0)
        o = venv.reset()
        assert o.obs[:, 1].tolist() == [0.5, 0.5]
        source.params["bonus"] = 2.0  # what a lifecycle hook does through run.env.params
        for _ in range(5):
            tr = venv.step(np.ones(2, np.int64))
        assert tr.truncated.all() and tr.next.obs[:, 1].tolist() == [2.0, 2.0]  # the new episode got the new value
        assert tr.episode_infos == [{"bonus": 0.5}, {"bonus": 0.5}] and tr.episode_returns == [5.0, 5.0]
        venv.close()
    finally:
        source.close()


def test_an_agent_that_leaves_is_dead_for_the_rest_of_the_episode():
    source = source_of(counter("two-agents"))
    try:
        assert source.multi_agent
        (group,) = source.groups  # a and b have the same spaces: one policy group
        venv = source.make_vec(1, seed=0)
        o = venv.reset()[group]
        assert o.alive.tolist() == [[True, True]]
        tr = venv.step({group: np.ones(2, np.int64)}).groups[group]
        assert tr.reward.tolist() == [[1.0, 1.0]]
        tr = venv.step({group: np.ones(2, np.int64)}).groups[group]   # b terminates here
        assert tr.terminated.tolist() == [[False, True]] and tr.next.alive.tolist() == [[True, False]]
        assert tr.next.obs[0, 1].tolist() == [0.0, 0.0] and tr.next.mask[0, 1].all()
        tr = venv.step({group: np.ones(2, np.int64)}).groups[group]
        assert tr.reward.tolist() == [[1.0, 0.0]]  # b acts no more
        venv.close()
    finally:
        source.close()


# -- faults -------------------------------------------------------------------------------------------------


def play(env: dict, steps: int = 12, num_envs: int = 2) -> None:
    """Build the source, reset and step ``steps`` times with action 1 (raises what the bridge raises)."""
    source = source_of(env)
    try:
        venv = source.make_vec(num_envs, seed=0)
        try:
            venv.reset()
            for _ in range(steps):
                venv.step(np.ones(num_envs, np.int64))
        finally:
            venv.close()
    finally:
        source.close()


def test_a_crashed_instance_is_restarted_and_the_run_goes_on(tmp_path):
    host = PluginHost()
    config = load_config({
        "seed": 0, "env": gym_game("agentkit/Moving-v0", "--crash-at 150"),
        "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 128},
        "run": {"progress": "none", "tensorboard": False},
    }, host.registry)
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 512
    assert result["bridge/restarts"] >= 2  # both instances crashed at their 150th step
    assert result["bridge/dropped_episodes"] >= 2
    assert [float(r["bridge/restarts"]) for r in metrics(tmp_path / "run")][0] == 0.0


def test_a_hanging_game_exits_2_naming_the_instance_and_the_message(tmp_path):
    proc = train_cli(tmp_path, gym_game("agentkit/Moving-v0", "--hang-at 3", step_timeout=1.5))
    assert_exit_2(proc, "instance 0 did not answer step #3 within 1.5 s", "env.step_timeout")
    assert proc.stderr.count("\n") <= 3  # one message (and the game's output), no traceback


def test_a_game_that_never_connects():
    env = {"plugin": "remote", "command": f"{PY} -c \"import time; print('starting', flush=True); time.sleep(60)\"",
           "connect_timeout": 1.5, "num_envs": 1}
    with pytest.raises(BridgeError, match=r"instance 0 did not connect to 127.0.0.1:\d+ within 1.5 s") as info:
        source_of(env)
    assert "env.connect_timeout" in str(info.value) and "starting" in str(info.value)
    env["command"] = f"{PY} -c \"import sys; sys.exit('no display')\""
    with pytest.raises(BridgeError, match="instance 0: the game exited with code 1 before it connected") as info:
        source_of(env)
    assert "no display" in str(info.value)


def test_listen_mode_needs_a_port_and_gives_up_clearly():
    with pytest.raises(BridgeError, match="env.port: mode listen needs a fixed port"):
        source_of({"plugin": "remote", "mode": "listen", "port": 0})
    with pytest.raises(BridgeError, match=r"no game connected to tcp://127.0.0.1:\d+ within 1 s"):
        source_of({"plugin": "remote", "mode": "listen", "port": _free_port(), "connect_timeout": 1.0})


def test_a_disconnect_in_listen_mode_stops_after_the_wait():
    port = _free_port()
    game = subprocess.Popen([PY, str(GAMES), "disconnect", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        env = {"plugin": "remote", "mode": "listen", "port": port, "connect_timeout": 1.5}
        with pytest.raises(BridgeError, match=r"no game connected to tcp://127.0.0.1:\d+ within 1.5 s .* instance 0"):
            play(env, num_envs=1)
    finally:
        game.kill()
        game.wait()


@pytest.mark.parametrize("mode, pattern", [
    ("bad-blob", r"bad_frame: instance 0's step_result blob 'obs' has 1 values; the declared agents and spaces need 2"),
    ("oversized", r"frame_too_large: the game sent a 67108864-byte payload; the limit is 16777216 bytes "
                  r"\(env.max_frame_bytes\)"),
    ("protocol9", r"protocol_mismatch: the game speaks bridge protocol 9, this trainer speaks 1 and 2"),
    ("other-spaces", r"space_mismatch: .* declares agents\[0\].observation.shape = \[3\], but the run's first "
                     r"instance declared \[2\]"),
])
def test_bad_games_stop_with_one_message_naming_the_field(mode, pattern):
    with pytest.raises(BridgeError, match=pattern) as info:
        play(counter(mode))
    assert info.value.exit_code == 2


def test_a_refused_game_hears_why():
    port = _free_port()
    game = subprocess.Popen([PY, str(GAMES), "good", "--port", str(port), "--token", "wrong"],
                            stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(BridgeError, match="bad_token: the game at .* gave a wrong token"):
            source_of({"plugin": "remote", "mode": "listen", "port": port, "token": "s3cret", "connect_timeout": 20})
        out, _ = game.communicate(timeout=20)
        assert "the trainer refused the game: bad_token" in out and "s3cret" not in out
    finally:
        game.kill()


def test_another_address_requires_a_token():
    with pytest.raises(BridgeError, match="env.host: '0.0.0.0' lets other machines connect.*set env.token"):
        source_of({"plugin": "remote", "mode": "listen", "host": "0.0.0.0", "port": _free_port()})


_TRAINER = """
import sys, numpy as np
from agentkit.config import load_config
from agentkit.host import PluginHost
from agentkit.build import build_env
host = PluginHost()
env = {"plugin": "remote", "command": sys.argv[1], "num_envs": 2}
source = build_env(load_config({"env": env, "algorithm": {"plugin": "ppo", "total_steps": 1}}, host.registry),
                   host.registry)
venv = source.make_vec(2, seed=0)
venv.reset()
print("playing", flush=True)
while True:
    venv.step((np.zeros(2, np.int64), np.zeros((2, 2), np.float32)))
"""


def test_kill_9_of_the_trainer_leaves_no_game_running():
    marker = f"orphan-check-{os.getpid()}"
    command = f"{PY} {SERVE_GYM} agentkit/Moving-v0 --port {{port}} --instance {{instance}} --token {marker}"
    trainer = subprocess.Popen([PY, "-c", _TRAINER, command], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "playing"
        assert len(_processes_with(marker, but=trainer.pid)) == 2
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        deadline = time.time() + 10
        while _processes_with(marker, but=trainer.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert _processes_with(marker, but=trainer.pid) == []
    finally:
        if trainer.poll() is None:
            trainer.kill()


def _processes_with(marker: str, but: int) -> list[int]:
    """Pids of live processes but ``but`` whose command line contains ``marker`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == but:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if marker in cmdline and "serve_gymnasium" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bridged_run_resumes_like_an_in_process_one(tmp_path):
    def run(total: int, resume: bool):
        host = PluginHost()
        config = load_config({"seed": 0, "env": counter(), "algorithm": {"plugin": "ppo", "total_steps": total,
                                                                         "num_steps": 32},
                              "run": {"progress": "none", "tensorboard": False}}, host.registry)
        return train(config, host, tmp_path / "run", resume=resume)

    assert run(128, False)["step"] == 128
    again = run(256, True)
    assert again["step"] == 256
    steps = [int(r["step"]) for r in metrics(tmp_path / "run")]
    assert steps == sorted(steps) and steps[-1] == 256 and len(steps) == len(set(steps))
