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

import contextlib
import errno
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import yaml

from agentkit import checkpoint as ckpt
from agentkit.algorithm import Algorithm, BuildContext, resolve_device
from agentkit.config import RunConfig, load_config, read_yaml
from agentkit.envcheck import CheckedSource
from agentkit.environment import EnvSource
from agentkit.errors import (
    CheckpointError,
    ConfigError,
    InvalidInputError,
    NonFiniteError,
    PluginError,
    RunAborted,
    UserError,
)
from agentkit.finite import all_finite, first_non_finite
from agentkit.host import PluginHost
from agentkit.policy import resolve_shared_trunk
from agentkit.progress import ProgressReporter
from agentkit.registry import Registry
from agentkit.runlog import (
    RETURN_METRIC,
    MetricsCSV,
    TensorBoardLog,
    episode_returns,
    group_returns,
    read_metrics,
    write_curve,
)
from agentkit.seeding import rng_state, seed_everything, set_rng_state
from agentkit.trust import foreign_host

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "curve.png"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
LOCK_FILE = ".lock"
LATEST_EVERY_S = 60.0
#: Config keys that may differ between a run dir and a ``--resume`` of it.
RESUMABLE_CHANGES = frozenset({"algorithm.total_steps", "run.dir", "run.progress", "env.step_timeout"})
#: Config sections a checkpoint's fingerprint covers (all but ``RESUMABLE_CHANGES``; ``run`` and ``plugins``
#: only say where and how the run records itself).
FINGERPRINT_SECTIONS = ("seed", "env", "algorithm", "policy")
#: ``losses/*`` metrics that are NaN by definition when undefined (explained variance of returns that do not
#: vary), the only ones a run may log as non-finite.
MAY_BE_UNDEFINED = frozenset({"losses/explained_variance"})


class RunDirError(UserError):
    """A run dir that cannot be used as asked (exists without --resume, nothing to resume, other config,
    not writable, disk full)."""


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
    ``last_returns``: when no episode ended in the last iteration (so its metrics hold no return), the step
    and the episode-return metrics of the latest iteration that had some; None otherwise.
    """

    reason: str = "completed"
    run_dir: Path | None = None
    last_returns: tuple[int, dict[str, float]] | None = None


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
    """The env source of ``config.env`` from its registered plugin, behind the env boundary's checks
    (``agentkit.envcheck.CheckedSource``: finite, well-shaped values within ``env.step_timeout``)."""
    reg = registry.get("env", config.env.plugin, where="env.plugin")
    return CheckedSource(reg.factory(config.env), config.env.step_timeout)  # type: ignore[return-value]


def build_algorithm(config: RunConfig, registry: Registry, env: EnvSource, run_dir: Path | None,
                    device: torch.device | None = None) -> Algorithm:
    """The algorithm of ``config.algorithm`` from its registered plugin, on ``device`` (default: the one
    ``run.device`` names; loading a run for eval or export uses the CPU, wherever it was trained)."""
    reg = registry.get("algorithm", config.algorithm.plugin, where="algorithm.plugin")
    context = BuildContext(config=config, registry=registry, env=env, run_dir=run_dir,
                           device=resolve_device(config.run.device) if device is None else device)
    return reg.factory(config.algorithm, context)


def default_run_dir(config: RunConfig, env: EnvSource) -> Path:
    """``runs/<env-id>-<algorithm>-seed<seed>``, with characters unsafe in a file name replaced by '_'."""
    name = f"{getattr(env, 'env_id', config.env.plugin)}-{config.algorithm.plugin}-seed{config.seed}"
    return Path("runs") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run")


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


def _has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / CHECKPOINT_DIR
    return folder.is_dir() and any(folder.glob("*.pt"))


def _has_run(run_dir: Path) -> bool:
    """A run dir holds a run once it has a checkpoint or a logged iteration. The files a session writes before
    its first checkpoint (config.yaml, an empty metrics.csv: a run stopped during start-up) hold nothing to lose,
    so a new run may train there."""
    return _has_checkpoint(run_dir) or bool(read_metrics(run_dir / METRICS_FILE)[1])


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
        groups = getattr(env, "groups", None)
        if getattr(env, "multi_agent", False) and isinstance(groups, Mapping):
            for name, spec in groups.items():
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


def _check_run_dir(run_dir: Path, config: RunConfig, resume: bool, registry: Registry) -> None:
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
    """First SIGINT/SIGTERM: ask for a clean stop. A second one ends the run now: KeyboardInterrupt for SIGINT,
    ``RunAborted`` for SIGTERM, raised wherever the main thread is (a hung env step included)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise RunAborted(signum)
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class _HookMetrics(dict):
    """The metrics dict ``agentkit_iteration_end`` hooks get: remembers the module that set each key, so that a
    bad value can be blamed on its plugin."""

    def __init__(self, metrics: Mapping[str, float]):
        super().__init__(metrics)
        self.setters: dict[Any, str] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.setters[key] = sys._getframe(1).f_globals.get("__name__", "")
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        module = sys._getframe(1).f_globals.get("__name__", "")
        for key, value in dict(*args, **kwargs).items():
            self.setters[key] = module
            super().__setitem__(key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self.setters[key] = sys._getframe(1).f_globals.get("__name__", "")
            super().__setitem__(key, default)
        return self[key]


def _blamed(host: PluginHost, module: str | None) -> str:
    """The plugin(s) a hook's bad metric comes from: the one defined in ``module``, else every implementer."""
    names = [impl.plugin_name for impl in host.hook.agentkit_iteration_end.get_hookimpls()]
    for name in names:
        plugin = host.pm.get_plugin(name)
        defined_in = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        if module and defined_in == module:
            return f"plugin {name!r}"
    return f"plugin {names[0]!r}" if len(names) == 1 else f"one of the plugins {names}"


def _hook_metrics(metrics: _HookMetrics, before: Mapping[str, float], host: PluginHost) -> dict[str, float]:
    """The metrics after ``agentkit_iteration_end``: the algorithm's (checked already) and what hooks added or
    changed, which must be numbers too; a bad one is blamed on the plugin that set it."""
    out = {}
    for key, value in metrics.items():
        if key in before and value is before[key]:
            out[key] = value
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            who = _blamed(host, metrics.setters.get(key))
            raise PluginError(
                f"metric {key!r} = {value!r}, set in agentkit_iteration_end by {who}, is not a number; a hook may "
                "add metrics, each a float."
            ) from exc
    return out


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


def _located(found: tuple[str, float] | None, policy: str, kind: str) -> str | None:
    return None if found is None else f"policy {policy!r} {kind} {found[0]} is {found[1]}"


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
def _writes_into(run_dir: Path):
    """Turn a failed write into ``run_dir`` that the user can fix into a ``RunDirError`` (exit code 2)."""
    try:
        yield
    except OSError as exc:
        error = _write_error(exc, run_dir)
        if error is None:
            raise
        raise error from None


class _Session:
    """One call of ``train``: the loop and everything it writes."""

    def __init__(self, ctx: RunContext, elapsed: float):
        self.ctx = ctx
        cfg = ctx.config
        self.elapsed_before = elapsed
        self.t0 = time.perf_counter()
        self.last_latest_t = time.perf_counter()
        self.last_periodic_step = ctx.step
        self.last_iteration = (time.perf_counter(), ctx.step)
        #: The most recent episode returns (RETURN_METRIC and per-group ones) and the step they were logged at:
        #: the final table shows them when no episode ended in the last iteration.
        self.last_returns: tuple[int, dict[str, float]] | None = None
        resume_step = ctx.step if ctx.resumed else None
        self.csv = MetricsCSV(ctx.run_dir / METRICS_FILE, resume_step=resume_step)
        self.tb = TensorBoardLog(ctx.run_dir, resume_step=resume_step) if cfg.run.tensorboard else None
        self.progress = ProgressReporter(
            cfg.run.progress, ctx.total_steps, start_step=ctx.step, label=ctx.run_dir.name
        )
        self.fingerprint = run_fingerprint(cfg, ctx.env)
        self.saved_step: int | None = ctx.step if ctx.resumed else None  # step of the last checkpoint written
        # the deployable weights, checked after every iteration: (policy, parameter name, tensor)
        self.watched = [
            (policy.name, name, tensor)
            for policy in ctx.algorithm.policies()
            for name, tensor in [*policy.actor.named_parameters(), *policy.actor.named_buffers()]
        ]

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def last_good(self) -> str:
        """Where the run stands, for the message of an error that stops it."""
        if self.saved_step is None:
            return "No checkpoint was written."
        return (f"checkpoints/{LATEST} holds the last good state (step {self.saved_step:,}); nothing after it was "
                "saved.")

    def check_finite(self, metrics: Mapping[str, float]) -> None:
        """Stop the run (``NonFiniteError``) when an iteration gave a non-finite loss (a ``losses/*`` metric
        but ``MAY_BE_UNDEFINED``) or left a non-finite weight or gradient in a policy."""
        losses = [f"{k} = {v}" for k, v in metrics.items()
                  if k.startswith("losses/") and k not in MAY_BE_UNDEFINED and not math.isfinite(v)]
        tensors = [t for _, _, t in self.watched]
        tensors += [t.grad for t in tensors if t.grad is not None]
        if not losses and all_finite(tensors):
            return
        found = None
        for policy, name, tensor in self.watched:
            for kind, value in (("weight", tensor), ("gradient", tensor.grad)):
                found = found or (value is not None and _located(first_non_finite(value, name), policy, kind))
        ctx = self.ctx
        what = "; ".join(part for part in (f"non-finite losses: {', '.join(losses)}" if losses else "", found) if part)
        raise NonFiniteError(
            f"training diverged in iteration {ctx.iteration} (step {ctx.step:,}): {what}. "
            "Usual causes: a learning rate too high, or rewards or observations too large (scale them in the env, "
            "or turn on the algorithm's reward or observation normalisation). " + self.last_good()
        )

    def save(self, periodic: bool) -> list[Path]:
        ctx = self.ctx
        state = ctx.algorithm.state_dict()
        bad = first_non_finite(state)
        if bad is not None:
            raise NonFiniteError(
                f"the algorithm's state holds {bad[1]} at {bad[0]} (step {ctx.step:,}), so it was not saved: training "
                "diverged. Usual causes: a learning rate too high, or rewards or observations too large. "
                + self.last_good()
            )
        try:
            data = ckpt.encode({
                "step": ctx.step,
                "iteration": ctx.iteration,
                "config": ctx.config.model_dump(mode="json"),
                "fingerprint": self.fingerprint,
                "algorithm": state,
                "trainer": {"rng": rng_state(), "elapsed": self.elapsed()},
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
        self.saved_step = ctx.step
        self.last_latest_t = time.perf_counter()
        for path in written:
            ctx.host.hook.agentkit_checkpoint_saved(run=ctx, path=str(path), step=ctx.step)
        return written

    def after_iteration(self, metrics: dict[str, float]) -> bool:
        """Log one iteration, save what is due; True when a hook asked to stop."""
        ctx = self.ctx
        step = ctx.step
        elapsed = self.elapsed()
        now = time.perf_counter()
        session_s = now - self.t0
        # Both count env steps over wall time: this session so far (the progress line's figure), and this
        # iteration alone (rollout, update and the previous iteration's logging and checkpoints).
        metrics["time/steps_per_second"] = (step - ctx.start_step) / session_s if session_s > 0 else 0.0
        last_t, last_step = self.last_iteration
        metrics["time/iteration_steps_per_second"] = (step - last_step) / (now - last_t) if now > last_t else 0.0
        self.last_iteration = (now, step)
        before, metrics = metrics, _HookMetrics(metrics)
        results = ctx.host.hook.agentkit_iteration_end(run=ctx, iteration=ctx.iteration, step=step, metrics=metrics)
        metrics = _hook_metrics(metrics, before, ctx.host)
        ctx.metrics = metrics
        self.csv.append(step, ctx.iteration, elapsed, metrics)
        if self.tb is not None:
            self.tb.append(step, metrics)
        returns = episode_returns(metrics)
        if returns:
            self.last_returns = (step, returns)
        self.progress.update(step, metrics.get(RETURN_METRIC), group_returns=group_returns(metrics),
                             steps_per_second=metrics["time/steps_per_second"])
        every = ctx.config.run.checkpoint_every_steps
        if every and step // every > self.last_periodic_step // every:
            self.save(periodic=True)
            self.last_periodic_step = step
        elif time.perf_counter() - self.last_latest_t >= LATEST_EVERY_S:
            self.save(periodic=False)
        return any(r is True for r in results)

    def close_logs(self, failing: bool = False) -> None:
        """Close metrics.csv and TensorBoard, write curve.png. ``failing``: the run is ending on an error, which
        a failure to write the curve (the same full disk, say) must not hide."""
        try:
            self._close_logs()
        except OSError:
            if not failing:
                raise

    def _close_logs(self) -> None:
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
    config = resolve_shared_trunk(config, env)
    if run_dir is None:
        run_dir = Path(config.run.dir) if config.run.dir else default_run_dir(config, env)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run dir {str(run_dir)!r} is a file, not a directory; give another --run-dir.")
    created = not run_dir.exists()
    with _writes_into(run_dir):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(run_dir)
            raise
        lock = _RunDirLock(run_dir)
    try:
        _check_run_dir(run_dir, config, resume, host.registry)
        with _writes_into(run_dir):
            return _train_locked(config, host, env, run_dir, resume)
    except BaseException:
        # A session that fails before its first checkpoint leaves nothing worth keeping in a dir it created.
        if created and not _has_checkpoint(run_dir):
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()
        close = getattr(env, "close", None)  # the source's own resources, e.g. a bridged game's listening port
        if callable(close):
            close()


def _train_locked(config: RunConfig, host: PluginHost, env: EnvSource, run_dir: Path, resume: bool) -> TrainResult:
    clock = getattr(env, "clock", None)
    with clock.armed() if clock is not None else contextlib.nullcontext():
        return _train_session(config, host, env, run_dir, resume)


def _train_session(config: RunConfig, host: PluginHost, env: EnvSource, run_dir: Path, resume: bool) -> TrainResult:
    state = None
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if resume and latest.exists():
        state = ckpt.load_checkpoint(latest)
        check_fingerprint(state, run_fingerprint(config, env), latest, "this run's config and env")
    ckpt.remove_stale_temp_files(run_dir)
    ckpt.remove_stale_temp_files(run_dir / CHECKPOINT_DIR)
    if not resume:  # events of an earlier session that stopped before its first iteration
        for stale in run_dir.glob("events.out.tfevents.*"):
            stale.unlink(missing_ok=True)

    algorithm = build_algorithm(config, host.registry, env, run_dir)
    # hooks see the env plugin's own source (its class, its attributes to change), not the checking wrapper
    ctx = RunContext(config=config, run_dir=run_dir, host=host, env=getattr(env, "wrapped", env), algorithm=algorithm,
                     resumed=state is not None)
    elapsed = 0.0
    if state is not None:
        try:
            algorithm.load_state_dict(state["algorithm"])
            set_rng_state(state["trainer"]["rng"])
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
                try:
                    raw = algorithm.iterate()
                except InvalidInputError as exc:  # from the env boundary: say what was kept
                    exc.args = (f"{exc} {session.last_good()}", *exc.args[1:])
                    raise
                if ctx.step <= before:
                    raise PluginError(
                        f"algorithm plugin {config.algorithm.plugin!r}: iterate() did not advance steps_done "
                        f"(still {ctx.step}); every iteration must consume env steps or the run never ends."
                    )
                ctx.iteration += 1
                metrics = _as_metrics(raw, config.algorithm.plugin)
                session.check_finite(metrics)
                asked = session.after_iteration(metrics)
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
            session.close_logs(failing=not clean)
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
    if RETURN_METRIC not in ctx.metrics and session.last_returns is not None:
        result.last_returns = session.last_returns
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
    config = load_config(data, host.registry, saved_run=True)
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
    config.env._run_dir = run_dir
    env = build_env(config, host.registry)
    config = resolve_shared_trunk(config, env)
    check_fingerprint(state, run_fingerprint(config, env), latest, f"the run's {CONFIG_FILE}")
    algorithm = build_algorithm(config, host.registry, env, run_dir, device=torch.device("cpu"))
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

