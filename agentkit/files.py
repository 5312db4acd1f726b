"""Writing files so that a crash never leaves half of one (no torch here: a process that only draws can use it).

``write_atomic``: the bytes go to a temporary file in the same folder (``.NAME`` + ``TMP_MARK`` + pid), are
fsync'ed, then ``os.replace`` puts them in place, so a kill -9 at any moment leaves either the old or the new
file, never half of one. ``agentkit.checkpoint.remove_stale_temp_files`` deletes what a killed writer left.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TMP_MARK = ".tmp-"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a mix.

    A failed write (a full disk, say) removes its temporary file and raises ``OSError`` with ``filename`` set
    to ``path``. A ``path`` that exists and is not a regular file (``/dev/stdout``, a pipe) is written directly.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        with open(path, "wb") as f:
            f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
