"""The C# game of exports/csharp (Thruster, continuous Box(2) thrust; several ships per instance for the
multi-agent case) trains over the bridge in real Mono: compiled with mcs, run with mono (Debian's mono-mcs
and mono-runtime, installed by `make engines`). Protocol 2 from C#: a game of uint8 pixels
(tests/cs_games/BrightSide.cs) trains the CNN, a Dict of uint8, float32 and int32 entries arrives as sent, and a
protocol 1 game still plays. Several instances in one Mono process (``env.instances_per_process``, the client's
``batch`` frames) train too, and a bad instance count or a malformed batch is refused with one message."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from bridge_pixel_checks import CHECKS, run_check
from test_bridge import _free_port
from test_bridge_mux import listening

REPO = Path(__file__).resolve().parents[1]
THRUSTER_SH = REPO / "exports" / "csharp" / "thruster.sh"
COMMAND = "sh exports/csharp/thruster.sh --port={port} --instance={instance} --instances={instances}"  # the example's launch command
pytestmark = pytest.mark.skipif(
    shutil.which("mcs") is None or shutil.which("mono") is None,
    reason="Mono is not installed: `make engines` (as root) installs Debian's mono-mcs and mono-runtime",
)


@pytest.fixture(scope="module")
def csharp_cache(tmp_path_factory) -> dict[str, str]:
    """exports/csharp/thruster.sh compiles into this throwaway cache: the module's first run compiles the
    game with the real mcs, the other tests reuse the build."""
    return {"AGENTKIT_CSHARP_CACHE": str(tmp_path_factory.mktemp("csharp-build"))}


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_csharp_thruster_trains_and_exports(run_cli, tmp_path, csharp_cache):
    run_dir = tmp_path / "thruster"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-csharp-thruster.yaml", "--run-dir", run_dir,
        "--set", "algorithm.total_steps=1024", "--set", "env.num_envs=2", "--set", "algorithm.num_steps=256",
        cwd=REPO, env=csharp_cache,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) == 1024
    assert any(r.get("charts/episode_return") for r in rows), "no Thruster episode ended in 1024 steps"
    assert os.listdir(csharp_cache["AGENTKIT_CSHARP_CACHE"]), "thruster.sh did not compile the game"

    out = tmp_path / "thruster.onnx"
    proc = run_cli("export", run_dir, "--out", out, "--allow-import", COMMAND, cwd=REPO, env=csharp_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["agentkit"])
    assert meta["action"]["kind"] == "box" and meta["action"]["shape"] == [2]
    # The exported file flies the ships of the real Mono game (onnxruntime in Python, the game over the bridge).
    proc = run_cli("eval", out, "--episodes", "2", "--json", "--allow-import", COMMAND, cwd=REPO, env=csharp_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    played = json.loads(proc.stdout)
    assert played["episodes"] == 2 and all(0 < n <= 100 for n in played["lengths"])


def test_csharp_ships_train_as_agents_of_one_instance(run_cli, tmp_path, csharp_cache):
    """Three ships in one Mono process: a multi-agent game whose agents end their episodes at different
    steps (a ship that reached its target waits, not alive, until the others are done)."""
    run_dir = tmp_path / "ships"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-csharp-thruster.yaml", "--run-dir", run_dir,
        "--set", f"env.command={COMMAND} --agents=3",
        "--set", "env.num_envs=1", "--set", "algorithm={plugin: mappo, centralised: false, total_steps: 1536, "
        "num_steps: 128, update_epochs: 2}",
        cwd=REPO, env=csharp_cache,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) >= 1536
    assert any(r.get("charts/episode_return") for r in rows)


def test_one_mono_process_serves_four_instances_in_batches(run_cli, tmp_path, csharp_cache):
    """``env.instances_per_process: 4``: the trainer starts one Mono process for the 4 instances (a line in the
    launch log per process started), its client serves 4 Thruster games on one connection, and PPO trains."""
    launches = tmp_path / "launches.txt"  # the example's command, behind a shell that notes each start
    command = (f"sh -c 'echo $AGENTKIT_BRIDGE_INSTANCE $AGENTKIT_BRIDGE_INSTANCES >> {launches}; exec \"$0\" \"$@\"' "
               f"{COMMAND}")
    run_dir = tmp_path / "four"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-csharp-thruster.yaml", "--run-dir", run_dir,
        "--set", f"env.command={command}", "--set", "env.num_envs=4", "--set", "env.instances_per_process=4",
        "--set", "algorithm.total_steps=1024", "--set", "algorithm.num_steps=128",
        cwd=REPO, env=csharp_cache,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert launches.read_text().split("\n") == ["0 4", ""]  # one process, started as instance 0 of 4
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) == 1024 and float(rows[-1]["bridge/restarts"]) == 0.0
    assert any(r.get("charts/episode_return") for r in rows), "no Thruster episode ended in 1024 steps"


def thruster(*args: str, cache: dict[str, str], **env: str) -> subprocess.Popen:
    """The example game (exports/csharp/thruster.sh), compiled into the module's cache."""
    return subprocess.Popen(["sh", str(THRUSTER_SH), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **cache, **env})


@pytest.mark.parametrize("args, env", [(["--instances=two"], {}), ([], {"AGENTKIT_BRIDGE_INSTANCES": "0"})],
                         ids=["argument", "variable"])
def test_the_csharp_client_refuses_a_bad_instance_count(args, env, csharp_cache):
    game = thruster("--port=1", *args, cache=csharp_cache, **env)
    out, err = game.communicate(timeout=120)
    value = "two" if args else "0"
    assert game.returncode == 2 and err.strip() == (
        f"thruster: bad_settings: --instances (or AGENTKIT_BRIDGE_INSTANCES) is '{value}': give a whole number from 1 "
        "to 1024"), out + err


@pytest.mark.parametrize("value", ["two", "0"])
def test_thruster_refuses_a_bad_ship_count_with_one_message(value, csharp_cache):
    game = thruster("--port=1", f"--agents={value}", cache=csharp_cache)
    out, err = game.communicate(timeout=120)
    assert game.returncode == 2 and err.strip() == (
        f"thruster: bad_settings: --agents is '{value}': give a whole number from 1 to 1024"), out + err


def test_a_thruster_started_before_the_trainer_connects_once_it_listens(csharp_cache):
    """Listen mode, the game first: nothing listens on the port for 1 s (each try is refused), then the trainer
    listens and plays the instance; the game's retries found it, and it exits 0 after the steps played."""
    # built first (a bad --connect-timeout is refused before connecting), so the second counts from mono's start
    bad = thruster("--port=1", "--connect-timeout=soon", cache=csharp_cache)
    _, err = bad.communicate(timeout=120)
    assert bad.returncode == 2 and err.strip() == ("thruster: bad_settings: --connect-timeout (or "
                                                   "AGENTKIT_BRIDGE_CONNECT_TIMEOUT) is 'soon': give a number of seconds above 0")

    def play(venv):
        assert venv.reset().obs.shape == (1, 7)
        for _ in range(5):
            venv.step(np.zeros((1, 2), np.float32))

    out = listening(["sh", str(THRUSTER_SH)], 1, play, port_args=("--port={port}",), game_first_s=1.0, env=csharp_cache)
    assert "thruster: 1 instance(s) from 0, 5 steps, 1 episodes" in out


@pytest.mark.parametrize("args, env", [(["--connect-timeout=1"], {}), ([], {"AGENTKIT_BRIDGE_CONNECT_TIMEOUT": "1"})],
                         ids=["argument", "variable"])
def test_the_csharp_client_gives_up_after_its_connect_timeout_naming_the_fix(args, env, csharp_cache):
    port = _free_port()  # nothing listens there
    game = thruster(f"--port={port}", *args, cache=csharp_cache, **env)
    started = time.monotonic()
    out, err = game.communicate(timeout=120)
    assert game.returncode == 2 and time.monotonic() - started >= 1.0, out + err
    assert err.strip().endswith(f"thruster: no_connection: cannot connect to 127.0.0.1:{port}: nothing listened there "
                                "for 1 s (connection refused): start `agentkit train` with env.mode: listen first, or "
                                "raise --connect-timeout"), out + err


@pytest.mark.parametrize("field", ["slots", "parts"])
def test_the_csharp_client_answers_a_batch_and_names_a_malformed_one(field, csharp_cache):
    """The trainer's own transport and batch code on this side: a reset batch for both slots gets one batch of
    two reset_results; then a batch for a slot the game does not serve, or whose sizes do not add up to its
    parts, is refused with bad_frame naming the field, and the game exits 2 saying so."""
    from agentkit_envs.remote.mux import decode_batch, encode_batch
    from agentkit_envs.remote.protocol import decode, encode, header_text
    from agentkit_envs.remote.transport import listen

    listener = listen("tcp", "127.0.0.1", 0, 1 << 24)
    game = thruster(f"--port={listener.port}", "--instance=0", "--instances=2", cache=csharp_cache)
    try:
        conn = listener.accept(120)
        assert conn is not None, game.communicate()
        hello, _ = decode(conn.recv(30))
        assert hello["instances"] == 2 and hello["instance"] == 0
        conn.send(encode({"type": "welcome", "protocol": 2, "instance": 0, "instances": 2}))
        reset = encode({"type": "reset", "seed": 1, "params": {}})
        conn.send(encode_batch([1, 0], [reset, reset]))
        answers = decode_batch(conn.recv(30), 2)
        assert [slot for slot, _ in answers] == [1, 0]
        results = [decode(part) for _, part in answers]
        assert all(h["type"] == "reset_result" for h, _ in results)
        assert (results[0][1]["obs"] == results[1][1]["obs"]).all()  # the same seed: the same start

        if field == "slots":
            conn.send(encode_batch([0, 5], [reset, reset]))
        else:
            conn.send(header_text({"type": "batch", "slots": [0], "sizes": [3]}, [("parts", "uint8", len(reset))])
                      + reset)
        error, _ = decode(conn.recv(30))
        assert error["type"] == "error" and error["code"] == "bad_frame" and error["field"] == field
        out, err = game.communicate(timeout=30)
    finally:
        game.kill()
        listener.close()
    assert game.returncode == 2
    assert f"thruster: bad_frame: the trainer sent a malformed batch (field {field}): " in err, out + err


@pytest.fixture(scope="module")
def bright_side_exe(tmp_path_factory) -> Path:
    """tests/cs_games/BrightSide.cs with the client, compiled once with the real mcs."""
    import subprocess

    out = tmp_path_factory.mktemp("bright-side") / "bright.exe"
    proc = subprocess.run(["mcs", "-nologo", f"-out:{out}", str(REPO / "exports" / "csharp" / "AgentKitBridge.cs"),
                           str(REPO / "tests" / "cs_games" / "BrightSide.cs")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("check", CHECKS)
def test_the_csharp_client_speaks_protocol_2(check, tmp_path, bright_side_exe):
    """Its BrightSide port: uint8 pixels train the CNN and export uint8; a Dict arrives as sent; version 1 plays."""
    run_check(check, f"mono {bright_side_exe} --port={{port}} --instance={{instance}}", "bright-side-cs", tmp_path / "run")
