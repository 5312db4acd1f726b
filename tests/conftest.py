"""Shared fixtures. Keep this small; add fixtures at the end.

Tests leave the user's setup as it was (checked at the end of every session, ``tests/user_setup.py``): they
install into throwaway places, never into ``.venv`` or the checkout.

- ``run_cli(*args, env=, cwd=)``: the real ``agentkit`` CLI in a subprocess (cwd: the test's tmp_path).
- ``plugin_site``: a throwaway site folder for fake plugin distributions (entry points without pip).
- ``example_plugin_package``: examples/plugin-package pip-installed into a throwaway ``--target`` folder,
  on ``sys.path`` and ``PYTHONPATH`` for that test only.
- JavaScript (skip with ``pytest.mark.skipif(NODE is None, ...)``): ``js_workdir(files) -> Path`` makes a
  throwaway folder with copies of exports/js's runtime files, ``files`` (name -> str, bytes or Path) and a
  ``node_modules`` link to onnxruntime-node installed once into a cache outside the repo
  (``js_node_modules``; ``npm_cached_install(folder, marker)`` for another package folder); ``js_ready`` is
  one such folder for the session; ``run_node(script, *args, cwd=, input=)`` runs a script in it.
"""

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


#: What a build leaves in a source folder (not copied when the example package is installed).
_BUILD_LEFTOVERS = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


@pytest.fixture(scope="session")
def _example_plugin_site(tmp_path_factory) -> tuple[Path, Path]:
    """examples/plugin-package built and installed with pip into a throwaway folder, once per session.

    Returns (site, package): the ``pip install --target`` folder and a copy of the package's source folder
    (the build runs in the copy, so nothing lands in the repo). The venv is never touched.
    """
    root = tmp_path_factory.mktemp("example-plugin-package")
    package, site = root / "plugin-package", root / "site"
    shutil.copytree(EXAMPLE_PACKAGE, package, ignore=_BUILD_LEFTOVERS)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", *offline_build_flags(),
         "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip install of {EXAMPLE_PACKAGE} failed:\n{proc.stdout}\n{proc.stderr}"
    return site, package


@pytest.fixture
def example_plugin_package(_example_plugin_site, monkeypatch) -> Path:
    """examples/plugin-package installed through pip, for this test only; returns a copy of its folder.

    The package lives in a throwaway ``pip install --target`` folder, put on ``sys.path`` (this process's
    plugin hosts find its entry point) and on ``PYTHONPATH`` (so do ``run_cli`` and other subprocesses) for
    the test's duration alone: the user's venv and ``agentkit plugins`` stay as they were.
    """
    site, package = _example_plugin_site
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return package


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


#: The JavaScript reference runtime's sources, and node to run it (None where node is absent: its tests skip).
JS_DIR = REPO / "exports" / "js"
NODE = shutil.which("node")
#: What a JS work dir copies from exports/js: the runtime, its CLI and the package manifest.
JS_RUNTIME_FILES = ("agentkit-runtime.mjs", "act.mjs", "package.json")


def js_cache_root() -> Path:
    """Where onnxruntime-node is installed for the tests, outside the repo, kept between runs:
    ``$AGENTKIT_JS_CACHE``, else ``$XDG_CACHE_HOME/agentkit/js``, else ``~/.cache/agentkit/js``."""
    if os.environ.get("AGENTKIT_JS_CACHE"):
        return Path(os.environ["AGENTKIT_JS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentkit" / "js"


def npm_cached_install(folder: Path, marker: str) -> Path:
    """The ``node_modules`` of ``folder``'s package.json, installed once into the cache (``js_cache_root``).

    One folder per ``package-lock.json`` content (its hash names it), installed with ``npm ci
    --ignore-scripts`` (install scripts would only download binaries this machine does not need: GPU builds,
    browsers). The install goes to a temporary folder renamed into place under a file lock, so concurrent
    sessions neither clash nor see half an install. ``marker``: a package whose folder proves the install
    is complete. Nothing is written under the repo.
    """
    import fcntl
    import hashlib
    import tempfile

    lock = (folder / "package-lock.json").read_bytes()
    cache = js_cache_root()
    target = cache / hashlib.sha256(lock).hexdigest()[:16]
    if (target / "node_modules" / marker).is_dir():
        return target / "node_modules"
    npm = shutil.which("npm")
    assert npm is not None, f"node is installed but npm is not: install npm to run the tests that need {folder}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (target / "node_modules" / marker).is_dir():
            tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".install-"))
            try:
                for name in ("package.json", "package-lock.json"):
                    shutil.copy(folder / name, tmp / name)
                proc = subprocess.run(
                    [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
                    cwd=tmp, capture_output=True, text=True, timeout=600,
                )
                assert proc.returncode == 0, f"npm ci for {folder} (in {tmp}) failed:\n{proc.stdout}\n{proc.stderr}"
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture(scope="session")
def js_node_modules() -> Path:
    """The ``node_modules`` folder of exports/js's dependencies (onnxruntime-node, whose CPU binaries ship in
    the package), installed once into the cache by ``npm_cached_install``."""
    return npm_cached_install(JS_DIR, "onnxruntime-node")


@pytest.fixture(scope="session")
def js_workdir(js_node_modules, tmp_path_factory):
    """Make a throwaway folder that runs the JavaScript runtime: ``js_workdir({"t.mjs": source}) -> Path``.

    The folder holds copies of exports/js's ``agentkit-runtime.mjs``, ``act.mjs`` and ``package.json``, the
    given extra files (name -> str, bytes or a Path to copy), and ``node_modules``, a link to the cached
    install (``js_node_modules``). Copies, not links: node resolves an ES module's bare imports (such as
    ``onnxruntime-node``) from the module's real folder upward, and NODE_PATH does not apply to ES modules.
    Scripts import the runtime as ``./agentkit-runtime.mjs``. Run them with ``run_node``.
    """

    def make(files: dict[str, str | bytes | Path] | None = None) -> Path:
        work = tmp_path_factory.mktemp("js")
        for name in JS_RUNTIME_FILES:
            shutil.copy(JS_DIR / name, work / name)
        (work / "node_modules").symlink_to(js_node_modules, target_is_directory=True)
        for name, content in (files or {}).items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, path)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return work

    return make


@pytest.fixture(scope="session")
def js_ready(js_workdir) -> Path:
    """One shared JavaScript work dir (see ``js_workdir``) for the session: ``js_ready / "act.mjs"``."""
    return js_workdir()


@pytest.fixture(scope="session")
def run_node():
    """Run node: ``run_node(script, *args, cwd=None, input=None, timeout=300) -> CompletedProcess`` (text).

    ``script`` is a Path (for example ``js_ready / "act.mjs"``); cwd defaults to the script's folder.
    """
    assert NODE is not None, "node is not installed: mark the test with skipif(NODE is None)"

    def run(script: Path, *args, cwd: Path | None = None, input: str | None = None, timeout: float = 300):
        return subprocess.run([NODE, str(script), *map(str, args)], cwd=cwd or Path(script).parent, input=input,
                              capture_output=True, text=True, timeout=timeout)

    return run


# -- The user's setup is left as it was (tests/user_setup.py) --------------------------------------------------
def pytest_sessionstart(session):
    import user_setup

    if os.environ.get("AGENTKIT_SKIP_SETUP_CHECK"):  # e.g. while editing files during a long run
        return
    session.config.stash[_SETUP_KEY] = user_setup.snapshot()


def pytest_sessionfinish(session, exitstatus):
    import user_setup

    before = session.config.stash.get(_SETUP_KEY, None)
    if before is None:
        return
    changed = user_setup.changes(before, user_setup.snapshot())
    session.config.stash[_SETUP_CHANGES_KEY] = changed
    if changed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    changed = config.stash.get(_SETUP_CHANGES_KEY, [])
    if changed:
        terminalreporter.section("the test run changed the user's setup", red=True)
        for line in changed:
            terminalreporter.line(line, red=True)
        terminalreporter.line("Tests must install into throwaway places and clean up (see tests/user_setup.py).")


_SETUP_KEY = pytest.StashKey[dict]()
_SETUP_CHANGES_KEY = pytest.StashKey[list]()


# -- Plugin hosts and trained runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host():
    """A ``PluginHost`` with the built-in and installed plugins, one per test module (a module that needs
    another host, say without entry points, defines its own ``host``; a test that registers plugins of its
    own makes its own host)."""
    from agentkit.host import PluginHost

    return PluginHost()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, host):
    """Train a run once per module: ``trained_run(config, name="run") -> Path`` (the run dir).

    ``config`` is a run config as data, trained with the module's ``host``; the same config and name give the
    same run dir, trained once.
    """
    import json

    made: dict[tuple[str, str], Path] = {}

    def train_once(config: dict, name: str = "run") -> Path:
        from agentkit.config import load_config
        from agentkit.trainer import train

        key = (name, json.dumps(config, sort_keys=True))
        if key not in made:
            run_dir = tmp_path_factory.mktemp(name) / name
            train(load_config(config, host.registry), host, run_dir=run_dir)
            made[key] = run_dir
        return made[key]

    return train_once
