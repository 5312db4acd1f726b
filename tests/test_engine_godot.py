"""The Godot game of exports/godot (the Maze scene, masked Discrete(4)) trains over the bridge against real
headless Godot 3 (Debian's godot3-server, installed by `make engines`), is evaluated in it, and exports.
Protocol 2 from GDScript: a game of uint8 pixels (tests/godot_games/bright_side) trains the CNN, a Dict of
uint8, float32 and int32 entries arrives as sent, and a protocol 1 game still plays."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import onnx
import pytest
from bridge_pixel_checks import CHECKS, run_check

REPO = Path(__file__).resolve().parents[1]
#: the example's launch command: eval and export of its run dir may run it once the command line allows it
COMMAND = "godot3-server --path exports/godot --port={port} --instance={instance}"
GODOT = shutil.which("godot3-server")
pytestmark = pytest.mark.skipif(
    GODOT is None, reason="Godot 3 is not installed: `make engines` (as root) installs Debian's godot3-server"
)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_godot_maze_trains_evaluates_and_exports(run_cli, tmp_path):
    run_dir = tmp_path / "maze"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-godot-maze.yaml", "--run-dir", run_dir,
        "--set", "algorithm.total_steps=1024", "--set", "env.num_envs=2", "--set", "algorithm.num_steps=256",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) == 1024
    ended = [r for r in rows if r.get("infos/illegal_moves")]
    assert ended, "no episode of the Godot game ended in 1024 steps"
    # The game counts moves into walls; the mask it sends stops the policy from ever choosing one.
    assert all(float(r["infos/illegal_moves"]) == 0.0 for r in ended)
    assert all(float(r["bridge/restarts"]) == 0.0 for r in rows)

    proc = run_cli("eval", run_dir, "--episodes", "3", "--json", "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["infos"]["illegal_moves"] == 0.0

    out = tmp_path / "maze.onnx"
    proc = run_cli("export", run_dir, "--out", out, "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = onnx.load(out)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["agentkit"])
    assert meta["env"]["plugin"] == "remote"
    assert meta["action"]["kind"] == "discrete" and meta["action"]["n"] == 4
    assert [i.name for i in model.graph.input] == ["obs", "action_mask"] and meta["mask"]["dim"] == 4

    # The exported file drives the real Godot game (onnxruntime in Python, the game over the bridge), and
    # plays the same episodes as the run's policy did.
    proc = run_cli("eval", out, "--episodes", "3", "--json", "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    played = json.loads(proc.stdout)
    assert played["infos"]["illegal_moves"] == 0.0
    assert played["mean_return"] == pytest.approx(report["mean_return"], abs=1e-5)


@pytest.fixture(scope="module")
def bright_side_project(tmp_path_factory) -> Path:
    """tests/godot_games/bright_side with the client (exports/godot/addons) beside it: a Godot project."""
    project = tmp_path_factory.mktemp("godot") / "bright_side"
    shutil.copytree(REPO / "tests" / "godot_games" / "bright_side", project)
    shutil.copytree(REPO / "exports" / "godot" / "addons", project / "addons")
    return project


@pytest.mark.parametrize("check", CHECKS)
def test_the_godot_client_speaks_protocol_2(check, tmp_path, bright_side_project):
    """Its BrightSide port: uint8 pixels train the CNN and export uint8; a Dict arrives as sent; version 1 plays."""
    run_check(check, f"godot3-server --path {bright_side_project} --port={{port}} --instance={{instance}}", "bright-side-godot", tmp_path / "run")
