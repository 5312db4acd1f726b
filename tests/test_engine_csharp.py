"""The C# game of exports/csharp (Thruster, continuous Box(2) thrust; several ships per instance for the
multi-agent case) trains over the bridge in real Mono: compiled with mcs, run with mono (Debian's mono-mcs
and mono-runtime, installed by `make engines`). Protocol 2 from C#: a game of uint8 pixels
(tests/cs_games/BrightSide.cs) trains the CNN, a Dict of uint8, float32 and int32 entries arrives as sent, and a
protocol 1 game still plays."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from bridge_pixel_checks import CHECKS, run_check

REPO = Path(__file__).resolve().parents[1]
COMMAND = "sh exports/csharp/thruster.sh --port={port} --instance={instance}"  # the example's launch command
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
