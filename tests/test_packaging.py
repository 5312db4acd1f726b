"""Installed, agentkit puts only agentkit* packages in site-packages, and every repo package folder ships."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import offline_build_flags

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
    entry_points = next(target.glob("agentkit-*.dist-info")) / "entry_points.txt"
    assert "agentkit = agentkit.cli:main" in entry_points.read_text()
