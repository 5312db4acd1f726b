"""curve.png drawn by a helper process that imports matplotlib while the run trains.

Importing matplotlib and drawing a first figure (which loads its fonts) takes about 0.6 s of a process that
trains once and exits, as ``agentkit train`` does; drawing the curve itself takes about 0.1 s. ``CurveProcess``
starts a helper process that pays the first part on another core while this process imports torch and
trains, and draws ``curve.png`` (``agentkit.runlog.write_curve``) when asked. The helper imports no torch.

A process that trains several times (tests, a notebook, a sweep) pays matplotlib's import once and draws in
place: ``agentkit.trainer.train`` draws with ``write_curve`` unless it is given another drawer.

Protocol: one JSON line per curve on the helper's stdin (``{"metrics": ..., "out": ..., "title": ...}``),
answered by one line on its stdout, ``ok`` or ``failed``; the helper ends at the end of its stdin. It ignores
SIGINT, so that a first Ctrl-C (which reaches the whole process group) leaves the run's clean stop its curve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

#: Run as the helper's program: without the working directory on sys.path (a received run folder used as the
#: working directory must not shadow a module; ``agentkit.trust``), then ``main()``.
_HELPER = ("import sys\nif not getattr(sys.flags, 'safe_path', False): del sys.path[0]\n"
           "from agentkit.curve_process import main\nmain()")


class CurveProcess:
    """A helper process that draws curve.png files; use as a context manager (the helper ends with it).

    ``draw(metrics_csv, out, title)`` has ``write_curve``'s contract: it returns ``out`` once the file is
    written. When the helper is not there to draw (it failed to start or to import matplotlib, or it died),
    or it reports a failure, ``draw`` draws in this process instead, so that any error is the one
    ``write_curve`` raises here.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True,
            )
        except OSError:
            self._proc = None

    def __enter__(self) -> CurveProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def draw(self, metrics_csv: Path, out: Path, title: str = "") -> Path:
        proc = self._proc
        if proc is not None and proc.stdin is not None and proc.stdout is not None:
            request = {"metrics": os.path.abspath(metrics_csv), "out": os.path.abspath(out), "title": title}
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                if proc.stdout.readline().strip() == "ok":
                    return Path(out)
            except (OSError, ValueError):  # the helper is gone
                pass
            self.close()
        from agentkit.runlog import write_curve

        return write_curve(metrics_csv, out, title=title)

    def close(self) -> None:
        """End the helper now: it is either idle (every curve asked for is written) or not needed any more."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The helper's loop: import matplotlib, draw a first figure, then draw each curve asked for on ``stdin``."""
    from agentkit.runlog import write_curve

    with tempfile.TemporaryDirectory() as tmp:  # a first figure loads the fonts and the PNG writer
        write_curve(Path(tmp) / "metrics.csv", Path(tmp) / "curve.png")
    for line in stdin:
        try:
            request = json.loads(line)
            write_curve(Path(request["metrics"]), Path(request["out"]), title=str(request["title"]))
        except Exception:  # the caller draws it again itself and raises the error there
            answer = "failed"
        else:
            answer = "ok"
        stdout.write(answer + "\n")
        stdout.flush()


def main() -> None:
    """The helper process: ``serve`` on stdin/stdout, ignoring SIGINT; it exits without the interpreter's
    teardown, which would only free matplotlib's objects."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin, sys.stdout)
    os._exit(0)
