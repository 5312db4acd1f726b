"""Shared fixtures. Keep this small; add fixtures at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PACKAGE = REPO / "examples" / "plugin-package"
_SCRIPT = Path(sys.executable).with_name("agentkit")
#: The installed console script (what a user runs), or the module when the script is missing.
AGENTKIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agentkit.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a CLI subprocess runs in: one torch thread, no pager, entry points as configured."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTKIT_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path):
    """Run the real ``agentkit`` CLI in a subprocess: ``run_cli("plugins", "--json", env={...}, cwd=...)``.

    Returns the CompletedProcess (text mode); ``env`` entries are added to ``cli_env()``; cwd defaults to
    the test's tmp_path so run directories land there.
    """

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
        return subprocess.run(
            [*AGENTKIT, *map(str, args)],
            capture_output=True,
            text=True,
            env=cli_env(**(env or {})),
            cwd=cwd or tmp_path,
            timeout=timeout,
        )

    return run


def offline_build_flags() -> list[str]:
    """Build with the venv's own setuptools when it has one (offline, fast); else pip's isolated build."""
    import importlib.util

    return ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []


@pytest.fixture(scope="session")
def example_plugin_package() -> Path:
    """Install examples/plugin-package into the venv (editable, idempotent) and return its folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline_build_flags(), "-e", str(EXAMPLE_PACKAGE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The install adds a .pth file, which Python reads only at start-up: read it now, so this test process
    # (whose plugin hosts already see the new entry point) can also import the package behind it.
    import importlib
    import site
    import sysconfig

    site.addsitedir(sysconfig.get_paths()["purelib"])
    importlib.invalidate_caches()
    return EXAMPLE_PACKAGE


@pytest.fixture
def plugin_site(tmp_path):
    """A throwaway site folder for fake plugin distributions, without pip and without touching the venv.

    ``site.module(name, source)`` writes a module; ``site.dist(name, version, entry_points={ep: "mod"})``
    writes ``<name>-<version>.dist-info`` with an ``agentkit`` entry-point group. Pass ``site.env`` to
    ``run_cli`` (it puts the folder on PYTHONPATH) or call ``site.activate(monkeypatch)`` in-process.
    """
    import textwrap

    class Site:
        path = tmp_path / "site"

        def __init__(self):
            self.path.mkdir()

        @property
        def env(self) -> dict[str, str]:
            return {"PYTHONPATH": os.pathsep.join([str(self.path), os.environ.get("PYTHONPATH", "")])}

        def module(self, name: str, source: str) -> None:
            (self.path / f"{name}.py").write_text(textwrap.dedent(source))

        def dist(self, name: str, version: str, entry_points: dict[str, str]) -> None:
            info = self.path / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
            (info / "entry_points.txt").write_text(f"[agentkit]\n{lines}")

        def activate(self, monkeypatch) -> None:
            monkeypatch.syspath_prepend(str(self.path))

    return Site()


#: The JavaScript reference runtime, and node to run it (None where node is absent: its tests skip).
JS_DIR = REPO / "exports" / "js"
NODE = shutil.which("node")


@pytest.fixture(scope="session")
def js_ready() -> Path:
    """exports/js with onnxruntime-node installed (``npm install --ignore-scripts`` on first use: its CPU
    binaries ship in the package; the install script would only download GPU builds)."""
    if not (JS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: install npm to set up exports/js"
        proc = subprocess.run(
            [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=JS_DIR, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, f"npm install in {JS_DIR} failed:\n{proc.stdout}\n{proc.stderr}"
    return JS_DIR
