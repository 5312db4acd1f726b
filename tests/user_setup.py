"""The user's setup, as a test run must leave it: the venv's ``pip list`` and the checkout's ``git status``.

conftest takes a snapshot when a pytest session starts and compares it when the session ends: a session that
installed a package into the venv, or left files in the checkout (tracked, untracked or ignored, such as a
``node_modules`` folder or a ``runs/`` dir), fails and names what changed. Python's and the test tools' own
caches (``__pycache__``, ``.pytest_cache``, ``.hypothesis``, ``.ruff_cache``) are not counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHES = {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}


def _pip_list() -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv alone
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                          text=True, env=env, timeout=120)
    return proc.stdout.splitlines() if proc.returncode == 0 else [f"(pip list failed: {proc.stderr.strip()})"]


def _git_status() -> list[str]:
    proc = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:  # not a git checkout (an unpacked sdist): nothing to compare
        return []
    return [line for line in proc.stdout.splitlines() if not CACHES & set(Path(line[3:].rstrip("/")).parts)]


def snapshot() -> dict[str, list[str]]:
    """What the comparison covers, keyed by the command a user would run to see it."""
    return {"pip list": _pip_list(), "git status --porcelain --ignored": _git_status()}


def changes(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """One line per entry that appeared (+) or went away (-), prefixed with the command that shows it."""
    lines = []
    for what in before:
        old, new = set(before[what]), set(after[what])
        lines += [f"{what}: + {entry}" for entry in sorted(new - old)]
        lines += [f"{what}: - {entry}" for entry in sorted(old - new)]
    return lines
