"""``agentkit export``: write a trained run's policies as ONNX files with the registered ``onnx`` exporter.

Single-agent runs give one file; multi-agent runs one file per policy group (``<stem>-<group>.onnx``).
Every file is checked against the torch policy before it is written (see exports/onnx_exporter.py).
``find_export`` maps what a user passes to ``agentkit eval`` back to those files: the ``--out`` name, one
of the group files, or the folder that received them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentkit.errors import ConfigError, UserError

if TYPE_CHECKING:
    from agentkit.algorithm import PolicyArtifact
    from agentkit.config import RunConfig

EXPORTER = "onnx"


class Exporter(Protocol):
    """What an exporter plugin's factory returns (``factory(config)`` with its validated config model)."""

    def export(self, artifact: PolicyArtifact, out_path: Path, run_config: RunConfig | None = None) -> Path:
        """Write ``artifact`` to ``out_path`` (checked against the torch actor first) and return the path."""
        ...


def output_paths(names: Sequence[str], run_dir: Path, out: Path | None) -> list[Path]:
    """Where each policy goes. ``out`` None: ``RUN_DIR/policy.onnx``; ``out`` a ``.onnx`` file: that file;
    anything else: a folder that receives ``policy.onnx``. With several policies the group name is added
    to the stem: ``policy-<group>.onnx``.
    """
    if out is None:
        base = run_dir / "policy.onnx"
    elif out.suffix.lower() == ".onnx":
        base = out
    elif out.exists() and not out.is_dir():
        raise UserError(f"export --out {str(out)!r}: give a .onnx file name or a folder.")
    else:
        base = out / "policy.onnx"
    if len(names) == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{_safe(name)}{base.suffix}") for name in names]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def find_export(target: Path) -> tuple[Path, list[Path]] | None:
    """The export ``target`` names, as ``(file to load, every file of the export)``; None for a run dir.

    ``target`` may be an ``.onnx`` file; the ``--out`` name of a multi-agent export, whose files are
    ``<stem>-<group>.onnx`` beside it; or a folder that is not a run dir holding an export (``policy.onnx``,
    a single ``.onnx`` file, or ``<stem>-<group>.onnx`` files sharing their stem). The other groups' files of a multi-agent export are
    found from the loaded one by the same naming. A name that matches nothing raises UserError listing the
    ``.onnx`` files that do exist there.
    """
    target = Path(target)
    if target.suffix.lower() == ".onnx":
        if target.is_file():
            return target, [target]
        groups = sorted(target.parent.glob(f"{glob.escape(target.stem)}-*.onnx"))
        if groups:
            return groups[0], groups
        raise UserError(f"eval: the ONNX file {str(target)!r} does not exist{_existing(target.parent)}.")
    if not target.is_dir() or (target / "config.yaml").is_file():
        return None
    files = sorted(target.glob("*.onnx"))
    if not files:
        return None
    if (target / "policy.onnx").is_file():
        return target / "policy.onnx", [target / "policy.onnx"]
    stem = os.path.commonprefix([f.stem for f in files])
    if len(files) == 1 or (len(files) > 1 and "-" in stem):  # one file, or <stem>-<group>.onnx files
        return files[0], files
    raise UserError(f"eval: {str(target)!r} holds several .onnx files that are not one export; name one of "
                    f"them{_existing(target)}.")


def _existing(folder: Path) -> str:
    """``: these .onnx files exist there: ...`` (or that there are none), for messages."""
    if not folder.is_dir():
        return f" (and there is no folder {str(folder)!r})"
    files = sorted(p.name for p in folder.glob("*.onnx"))
    if not files:
        return f"; {str(folder)!r} holds no .onnx file (export a run with `agentkit export RUN_DIR --out FILE`)"
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return f"; the .onnx files in {str(folder)!r} are: {shown}"


def export_run(
    run_dir: str | Path,
    out: Path | None = None,
    stochastic: bool = False,
    opset: int | None = None,
    extra_plugins: Sequence[str] = (),
    allow_imports: Sequence[str] = (),
    checkpoint: str | None = None,
) -> list[Path]:
    """Load ``run_dir`` (its latest checkpoint, or ``checkpoint``: a periodic one such as ``step_100000.pt``)
    and export each of its policies; return the written paths.

    ``stochastic`` adds the ``noise`` input and sampled outputs; a run whose policies are deterministic only
    (MADDPG's) refuses it (UserError: there is nothing to sample). ``opset`` overrides the exporter's default.
    """
    from agentkit.rundir import load_run

    run_dir = Path(run_dir)
    if out is not None and Path(out).suffix.lower() == ".onnx" and Path(out).is_dir():
        raise UserError(f"export --out {str(out)!r} is a directory: give a file name ending in .onnx, or a folder "
                        "name without it (the folder receives policy.onnx).")
    loaded = load_run(run_dir, extra_plugins=extra_plugins, checkpoint=checkpoint, allow_imports=allow_imports,
                      plays=False)
    try:
        reg = loaded.host.registry.get("exporter", EXPORTER)
        section: dict[str, Any] = {"plugin": EXPORTER, "stochastic": stochastic}
        if opset is not None:
            section["opset"] = opset
        try:
            config = reg.validate_config(section)
        except Exception as exc:  # pydantic's ValidationError: a bad --opset
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise ConfigError(f"export: invalid option: {exc.errors()[0]['msg']} (--opset {opset})") from None
            raise
        exporter: Exporter = reg.factory(config)
        artifacts = loaded.algorithm.policies()
        if stochastic and any(a.deterministic_only for a in artifacts):
            raise UserError(
                f"export --stochastic: {run_dir}'s policies ({loaded.config.algorithm.plugin}) are deterministic "
                "only, there is nothing to sample; export without --stochastic."
            )
        paths = output_paths([a.name for a in artifacts], run_dir, Path(out) if out is not None else None)
        written = []
        for artifact, path in zip(artifacts, paths, strict=True):
            if artifact.env_id is None:
                artifact.env_id = loaded.env.env_id
            written.append(Path(exporter.export(artifact, path, loaded.config)))
        return written
    finally:
        loaded.close()
