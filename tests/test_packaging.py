"""Installed, agentkit puts only agentkit* packages in site-packages, and every repo package folder ships."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NODE, offline_build_flags

REPO = Path(__file__).resolve().parents[1]
#: repo folder -> installed import name (pyproject's [tool.setuptools.package-dir])
FOLDERS = {"agentkit": "agentkit", "plugins": "agentkit_plugins", "envs": "agentkit_envs", "exports": "agentkit_exports"}


#: What a fresh clone does not have: build outputs (a stale build/lib would leak into the wheel), caches.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "runs", "node_modules", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis",
)


def test_install_has_no_generic_top_level_package(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=IGNORED)  # builds in a copy: the checkout gets no build/ folder
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline_build_flags(), "--no-compile",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    # No setuptools warning a newcomer cannot place (a deprecated license table, data folders it was not told of)
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    top = {p.name for p in target.iterdir() if p.name not in ("bin", "__pycache__")}
    packages = {name for name in top if not name.endswith((".dist-info", ".pth"))}
    assert packages == set(FOLDERS.values()), f"unexpected top-level names: {sorted(packages - set(FOLDERS.values()))}"
    assert {"plugins", "envs", "exports", "tests", "examples"}.isdisjoint(top)
    assert any(name.startswith("agentkit-") and name.endswith(".dist-info") for name in top)

    # Every package folder in the repo is installed (a new subfolder must be listed in pyproject's packages).
    for folder, installed in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / folder)
            assert (target / installed / rel / "__init__.py").is_file(), (
                f"{folder}/{rel} is a package in the repo but is not installed: add "
                f"'{'.'.join((installed, *rel.parts))}' to [tool.setuptools] packages in pyproject.toml"
            )
    assert (target / "agentkit_exports" / "CONTRACT.md").is_file()  # package data ships too
    assert (target / "agentkit_exports" / "js" / "agentkit-runtime.mjs").is_file()
    assert (target / "agentkit_exports" / "js" / "package-lock.json").is_file()
    entry_points = next(target.glob("agentkit-*.dist-info")) / "entry_points.txt"
    assert "agentkit = agentkit.cli:console_main" in entry_points.read_text()

    # The engine folders ship, and `agentkit engine-folder` copies one out of the install, with its example
    # config, in the repository's layout: every file the checkout tracks there, byte for byte.
    import os

    tracked = subprocess.run(["git", "ls-files", "exports/godot", "examples/bridge-godot-maze.yaml"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "my-game"
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-m", "agentkit.cli", "engine-folder", "godot", str(dest)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(f for f in tracked if f != "exports/godot/.gitignore")
    assert all((dest / f).read_bytes() == (REPO / f).read_bytes() for f in copied)
    for engine, needs in [("web", "exports/js/agentkit-bridge.mjs"), ("csharp", "exports/csharp/Thruster/Thruster.cs")]:
        proc = subprocess.run([sys.executable, "-m", "agentkit.cli", "engine-folder", engine, str(tmp_path / engine)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and (tmp_path / engine / needs).is_file(), proc.stderr
    again = subprocess.run([sys.executable, "-m", "agentkit.cli", "engine-folder", "godot", str(dest)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


# -- make test leaves the user's setup alone (conftest's session check, tests/user_setup.py) ------------------
def test_setup_check_sees_a_file_left_in_the_checkout_and_a_package_in_the_venv():
    import user_setup

    before = user_setup.snapshot()
    leftover = REPO / "runs" / "left-by-a-test"
    created_runs = not leftover.parent.exists()
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_text("")
    try:
        after = user_setup.snapshot()
    finally:
        leftover.unlink()
        if created_runs:
            leftover.parent.rmdir()
    assert any(line.startswith("git status --porcelain --ignored: + ") and "runs/" in line
               for line in user_setup.changes(before, after))
    after = {**before, "pip list": [*before["pip list"], "agentkit-example-corridor==0.1.0"]}
    assert user_setup.changes(before, after) == ["pip list: + agentkit-example-corridor==0.1.0"]
    assert user_setup.changes(before, user_setup.snapshot()) == []


def test_example_plugin_package_is_installed_for_its_tests_only(example_plugin_package, run_cli):
    """The example package is importable where a test asked for it, and absent from the user's venv."""
    import os

    assert REPO not in example_plugin_package.parents  # its build runs in a copy
    rows = json.loads(run_cli("plugins", "--json").stdout)
    assert any((row["kind"], row["name"]) == ("env", "corridor") for row in rows)
    user = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listed = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, env=user, timeout=120).stdout
    assert "agentkit-example-corridor" not in listed
    rows = json.loads(run_cli("plugins", "--json", env={"PYTHONPATH": ""}).stdout)
    assert not any(row["name"] == "corridor" for row in rows)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_work_dirs_and_their_node_modules_live_outside_the_repo(js_ready, js_node_modules, js_workdir, run_node):
    assert REPO not in js_ready.parents and REPO not in js_node_modules.resolve().parents
    assert (js_ready / "node_modules" / "onnxruntime-node").is_dir()
    script = ('import { SUPPORTED_CONTRACTS } from "./agentkit-runtime.mjs";\n'
              'import * as ort from "onnxruntime-node";\n'
              'console.log(JSON.stringify([SUPPORTED_CONTRACTS, typeof ort.InferenceSession]));\n')
    work = js_workdir({"hello.mjs": script})
    assert work != js_ready and (work / "act.mjs").is_file()
    proc = run_node(work / "hello.mjs")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[1, 2, 3], "function"]


# -- torch: which build, and how to get the CPU-only one (Makefile, README) ----------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_setup_reports_the_torch_build_and_takes_torch_from_a_given_index():
    import os

    import torch

    env = {**os.environ, "MAKEFLAGS": ""}
    info = subprocess.run(["make", "-s", "torch-info"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 0, info.stderr
    cuda = "CPU-only build, no CUDA compiled in" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
    assert info.stdout.startswith(f"torch {torch.__version__}: {cuda}")
    index = "https://download.pytorch.org/whl/cpu"
    plan = subprocess.run(["make", "-n", "-B", "setup", f"TORCH_INDEX={index}"], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=120).stdout  # -n: prints the commands, runs none
    lines = plan.splitlines()
    torch_line = next(i for i, line in enumerate(lines) if f"--index-url {index} torch" in line)
    package_line = next(i for i, line in enumerate(lines) if '-e ".[test]"' in line)
    assert "-c constraints.txt" in lines[torch_line] and torch_line < package_line  # the CPU build first, pinned
    assert "torch-info" in plan
    assert "--index-url" not in subprocess.run(["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True,
                                               text=True, env=env, timeout=120).stdout
    assert f"make setup TORCH_INDEX={index}" in (REPO / "README.md").read_text()
