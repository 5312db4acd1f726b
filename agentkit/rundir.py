"""The run dir: the files a run keeps, who may write them, and loading a finished run back.

Layout (default ``runs/<env-id>-<algorithm>-seed<seed>``, or ``run.dir``, or ``--run-dir``)::

    config.yaml                resolved config (every default filled in)
    metrics.csv                one row per iteration: step, iteration, time, then the metrics
    events.out.tfevents.*      TensorBoard scalars (run.tensorboard)
    checkpoints/latest.pt      the newest checkpoint, rewritten atomically
    checkpoints/step_<n>.pt    every run.checkpoint_every_steps env steps; the newest run.keep_checkpoints kept
    curve.png                  episode return against env steps, written at the end (and on Ctrl-C)
    .lock                      held (flock) by the training process: one training per run dir at a time

Contracts (the training loop, ``agentkit.trainer``, relies on them; it writes the files through them):

- ``training_dir`` holds a run dir for one training session: one process at a time (``RunDirLock``); a new
  run refuses a dir that already holds a run, a resume refuses a config that differs from the saved one in
  more than ``RESUMABLE_CHANGES`` (``check_run_dir``); a session that fails before its first checkpoint
  removes a dir it created; a write the user can fix (full disk, read-only dir) is a ``RunDirError`` (exit 2).
- Every file is written atomically (``agentkit.files.write_atomic``); checkpoints carry a fingerprint
  of the run (``run_fingerprint``) and are refused by another run (``check_fingerprint``).
- ``load_run`` rebuilds a run for eval and export: config, plugin host, env source and the algorithm with
  the checkpoint's weights, on the CPU. It opens no env (no training env copies, no worker processes: the
  ``Algorithm`` contract), and imports no code the run dir names unless the caller allows it (``agentkit.trust``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from agentkit import checkpoint as ckpt
from agentkit.algorithm import Algorithm
from agentkit.build import build_algorithm, build_env
from agentkit.config import RunConfig, load_config, read_yaml
from agentkit.environment import EnvSource, MultiAgentEnvSource
from agentkit.errors import CheckpointError, ConfigError, UserError
from agentkit.files import write_atomic
from agentkit.host import PluginHost
from agentkit.policy import resolve_shared_trunk
from agentkit.registry import Registry
from agentkit.runlog import read_metrics
from agentkit.seeding import seed_everything
from agentkit.trust import foreign_host

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "curve.png"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
LOCK_FILE = ".lock"
#: Config keys that may differ between a run dir and a ``--resume`` of it.
RESUMABLE_CHANGES = frozenset({"algorithm.total_steps", "run.dir", "run.progress", "env.step_timeout"})
#: Config sections a checkpoint's fingerprint covers (all but ``RESUMABLE_CHANGES``; ``run`` and ``plugins``
#: only say where and how the run records itself).
FINGERPRINT_SECTIONS = ("seed", "env", "algorithm", "policy")


class RunDirError(UserError):
    """A run dir that cannot be used as asked (exists without --resume, nothing to resume, other config,
    not writable, disk full)."""


def default_run_dir(config: RunConfig, env: EnvSource) -> Path:
    """``runs/<env-id>-<algorithm>-seed<seed>``, with characters unsafe in a file name replaced by '_'."""
    name = f"{env.env_id}-{config.algorithm.plugin}-seed{config.seed}"
    return Path("runs") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run")


# -- what a run dir holds ------------------------------------------------------------------------------------


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds any checkpoint file."""
    folder = run_dir / CHECKPOINT_DIR
    return folder.is_dir() and any(folder.glob("*.pt"))


def has_run(run_dir: Path) -> bool:
    """A run dir holds a run once it has a checkpoint or a logged iteration. The files a session writes before
    its first checkpoint (config.yaml, an empty metrics.csv: a run stopped during start-up) hold nothing to lose,
    so a new run may train there."""
    return has_checkpoint(run_dir) or bool(read_metrics(run_dir / METRICS_FILE)[1])


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Write the resolved config to ``config.yaml``, atomically."""
    write_atomic(run_dir / CONFIG_FILE, config.to_yaml().encode())


def write_checkpoint(run_dir: Path, data: bytes, step: int, periodic: bool, keep: int) -> list[Path]:
    """Write an encoded checkpoint (``agentkit.checkpoint.encode``) into ``run_dir``: as ``step_<step>.pt`` too
    when ``periodic`` (then only the newest ``keep`` periodic ones are kept), and as ``latest.pt``, in that
    order, each atomically. Returns the paths written."""
    folder = run_dir / CHECKPOINT_DIR
    written = []
    if periodic:
        path = folder / f"step_{step}.pt"
        write_atomic(path, data)
        written.append(path)
        ckpt.prune(folder, keep, protect=[path])
    latest = folder / LATEST
    write_atomic(latest, data)
    written.append(latest)
    return written


# -- fingerprints and config diffs ---------------------------------------------------------------------------


def run_fingerprint(config: RunConfig | Mapping[str, Any], env: EnvSource | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into a run, as dotted keys → plain values: the config's
    ``seed``, ``env``, ``algorithm`` and ``policy`` sections (but ``RESUMABLE_CHANGES``, so a bigger
    ``algorithm.total_steps`` still resumes) and, given the env source, its observation and action spaces
    (per policy group for multi-agent envs)."""
    data = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    flat: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif path not in RESUMABLE_CHANGES:
            flat[path] = node

    for section in FINGERPRINT_SECTIONS:
        if section in data:
            walk(data[section], section)
    if env is not None:
        if env.multi_agent:
            for name, spec in cast(MultiAgentEnvSource, env).groups.items():
                flat[f"spaces.{name}.agents"] = list(spec.agents)
                flat[f"spaces.{name}.observation"] = str(spec.observation_space)
                flat[f"spaces.{name}.action"] = str(spec.action_space)
        else:
            flat["spaces.observation"] = str(env.observation_space)
            flat["spaces.action"] = str(env.action_space)
    return flat


def check_fingerprint(state: Mapping[str, Any], expected: Mapping[str, Any], path: Path, against: str) -> None:
    """Refuse (``CheckpointError``) a checkpoint whose fingerprint differs from ``expected`` in a key both have.

    A checkpoint written before fingerprints existed is checked on the config it stores (its spaces cannot be
    checked). Keys only one side has (a config field added by a newer agentkit) are not compared.
    """
    saved = state.get("fingerprint")
    if not isinstance(saved, Mapping):
        saved = run_fingerprint(state["config"]) if isinstance(state.get("config"), Mapping) else {}
    diff = [
        f"{key}: {saved[key]!r} in the checkpoint, {expected[key]!r} in {against}"
        for key in saved
        if key in expected and saved[key] != expected[key]
    ]
    if diff:
        more = f"\n  ... and {len(diff) - 10} more" if len(diff) > 10 else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} belongs to another run: it differs from {against} in\n  "
            + "\n  ".join(diff[:10]) + more + "\nUse this run's own checkpoints, or train that config in its own "
            "run dir (a bigger algorithm.total_steps is the one change --resume accepts)."
        )


def _config_diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if sub in RESUMABLE_CHANGES:
                continue
            if key not in old:
                out.append(f"{sub}: not in the run dir's config, {new[key]!r} now")
            elif key not in new:
                out.append(f"{sub}: {old[key]!r} in the run dir's config, absent now")
            else:
                out += _config_diff(old[key], new[key], sub)
        return out
    return [] if old == new else [f"{path}: {old!r} in the run dir's config, {new!r} now"]


def check_run_dir(run_dir: Path, config: RunConfig, resume: bool, registry: Registry) -> None:
    """Refuse (``RunDirError``) to train ``config`` into ``run_dir``: without ``resume``, when it holds a run
    (``has_run``); with it, when it holds none, or was trained with a config that differs in more than
    ``RESUMABLE_CHANGES``."""
    if not resume:
        if has_run(run_dir):
            raise RunDirError(
                f"run dir {str(run_dir)!r} already holds a run. Continue it with --resume, or train into a new "
                "directory with --run-dir DIR."
            )
        return
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(
            f"--resume: {str(run_dir)!r} holds no run to resume (no {CONFIG_FILE}). Drop --resume to start a "
            "new run there, or give the run dir with --run-dir DIR."
        )
    saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    try:  # resolved by today's models: a key a newer agentkit added, at its default, is no change
        saved = load_config(saved, registry, saved_run=True).model_dump(mode="json")
    except ConfigError:
        pass  # compare as written: the diff names what no longer validates
    diff = _config_diff(saved, config.model_dump(mode="json"))
    if diff:
        raise RunDirError(
            f"--resume: the config differs from the one {str(run_dir)!r} was trained with, in more than "
            "algorithm.total_steps:\n  " + "\n  ".join(diff) + "\nUse the run's own config (its config.yaml), "
            "or train the changed config into a new --run-dir."
        )


# -- holding a run dir for a training session ----------------------------------------------------------------


class RunDirLock:
    """An exclusive lock on a run dir for the length of a training session (POSIX ``flock``; the kernel
    releases it if the process dies, so a kill -9 never leaves a stale lock)."""

    def __init__(self, run_dir: Path):
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirError(
                f"run dir {str(run_dir)!r} is in use by another agentkit training process. Wait for it to end, "
                "or train into another --run-dir."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _write_error(exc: OSError, run_dir: Path) -> UserError | None:
    """A ``RunDirError`` for a failed write inside ``run_dir`` the user can fix (full disk, read-only dir)."""
    name = exc.filename
    if name is None:
        return None
    try:
        inside = Path(os.path.abspath(name)).is_relative_to(os.path.abspath(run_dir))
    except (TypeError, ValueError):
        return None
    if not inside:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = (f"Free some space (or train into a --run-dir on another disk), then continue with `agentkit train "
               f"{run_dir} --resume`; checkpoints/{LATEST} keeps the last state saved.")
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"The run dir {str(run_dir)!r} is not writable: make it writable, or train into another --run-dir."
    else:
        return None
    return RunDirError(f"cannot write {str(name)!r}: {exc.strerror or exc}. {fix}")


@contextlib.contextmanager
def writes_into(run_dir: Path) -> Iterator[None]:
    """Turn a failed write into ``run_dir`` that the user can fix into a ``RunDirError`` (exit code 2)."""
    try:
        yield
    except OSError as exc:
        error = _write_error(exc, run_dir)
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def training_dir(run_dir: Path, config: RunConfig, resume: bool, registry: Registry) -> Iterator[Path]:
    """Hold ``run_dir`` for one training session of ``config`` (the module's contracts): created if need be,
    locked, checked (``check_run_dir``), cleared of what a killed session left (temporary files; without
    ``resume``, TensorBoard events of a session that stopped before its first iteration). Inside, a write the
    user can fix raises ``RunDirError``; a session that fails before its first checkpoint removes the dir when
    it created it."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run dir {str(run_dir)!r} is a file, not a directory; give another --run-dir.")
    created = not run_dir.exists()
    with writes_into(run_dir):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(run_dir)
            raise
        lock = RunDirLock(run_dir)
    try:
        check_run_dir(run_dir, config, resume, registry)
        with writes_into(run_dir):
            ckpt.remove_stale_temp_files(run_dir)
            ckpt.remove_stale_temp_files(run_dir / CHECKPOINT_DIR)
            if not resume:
                for stale in run_dir.glob("events.out.tfevents.*"):
                    stale.unlink(missing_ok=True)
            yield run_dir
    except BaseException:
        if created and not has_checkpoint(run_dir):
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


# -- loading a run back --------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A run dir rebuilt: its config, plugin host, env source, and algorithm with the latest weights."""

    config: RunConfig
    host: PluginHost
    env: EnvSource
    algorithm: Algorithm
    run_dir: Path
    step: int
    iteration: int

    def close(self) -> None:
        """Close the algorithm, then the env source (what either holds: a bridged game's port, say)."""
        try:
            self.algorithm.close()
        finally:
            self.env.close()


def load_run(run_dir: Path, extra_plugins: Sequence[str] = (), checkpoint: str | None = None,
             allow_imports: Sequence[str] = (), plays: bool = True) -> LoadedRun:
    """Rebuild a run dir: plugin host (with its config's ``plugins:`` and ``extra_plugins``), config, env
    source and algorithm, with the weights of ``checkpoints/latest.pt`` (or of ``checkpoints/<checkpoint>``,
    a periodic one such as ``step_100000.pt``), on the CPU.

    Only the policies' networks are built: no env copy is opened and no worker process started (the
    ``Algorithm`` contract; ``tests/test_load_run.py`` checks it on an async pettingzoo run). The caller
    closes it when done (``LoadedRun.close``).

    The run dir's config.yaml is a file made elsewhere (``agentkit.trust``): the plugins it lists are loaded
    only when named in ``extra_plugins`` (``-p``) or ``allow_imports``, the code its env section names only
    when ``allow_imports`` allows it; otherwise UntrustedImportError (exit 2) before anything is imported.
    ``plays=False`` (export): the env will not be played, so only what rebuilding its source imports is checked
    (``EnvConfig.rebuild_imports``: a bridged run with its game's hello kept starts no game).
    Raises RunDirError when ``run_dir`` holds no run, CheckpointError for a missing or damaged checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{str(run_dir)!r} is not a run dir (no {CONFIG_FILE}); train one with "
            f"`agentkit train CONFIG --run-dir {run_dir}`."
        )
    data = read_yaml(run_dir / CONFIG_FILE)
    host = foreign_host(data, str(run_dir / CONFIG_FILE), extra_plugins, allow_imports,
                        rebuilt_from=None if plays else run_dir)
    config = load_config(data, host.registry, saved_run=True)
    if checkpoint is not None and not checkpoint.endswith(".pt"):
        checkpoint += ".pt"  # `--checkpoint step_100000` names the file the listing shows as step_100000.pt
    latest = run_dir / CHECKPOINT_DIR / (checkpoint or LATEST)
    if checkpoint is not None and (Path(checkpoint).name != checkpoint or not latest.is_file()):
        kept = sorted(p.name for p in (run_dir / CHECKPOINT_DIR).glob("*.pt"))
        raise CheckpointError(
            f"{str(run_dir)!r} has no checkpoint {checkpoint!r} in {CHECKPOINT_DIR}/; it keeps: "
            f"{', '.join(kept) or 'none'}."
        )
    if not latest.exists():
        raise CheckpointError(
            f"{str(run_dir)!r} has no checkpoint ({CHECKPOINT_DIR}/{LATEST}): the run never saved one."
        )
    state = ckpt.load_checkpoint(latest)
    seed_everything(config.seed, config.run.torch_threads)
    env = build_env(config, host.registry, run_dir=run_dir)
    try:
        config = resolve_shared_trunk(config, env)
        check_fingerprint(state, run_fingerprint(config, env), latest, f"the run's {CONFIG_FILE}")
        algorithm = build_algorithm(config, host.registry, env, run_dir, device=torch.device("cpu"))
    except BaseException:
        env.close()
        raise
    try:
        algorithm.load_state_dict(state["algorithm"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        algorithm.close()
        env.close()
        raise CheckpointError(
            f"checkpoint {str(latest)!r} does not fit the algorithm of {run_dir / CONFIG_FILE} "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    return LoadedRun(config=config, host=host, env=env, algorithm=algorithm, run_dir=run_dir,
                     step=int(state["step"]), iteration=int(state["iteration"]))
