"""Starting game processes (``mode: launch``) so that none outlives the trainer.

Three layers, because each covers a way the trainer can end:
* a normal exit, an exception or Ctrl-C: ``GameProcess.stop`` (from the vector env's ``close`` and an
  ``atexit`` hook) sends ``close``'s follow-up SIGTERM to the game's whole process group, then SIGKILL;
* kill -9 of the trainer: the child asked the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux) to be
  killed when its parent dies;
* grandchildren the game started (a shell script that runs the engine): the kernel closes the trainer's
  sockets when it dies, and the clients (docs/bridge.md) stop when their connection closes.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_LIVE: weakref.WeakSet[GameProcess] = weakref.WeakSet()


def _die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGKILL when the trainer dies (checked once more after the call,
    in case the trainer died between fork and prctl)."""

    def setup() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)

    return setup if sys.platform.startswith("linux") else None


class GameProcess:
    """One launched game process (leader of its own process group), the instance numbers it serves (one, or
    ``env.instances_per_process``), and its output log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, instances: range):
        self.argv = argv
        self.instances = instances
        self.log = tempfile.NamedTemporaryFile(prefix=f"agentkit-game{instances[0]}-", suffix=".log", delete=False)  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            self.log.close()
            os.unlink(self.log.name)
            from .protocol import BridgeError

            raise BridgeError(
                f"env.command: cannot start {shlex.join(argv)!r} ({exc}); check the program and env.cwd.",
                code="config",
            ) from exc
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.proc.poll()

    def output_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """End the game and everything in its process group: wait ``grace`` seconds for it to exit on its own
        (it was sent ``close``), then SIGTERM, then SIGKILL; remove the log."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # grandchildren still in the group
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.poll()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
        _LIVE.discard(self)


def command_argv(template: str, **values: object) -> list[str]:
    """``template`` split like a shell would, with ``{port}``, ``{instance}``, ... filled in each word."""
    return [word.format(**values) for word in shlex.split(template)]


@atexit.register
def _stop_all() -> None:
    for game in list(_LIVE):
        game.stop(grace=0.5)
