"""Training progress on the console: a rich progress bar on a terminal, plain periodic lines otherwise.

``run.progress`` picks the mode: ``auto`` (a bar when stderr is a terminal, else plain), ``bar``,
``plain`` or ``none``. Progress goes to stderr, so stdout stays free for machine-readable output.
Plain mode prints a line at the first iteration, then whenever another 10% of the budget is done or
30 seconds have passed, and at the end.

The return shown is the most recent episode return; where the env has several policy groups (whose returns
can differ, e.g. opposing teams) it is one return per group (``return adversary 10.50 · agent -13.56``),
never their mean. Steps/s is ``time/steps_per_second`` (this session's env steps over its wall time). The
last iteration may pass the budget (it runs whole rollouts); the percentage stops at 100%.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import IO

PLAIN_EVERY_FRACTION = 0.10
PLAIN_EVERY_S = 30.0


def _fmt_return(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _fmt_returns(overall: float | None, groups: Mapping[str, float]) -> str:
    if groups:
        return " · ".join(f"{g} {_fmt_return(v)}" for g, v in groups.items())
    return _fmt_return(overall)


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressReporter:
    """Shows steps done out of the budget, steps/s and the most recent episode return (per group where the
    env has several)."""

    def __init__(self, mode: str, total_steps: int, start_step: int = 0, label: str = "", stream: IO | None = None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.total = total_steps
        self.start_step = start_step
        self.label = label
        self.recent_return: float | None = None
        self.recent_group_returns: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._last_line_t = -math.inf
        self._last_line_step = -math.inf
        self._lines = 0
        self._bar = None
        if mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("| {task.fields[sps]} steps/s | return {task.fields[ret]} |"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                refresh_per_second=4,
            )
            self._task = self._bar.add_task(label or "train", total=total_steps, completed=start_step, sps="-", ret="-")
            self._bar.start()

    def steps_per_second(self, step: int) -> float:
        elapsed = time.perf_counter() - self._t0
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def message(self, text: str) -> None:
        """A one-off line (resuming, saved, interrupted...), shown in every mode but ``none``."""
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, step: int, episode_return: float | None = None, group_returns: Mapping[str, float] | None = None,
               steps_per_second: float | None = None) -> None:
        """Record ``step`` and this iteration's return (None or nan: no episode ended), per-group returns
        (``charts/<group>/episode_return``) and steps/s (default: measured here since construction)."""
        if episode_return is not None and math.isfinite(episode_return):
            self.recent_return = episode_return
        for group, value in (group_returns or {}).items():
            if math.isfinite(value):
                self.recent_group_returns[group] = value
        sps = self.steps_per_second(step) if steps_per_second is None else steps_per_second
        if self._bar is not None:
            self._bar.update(self._task, completed=min(step, self.total), sps=f"{sps:,.0f}",
                             ret=self.returns_text())
        elif self.mode == "plain":
            now = time.perf_counter()
            due = (
                self._lines == 0
                or step >= self.total
                or step - self._last_line_step >= PLAIN_EVERY_FRACTION * self.total
                or now - self._last_line_t >= PLAIN_EVERY_S
            )
            if due:
                self._line(step, sps, now)

    def returns_text(self) -> str:
        """The most recent return(s) as shown: one per group where there are groups, else one."""
        return _fmt_returns(self.recent_return, self.recent_group_returns)

    def _line(self, step: int, sps: float, now: float) -> None:
        pct = min(100.0, 100.0 * step / self.total) if self.total else 100.0
        print(
            f"{self.label + ' ' if self.label else ''}step {step:,}/{self.total:,} ({pct:.0f}%) | "
            f"{sps:,.0f} steps/s | return {self.returns_text()} | "
            f"elapsed {_fmt_duration(now - self._t0)}",
            file=self.stream,
            flush=True,
        )
        self._lines += 1
        self._last_line_t = now
        self._last_line_step = step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
