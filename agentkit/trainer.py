"""The run: what ``agentkit train`` does around an algorithm, and how a finished run is loaded back.

``train(config, host, run_dir, resume)`` builds the env source and the algorithm from the registry, then
calls ``algorithm.iterate()`` until ``algorithm.steps_done`` reaches ``algorithm.total_steps``. Around each
iteration it calls the lifecycle hooks, logs the metrics, shows progress and saves checkpoints.

The run dir (default ``runs/<env-id>-<algorithm>-seed<seed>``, or ``run.dir``, or the ``run_dir`` argument)::

    config.yaml                resolved config (every default filled in)
    metrics.csv                one row per iteration: step, iteration, time, then the metrics
    events.out.tfevents.*      TensorBoard scalars (run.tensorboard)
    checkpoints/latest.pt      the newest checkpoint, rewritten atomically
    checkpoints/step_<n>.pt    every run.checkpoint_every_steps env steps; the newest run.keep_checkpoints kept
    curve.png                  episode return against env steps, written at the end (and on Ctrl-C)
    .lock                      held (flock) by the training process: one training per run dir at a time

Checkpoints: ``latest.pt`` is written at step 0, with every periodic checkpoint, at least every
``LATEST_EVERY_S`` seconds, and when the run ends; see ``agentkit.checkpoint`` for the format.

Stopping: the first Ctrl-C (SIGINT) or SIGTERM lets the current iteration finish, then saves a checkpoint,
writes curve.png, calls ``agentkit_train_end(reason="interrupted")`` and returns normally (the CLI exits 0:
the run dir is in a clean state and ``--resume`` continues it). A second Ctrl-C raises KeyboardInterrupt at
once, without saving (the previous checkpoint stays valid). A hook returning True from
``agentkit_iteration_end`` stops the run the same clean way with reason ``"stopped"``.

Resuming (``resume=True``): the run dir's config.yaml must equal the given config in everything but
``algorithm.total_steps`` (and ``run.dir``/``run.progress``, which only say where and how to display);
the algorithm's state (weights, optimiser, normalisers, its RNGs), the global python/numpy/torch RNG
states, the iteration count and the training time are restored from ``checkpoints/latest.pt``;
metrics.csv rows past the checkpoint are dropped, then new rows are appended.

Determinism: the same config and seed give the same metrics.csv on the same machine, except the wall-clock
columns (``time`` and ``time/*``). Python, numpy and torch are seeded with ``seed`` before anything is built
and torch uses ``run.torch_threads`` threads.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agentkit import checkpoint as ckpt
from agentkit.algorithm import Algorithm, BuildContext
from agentkit.config import RunConfig, load_config, read_yaml
from agentkit.environment import EnvSource
from agentkit.errors import CheckpointError, PluginError, UserError
from agentkit.host import PluginHost
from agentkit.progress import ProgressReporter
from agentkit.registry import Registry
from agentkit.runlog import RETURN_METRIC, MetricsCSV, TensorBoardLog, write_curve
from agentkit.trust import foreign_host

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "curve.png"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
LOCK_FILE = ".lock"
LATEST_EVERY_S = 60.0
#: Config keys that may differ between a run dir and a ``--resume`` of it.
RESUMABLE_CHANGES = frozenset({"algorithm.total_steps", "run.dir", "run.progress"})


class RunDirError(UserError):
    """A run dir that cannot be used as asked (exists without --resume, nothing to resume, other config)."""


@dataclass
class RunContext:
    """The run as lifecycle hooks see it (``run`` in every ``agentkit_*`` lifecycle hook)."""

    config: RunConfig
    run_dir: Path
    host: PluginHost
    env: EnvSource
    algorithm: Algorithm
    resumed: bool = False
    start_step: int = 0  # env steps done when this session started (0 unless resumed)
    iteration: int = 0  # iterations done, over all sessions
    metrics: dict[str, float] = field(default_factory=dict)  # the latest iteration's metrics
    stop_requested: bool = False

    @property
    def step(self) -> int:
        """Env steps done so far."""
        return int(self.algorithm.steps_done)

    @property
    def total_steps(self) -> int:
        return int(self.config.algorithm.total_steps)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def request_stop(self) -> None:
        """Ask for a clean stop after the current iteration (like returning True from iteration_end)."""
        self.stop_requested = True


class TrainResult(dict):
    """What ``train`` returns: the last iteration's metrics (plus ``step`` and ``iteration``).

    ``reason`` says how the run ended: ``"completed"``, ``"stopped"`` (a hook asked) or ``"interrupted"``.
    """

    reason: str = "completed"
    run_dir: Path | None = None


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


# -- building ----------------------------------------------------------------------------------------------


def build_env(config: RunConfig, registry: Registry) -> EnvSource:
    """The env source of ``config.env`` from its registered plugin."""
    reg = registry.get("env", config.env.plugin, where="env.plugin")
    return reg.factory(config.env)


def build_algorithm(config: RunConfig, registry: Registry, env: EnvSource, run_dir: Path | None) -> Algorithm:
    """The algorithm of ``config.algorithm`` from its registered plugin (CPU)."""
    reg = registry.get("algorithm", config.algorithm.plugin, where="algorithm.plugin")
    context = BuildContext(config=config, registry=registry, env=env, run_dir=run_dir, device=torch.device("cpu"))
    return reg.factory(config.algorithm, context)


def seed_everything(seed: int, torch_threads: int | None = None) -> None:
    """Seed python, numpy and torch's global RNGs; set torch's intra-op thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)


def default_run_dir(config: RunConfig, env: EnvSource) -> Path:
    """``runs/<env-id>-<algorithm>-seed<seed>``, with characters unsafe in a file name replaced by '_'."""
    name = f"{getattr(env, 'env_id', config.env.plugin)}-{config.algorithm.plugin}-seed{config.seed}"
    return Path("runs") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run")


# -- RNG state (plain data, so it fits a weights_only checkpoint) -------------------------------------------


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


# -- the run dir ---------------------------------------------------------------------------------------------


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


def _has_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR))


def _check_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    if not resume:
        if _has_run(run_dir):
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
    diff = _config_diff(saved, config.model_dump(mode="json"))
    if diff:
        raise RunDirError(
            f"--resume: the config differs from the one {str(run_dir)!r} was trained with, in more than "
            "algorithm.total_steps:\n  " + "\n  ".join(diff) + "\nUse the run's own config (its config.yaml), "
            "or train the changed config into a new --run-dir."
        )


def _write_config(run_dir: Path, config: RunConfig) -> None:
    ckpt.write_atomic(run_dir / CONFIG_FILE, config.to_yaml().encode())


# -- the loop ------------------------------------------------------------------------------------------------


class _RunDirLock:
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


class _StopOnSignal:
    """First SIGINT/SIGTERM: ask for a clean stop. Second SIGINT: KeyboardInterrupt now."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _as_metrics(raw: Mapping[str, Any], plugin: str) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise PluginError(
                f"algorithm plugin {plugin!r} returned metric {key!r} = {value!r} from iterate(), which is not "
                "a number; metrics must map names to floats."
            ) from exc
    return out


class _Session:
    """One call of ``train``: the loop and everything it writes."""

    def __init__(self, ctx: RunContext, elapsed: float):
        self.ctx = ctx
        cfg = ctx.config
        self.elapsed_before = elapsed
        self.t0 = time.perf_counter()
        self.last_latest_t = time.perf_counter()
        self.last_periodic_step = ctx.step
        resume_step = ctx.step if ctx.resumed else None
        self.csv = MetricsCSV(ctx.run_dir / METRICS_FILE, resume_step=resume_step)
        self.tb = TensorBoardLog(ctx.run_dir, resume_step=resume_step) if cfg.run.tensorboard else None
        self.progress = ProgressReporter(
            cfg.run.progress, ctx.total_steps, start_step=ctx.step, label=ctx.run_dir.name
        )

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def save(self, periodic: bool) -> list[Path]:
        ctx = self.ctx
        try:
            data = ckpt.encode({
                "step": ctx.step,
                "iteration": ctx.iteration,
                "config": ctx.config.model_dump(mode="json"),
                "algorithm": ctx.algorithm.state_dict(),
                "trainer": {"rng": _rng_state(), "elapsed": self.elapsed()},
            })
        except TypeError as exc:
            raise PluginError(f"algorithm plugin {ctx.config.algorithm.plugin!r}: state_dict(): {exc}") from exc
        written = []
        if periodic:
            path = ctx.checkpoint_dir / f"step_{ctx.step}.pt"
            ckpt.write_atomic(path, data)
            written.append(path)
            ckpt.prune(ctx.checkpoint_dir, ctx.config.run.keep_checkpoints, protect=[path])
        latest = ctx.checkpoint_dir / LATEST
        ckpt.write_atomic(latest, data)
        written.append(latest)
        self.last_latest_t = time.perf_counter()
        for path in written:
            ctx.host.hook.agentkit_checkpoint_saved(run=ctx, path=str(path), step=ctx.step)
        return written

    def after_iteration(self, metrics: dict[str, float]) -> bool:
        """Log one iteration, save what is due; True when a hook asked to stop."""
        ctx = self.ctx
        step = ctx.step
        elapsed = self.elapsed()
        session_s = time.perf_counter() - self.t0
        metrics["time/steps_per_second"] = (step - ctx.start_step) / session_s if session_s > 0 else 0.0
        results = ctx.host.hook.agentkit_iteration_end(run=ctx, iteration=ctx.iteration, step=step, metrics=metrics)
        metrics = _as_metrics(metrics, ctx.config.algorithm.plugin)
        ctx.metrics = metrics
        self.csv.append(step, ctx.iteration, elapsed, metrics)
        if self.tb is not None:
            self.tb.append(step, metrics)
        self.progress.update(step, metrics.get(RETURN_METRIC))
        every = ctx.config.run.checkpoint_every_steps
        if every and step // every > self.last_periodic_step // every:
            self.save(periodic=True)
            self.last_periodic_step = step
        elif time.perf_counter() - self.last_latest_t >= LATEST_EVERY_S:
            self.save(periodic=False)
        return any(r is True for r in results)

    def close_logs(self) -> None:
        self.csv.close()
        if self.tb is not None:
            self.tb.close()
        try:
            write_curve(self.ctx.run_dir / METRICS_FILE, self.ctx.run_dir / CURVE_FILE, title=self.ctx.run_dir.name)
        finally:
            self.progress.close()


def train(config: RunConfig, host: PluginHost, run_dir: Path | None = None, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``run_dir`` (see the module docstring); return the last iteration's metrics.

    Raises RunDirError (a UserError) for a run dir that already holds a run without ``resume``, nothing to
    resume, or a config that differs from the run dir's in more than ``algorithm.total_steps``;
    CheckpointError for a damaged checkpoint when resuming.
    """
    seed_everything(config.seed, config.run.torch_threads)
    env = build_env(config, host.registry)
    if run_dir is None:
        run_dir = Path(config.run.dir) if config.run.dir else default_run_dir(config, env)
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _RunDirLock(run_dir)
    try:
        _check_run_dir(run_dir, config, resume)
    except BaseException:
        lock.release()
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        return _train_locked(config, host, env, run_dir, resume)
    finally:
        lock.release()


def _train_locked(config: RunConfig, host: PluginHost, env: EnvSource, run_dir: Path, resume: bool) -> TrainResult:
    state = None
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if resume and latest.exists():
        state = ckpt.load_checkpoint(latest)
    ckpt.remove_stale_temp_files(run_dir)
    ckpt.remove_stale_temp_files(run_dir / CHECKPOINT_DIR)

    algorithm = build_algorithm(config, host.registry, env, run_dir)
    ctx = RunContext(config=config, run_dir=run_dir, host=host, env=env, algorithm=algorithm, resumed=state is not None)
    elapsed = 0.0
    if state is not None:
        try:
            algorithm.load_state_dict(state["algorithm"])
            _set_rng_state(state["trainer"]["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            algorithm.close()
            raise CheckpointError(
                f"checkpoint {str(latest)!r} does not fit this run's algorithm ({type(exc).__name__}: {exc})."
            ) from exc
        ctx.iteration = int(state["iteration"])
        elapsed = float(state["trainer"]["elapsed"])
    ctx.start_step = ctx.step
    _write_config(run_dir, config)

    result = TrainResult()
    result.run_dir = run_dir
    session = _Session(ctx, elapsed)
    what = f"{config.algorithm.plugin} on {getattr(env, 'env_id', config.env.plugin)}"
    if state is not None:
        session.progress.message(f"resuming {run_dir} ({what}) at step {ctx.step:,}, iteration {ctx.iteration}")
    elif resume:
        session.progress.message(f"{run_dir} has no checkpoint yet: starting it from step 0 ({what})")
    else:
        session.progress.message(f"training {what} for {ctx.total_steps:,} steps into {run_dir}")
    reason = "completed"
    clean = False
    try:
        host.hook.agentkit_train_start(run=ctx)
        if state is None:
            session.save(periodic=False)  # a loadable latest.pt from the very start
        with _StopOnSignal() as stop:
            while ctx.step < ctx.total_steps:
                before = ctx.step
                raw = algorithm.iterate()
                if ctx.step <= before:
                    raise PluginError(
                        f"algorithm plugin {config.algorithm.plugin!r}: iterate() did not advance steps_done "
                        f"(still {ctx.step}); every iteration must consume env steps or the run never ends."
                    )
                ctx.iteration += 1
                asked = session.after_iteration(_as_metrics(raw, config.algorithm.plugin))
                if asked or ctx.stop_requested:
                    reason = "stopped"
                    break
                if stop.signum is not None:
                    reason = "interrupted"
                    break
        if reason == "interrupted":
            session.progress.message(f"interrupted at step {ctx.step:,}: saving a checkpoint")
        session.save(periodic=False)
        clean = True
    finally:
        try:
            session.close_logs()
        finally:
            if clean:
                try:
                    host.hook.agentkit_train_end(run=ctx, metrics=ctx.metrics, reason=reason)
                finally:
                    algorithm.close()
            else:
                algorithm.close()
    if reason != "completed":
        done = "stopped by a plugin" if reason == "stopped" else "interrupted"
        session.progress.message(f"{done} at step {ctx.step:,}; continue it with --resume --run-dir {run_dir}")
    result.update(ctx.metrics)
    result.update(step=float(ctx.step), iteration=float(ctx.iteration))
    result.reason = reason
    return result


# -- loading a run back --------------------------------------------------------------------------------------


def load_run(run_dir: Path, extra_plugins: Sequence[str] = (), checkpoint: str | None = None,
             allow_imports: Sequence[str] = ()) -> LoadedRun:
    """Rebuild a run dir: plugin host (with its config's ``plugins:`` and ``extra_plugins``), config, env
    source and algorithm, with the weights of ``checkpoints/latest.pt`` (or of ``checkpoints/<checkpoint>``,
    a periodic one such as ``step_100000.pt``).

    The run dir's config.yaml is a file made elsewhere (``agentkit.trust``): the plugins it lists are loaded
    only when named in ``extra_plugins`` (``-p``) or ``allow_imports``, the code its env section names only
    when ``allow_imports`` allows it; otherwise UntrustedImportError (exit 2) before anything is imported.
    Raises RunDirError when ``run_dir`` holds no run, CheckpointError for a missing or damaged checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{str(run_dir)!r} is not a run dir (no {CONFIG_FILE}); train one with "
            f"`agentkit train CONFIG --run-dir {run_dir}`."
        )
    data = read_yaml(run_dir / CONFIG_FILE)
    host = foreign_host(data, str(run_dir / CONFIG_FILE), extra_plugins, allow_imports)
    config = load_config(data, host.registry)
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
    env = build_env(config, host.registry)
    algorithm = build_algorithm(config, host.registry, env, run_dir)
    try:
        algorithm.load_state_dict(state["algorithm"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        algorithm.close()
        raise CheckpointError(
            f"checkpoint {str(latest)!r} does not fit the algorithm of {run_dir / CONFIG_FILE} "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    return LoadedRun(config=config, host=host, env=env, algorithm=algorithm, run_dir=run_dir,
                     step=int(state["step"]), iteration=int(state["iteration"]))

