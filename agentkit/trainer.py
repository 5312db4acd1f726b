"""The training loop: what ``agentkit train`` does around an algorithm.

``train(config, host, run_dir, resume)`` builds the env source and the algorithm from the registry
(``agentkit.build``), then calls ``algorithm.iterate()`` until ``algorithm.steps_done`` reaches
``algorithm.total_steps``. Around each iteration it calls the lifecycle hooks, logs the metrics, shows
progress and saves checkpoints. The run dir it writes into, and loading a finished run back, are
``agentkit.rundir``'s (its docstring has the layout and the contracts the loop relies on).

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
import gc
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from agentkit import checkpoint as ckpt
from agentkit.algorithm import Algorithm
from agentkit.build import build_algorithm, build_env
from agentkit.config import RunConfig
from agentkit.envcheck import CheckedSource
from agentkit.environment import EnvSource
from agentkit.errors import (
    CheckpointError,
    InvalidInputError,
    NonFiniteError,
    PluginError,
    RunAborted,
)
from agentkit.finite import all_finite, first_non_finite
from agentkit.host import PluginHost
from agentkit.policy import resolve_shared_trunk
from agentkit.progress import ProgressReporter
from agentkit.rundir import (
    CHECKPOINT_DIR,
    CURVE_FILE,
    LATEST,
    METRICS_FILE,
    LoadedRun,
    RunDirError,
    check_fingerprint,
    default_run_dir,
    load_run,
    run_fingerprint,
    training_dir,
    write_checkpoint,
    write_config,
)
from agentkit.runlog import (
    RETURN_METRIC,
    DrawCurve,
    MetricsCSV,
    TensorBoardLog,
    episode_returns,
    group_returns,
    write_curve,
)
from agentkit.seeding import rng_state, seed_everything, set_rng_state

#: ``load_run``, ``LoadedRun`` and ``RunDirError`` are ``agentkit.rundir``'s; importable from here too, where
#: they were documented before the run-dir layer had its own module.
__all__ = ["LoadedRun", "RunContext", "RunDirError", "TrainResult", "build_algorithm", "build_env", "load_run",
           "train"]

LATEST_EVERY_S = 60.0
#: ``losses/*`` metrics that are NaN by definition when undefined (explained variance of returns that do not
#: vary), the only ones a run may log as non-finite.
MAY_BE_UNDEFINED = frozenset({"losses/explained_variance"})


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


# -- the loop ------------------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _collector_skips_what_is_built() -> Iterator[None]:
    """Everything alive when the loop starts (torch and the plugins' modules, the env, the algorithm: ~190k
    objects) stays through it: ``gc.freeze`` keeps the garbage collector from scanning it in each full collection
    (one took 0.13 s in a 100k-step CartPole run, 0.04 s frozen); ``gc.unfreeze`` hands it back at the end."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


class _Session:
    """One call of ``train``: the loop and everything it writes."""

    def __init__(self, ctx: RunContext, elapsed: float, draw_curve: DrawCurve):
        self.ctx = ctx
        self.draw_curve = draw_curve
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
        written = write_checkpoint(ctx.run_dir, data, ctx.step, periodic, ctx.config.run.keep_checkpoints)
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
            self.draw_curve(self.ctx.run_dir / METRICS_FILE, self.ctx.run_dir / CURVE_FILE, title=self.ctx.run_dir.name)
        finally:
            self.progress.close()


def train(config: RunConfig, host: PluginHost, run_dir: Path | None = None, resume: bool = False,
          draw_curve: DrawCurve = write_curve) -> TrainResult:
    """Train ``config`` into ``run_dir`` (see the module docstring); return the last iteration's metrics.

    ``draw_curve`` draws curve.png (``agentkit.runlog.write_curve``'s contract); ``agentkit train`` passes a
    ``agentkit.curve_process.CurveProcess``'s, which draws it in a helper process.

    Raises RunDirError (a UserError) for a run dir that already holds a run without ``resume``, nothing to
    resume, or a config that differs from the run dir's in more than ``algorithm.total_steps``;
    CheckpointError for a damaged checkpoint when resuming.
    """
    seed_everything(config.seed, config.run.torch_threads)
    env = build_env(config, host.registry)
    config = resolve_shared_trunk(config, env)
    if run_dir is None:
        run_dir = Path(config.run.dir) if config.run.dir else default_run_dir(config, env)
    try:
        with training_dir(Path(run_dir), config, resume, host.registry) as held:
            return _train_locked(config, host, env, held, resume, draw_curve)
    finally:
        env.close()  # the source's own resources, e.g. a bridged game's listening port


def _train_locked(config: RunConfig, host: PluginHost, env: CheckedSource, run_dir: Path, resume: bool,
                  draw_curve: DrawCurve) -> TrainResult:
    with env.clock.armed():
        return _train_session(config, host, env, run_dir, resume, draw_curve)


def _train_session(config: RunConfig, host: PluginHost, env: CheckedSource, run_dir: Path, resume: bool,
                   draw_curve: DrawCurve) -> TrainResult:
    state = None
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if resume and latest.exists():
        state = ckpt.load_checkpoint(latest)
        check_fingerprint(state, run_fingerprint(config, env), latest, "this run's config and env")

    algorithm = build_algorithm(config, host.registry, env, run_dir)
    # hooks see the env plugin's own source (its class, its attributes to change), not the checking wrapper
    ctx = RunContext(config=config, run_dir=run_dir, host=host, env=env.wrapped, algorithm=algorithm,
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
    write_config(run_dir, config)

    result = TrainResult()
    result.run_dir = run_dir
    session = _Session(ctx, elapsed, draw_curve)
    what = f"{config.algorithm.plugin} on {env.env_id}"
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
        with _StopOnSignal() as stop, _collector_skips_what_is_built():
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
