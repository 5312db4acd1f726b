"""The engine folders (a web page, a Godot project, a C# game) as files a user can copy out of an install.

    agentkit engine-folder (web|godot|csharp) [DEST]

A pip-installed agentkit has the folders as package data (``agentkit_exports.web`` and the others, with the
``examples/bridge-*.yaml`` ready configs as ``agentkit_exports.examples``). ``copy_engine_folder`` writes one
engine's folder into ``DEST`` with the layout of the repository, ``DEST/exports/<engine>`` (the web page also
needs ``exports/js``, the bridge client, runtime and Moving port it serves) and ``DEST/examples/<its config>``,
so that the engine README's commands, which run from the repository root, run from ``DEST`` as written.
Nothing that exists is overwritten: the copy stops before writing anything if one of its files is there.
"""

from __future__ import annotations

import shutil
from fnmatch import fnmatch
from pathlib import Path

from agentkit.errors import InvalidInputError

#: engine -> (the folders under exports/ it needs, its ready config in examples/)
ENGINES: dict[str, tuple[tuple[str, ...], str]] = {
    "web": (("web", "js"), "bridge-browser-moving.yaml"),
    "godot": (("godot",), "bridge-godot-maze.yaml"),
    "csharp": (("csharp",), "bridge-csharp-thruster.yaml"),
}

#: never copied (an editable install reads the checkout): npm installs, Godot's import cache, byte code
_SKIP = ("node_modules", ".import", "__pycache__", "*.pyc")


def _exports_folder() -> Path:
    import agentkit_exports

    return Path(agentkit_exports.__file__).parent


def _examples_folder() -> Path:
    installed = _exports_folder() / "examples"  # a wheel: package data
    return installed if installed.is_dir() else _exports_folder().parent / "examples"  # a checkout (editable)


def engine_files(engine: str) -> dict[Path, Path]:
    """``{path relative to DEST: source file}`` of everything ``engine``'s folder consists of."""
    if engine not in ENGINES:
        raise InvalidInputError(f"engine {engine!r}: the engine folders are {', '.join(ENGINES)}.")
    folders, config = ENGINES[engine]
    files: dict[Path, Path] = {}
    for folder in folders:
        root = _exports_folder() / folder
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(fnmatch(part, pattern) for part in rel.parts for pattern in _SKIP):
                files[Path("exports") / folder / rel] = path
    files[Path("examples") / config] = _examples_folder() / config
    return files


def copy_engine_folder(engine: str, dest: Path) -> list[Path]:
    """Copy ``engine``'s folder into ``dest`` (repository layout); returns the files written, relative to
    ``dest``. Raises ``InvalidInputError`` naming the first file that is already there (nothing written)."""
    files = engine_files(engine)
    clash = next((rel for rel in files if (dest / rel).exists()), None)
    if clash is not None:
        raise InvalidInputError(
            f"{dest / clash} exists: engine-folder writes no file over another; pick an empty DEST or move it away."
        )
    for rel, source in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / rel)
    return sorted(files)
