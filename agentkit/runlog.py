"""The run's records: ``metrics.csv``, TensorBoard events and ``curve.png``.

``metrics.csv`` has one row per iteration. The first columns are ``step`` (env steps done), ``iteration``
and ``time`` (seconds of training, summed over resumed sessions); then every metric in the order it first
appeared. A metric that appears for the first time later in the run adds a column: the file is rewritten
(atomically) with the wider header and earlier rows get an empty cell. A metric missing from an iteration
is an empty cell too. Rows are flushed as they are written, so the file is complete up to the last
iteration even after a kill -9.

On resume, ``MetricsCSV(..., resume_step=s)`` drops rows past the checkpoint's step ``s`` (iterations that
ran after the last checkpoint and are replayed) before appending; TensorBoard is opened with
``resume_step=s``, which purges events past step ``s``, for the same reason.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from agentkit.environment import MultiAgentTransition, Transition, mean_episode_infos

FIXED_COLUMNS = ("step", "iteration", "time")
RETURN_METRIC = "charts/episode_return"
ELO_METRIC = "selfplay/elo"
#: Below this many points a curve is drawn with markers.
FEW_POINTS = 20


@dataclass
class EndedEpisodes:
    """The episodes that ended during one iteration, gathered from each env step's transition, and the
    figures every algorithm logs for them: ``charts/episode_return`` (for multi-agent envs the mean
    per-agent return), ``charts/episode_length``, ``charts/episodes``, ``charts/<group>/episode_return``
    when there are several groups, ``charts/<agent>/episode_return`` per agent where the env reports each
    agent's own return (turn-based games, whose sides' mean is 0), and ``infos/<key>``, the mean of each number the env reported at an
    episode's end (``infos/win`` for Team Arena, ``infos/success`` for Dungeon)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    infos: list[dict[str, float]] = field(default_factory=list)
    group_returns: dict[str, list[float]] = field(default_factory=dict)
    agent_returns: dict[str, list[float]] = field(default_factory=dict)

    def add(self, transition: Transition | MultiAgentTransition) -> None:
        self.returns += transition.episode_returns
        self.lengths += transition.episode_lengths
        self.infos += transition.episode_infos
        if isinstance(transition, MultiAgentTransition):
            for group, returns in transition.group_returns.items():
                self.group_returns.setdefault(group, []).extend(returns)
            for per_agent in transition.agent_returns:
                for agent, value in per_agent.items():
                    self.agent_returns.setdefault(agent, []).append(value)

    def metrics(self) -> dict[str, float]:
        """The figures above; empty when no episode ended."""
        if not self.returns:
            return {}
        out = {
            RETURN_METRIC: float(np.mean(self.returns)),
            "charts/episode_length": float(np.mean(self.lengths)),
            "charts/episodes": float(len(self.returns)),
        }
        if len(self.group_returns) > 1:
            out.update({f"charts/{g}/episode_return": float(np.mean(r)) for g, r in self.group_returns.items() if r})
        out.update({f"charts/{a}/episode_return": float(np.mean(r)) for a, r in self.agent_returns.items()})
        out.update({f"infos/{key}": value for key, value in mean_episode_infos(self.infos).items()})
        return out


def group_returns(metrics: Mapping[str, float]) -> dict[str, float]:
    """The per-side returns ``charts/<name>/episode_return`` of one iteration's metrics, by name: one per
    policy group when the env has several (whose returns can differ, e.g. opposing teams), one per agent for a
    turn-based zero-sum game."""
    return {key.split("/")[1]: value for key, value in metrics.items()
            if key.startswith("charts/") and key.endswith("/episode_return") and key.count("/") == 2}


def episode_returns(metrics: Mapping[str, float]) -> dict[str, float]:
    """The return metrics of one iteration (``charts/episode_return`` and the per-group ones), if any."""
    groups = {f"charts/{g}/episode_return": v for g, v in group_returns(metrics).items()}
    return {**({RETURN_METRIC: metrics[RETURN_METRIC]} if RETURN_METRIC in metrics else {}), **groups}


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def read_metrics(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a metrics.csv (rows missing their step cell, e.g. cut off, are skipped)."""
    path = Path(path)
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step") not in (None, "") and None not in r and None not in r.values()]
    return header, rows


class MetricsCSV:
    """Appends one row per iteration to ``path``, widening the header when new metrics appear."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        header, rows = read_metrics(self.path) if resume_step is not None else ([], [])
        if resume_step is not None:
            rows = [r for r in rows if _as_int(r["step"]) <= resume_step]
        self.columns: list[str] = header or list(FIXED_COLUMNS)
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        from agentkit.files import write_atomic

        write_atomic(self.path, buffer.getvalue().encode())
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, restval="", lineterminator="\n")

    def append(self, step: int, iteration: int, time: float, metrics: Mapping[str, float]) -> None:
        new = [k for k in metrics if k not in self.columns and k not in FIXED_COLUMNS]
        if new:
            self._file.close()
            _, rows = read_metrics(self.path)
            self.columns += new
            self._rewrite(rows)
        row = {k: _format(v) for k, v in metrics.items() if k not in FIXED_COLUMNS}
        row.update(step=str(step), iteration=str(iteration), time=f"{time:.3f}")
        try:
            self._writer.writerow(row)
            self._file.flush()
        except OSError as exc:  # a write error names no file: say which
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _as_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return -1


class TensorBoardLog:
    """Scalars to TensorBoard event files in the run dir (``tensorboard --logdir runs``).

    One event per iteration carries every metric (one ``Summary`` with many values): an order of magnitude
    cheaper than one ``add_scalar`` call per metric, which matters for fast envs.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from tensorboard.compat.proto.summary_pb2 import Summary  # imports tensorboard: only when enabled
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        # TensorBoard hides events at steps >= purge_step written before this session (a replayed tail)
        purge_step = None if resume_step is None else resume_step + 1
        if resume_step is not None:
            _wait_for_a_later_second(run_dir)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self._file_writer = self.writer._get_file_writer()  # writes the purge marker on resume

    def append(self, step: int, metrics: Mapping[str, float]) -> None:
        values = [
            self._summary.Value(tag=name, simple_value=float(value))
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        self._file_writer.add_summary(self._summary(value=values), step)

    def close(self) -> None:
        self.writer.close()


def elo_columns(header: list[str]) -> list[str]:
    """The self-play ratings of a metrics.csv header: ``selfplay/elo`` (one policy for every seat) or one
    ``selfplay/<side>/elo`` per side (asymmetric self-play)."""
    return [c for c in header if c == ELO_METRIC or (c.startswith("selfplay/") and c.endswith("/elo")
                                                     and c.count("/") == 2)]


def curve_columns(header: list[str]) -> list[str]:
    """The return columns of a metrics.csv header that ``write_curve`` plots: ``charts/episode_return`` and
    the per-side ``charts/<name>/episode_return``, except the mean in a self-play run (one with a rating,
    ``elo_columns``, e.g. written before self-play left it out), whose sides' mean in a zero-sum game is 0."""
    columns = [c for c in header if c == RETURN_METRIC or (c.startswith("charts/") and c.endswith("/episode_return"))]
    if elo_columns(header) and RETURN_METRIC in columns and len(columns) > 1:
        columns.remove(RETURN_METRIC)
    return columns


class DrawCurve(Protocol):
    """What draws curve.png: ``write_curve``'s signature and contract."""

    def __call__(self, metrics_csv: Path, out: Path, title: str = "") -> Path: ...


def write_curve(metrics_csv: Path, out: Path, title: str = "") -> Path:
    """Plot episode return against env steps from ``metrics_csv`` into ``out`` (PNG, written atomically).

    Plots ``charts/episode_return`` and any per-group ``charts/<group>/episode_return`` columns; an
    iteration where no episode ended (empty or nan cell) is skipped. Points get markers while there are few
    of them (a run with a single return point shows a dot, not an empty frame). A self-play run's ratings
    (``selfplay/elo``, or one ``selfplay/<side>/elo`` per side) get a panel of their own below, and its
    returns are drawn per side only (the mean over the sides of a zero-sum game is 0).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    header, rows = read_metrics(metrics_csv)
    columns = curve_columns(header)
    elo = {column: points for column in elo_columns(header) if (points := _series(rows, column))}
    fig = Figure(figsize=(7, 6.5 if elo else 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1) if elo else fig.add_subplot()
    plotted = False
    for column in columns:
        points = _series(rows, column)
        if points:
            xs, ys = zip(*points, strict=True)
            label = "all agents" if column == RETURN_METRIC else column.split("/")[1]
            ax.plot(xs, ys, label=label if len(columns) > 1 else None, linewidth=1.5,
                    marker="o" if len(xs) <= FEW_POINTS else None, markersize=4)
            plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no episode has finished yet", ha="center", va="center", transform=ax.transAxes)
    elif len(columns) > 1:
        ax.legend()
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if elo:
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        for column, points in elo.items():
            xs, ys = zip(*points, strict=True)
            side = column.split("/")[1] if column != ELO_METRIC else None
            ax2.plot(xs, ys, color="tab:red" if side is None else None, label=side, linewidth=1.5,
                     marker="o" if len(xs) <= FEW_POINTS else None, markersize=4)
        if len(elo) > 1:
            ax2.legend()
        ax2.set_xlabel("env steps")
        ax2.set_ylabel("Elo (self-play)")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    from agentkit.files import write_atomic

    write_atomic(out, buffer.getvalue())
    return out


def _series(rows: list[dict[str, str]], column: str) -> list[tuple[int, float]]:
    """(step, value) of the rows whose ``column`` cell holds a finite number."""
    points = ((_as_int(r["step"]), _as_float(r.get(column, ""))) for r in rows)
    return [(step, value) for step, value in points if value is not None]


def _as_float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _wait_for_a_later_second(run_dir: Path) -> None:
    """Sleep until this session's event file will sort after the run dir's existing ones.

    TensorBoard reads a run's event files in name order, and a name starts with the creation time in whole
    seconds (``events.out.tfevents.<seconds>.<host>.<pid>...``); a session resumed within the same second
    as the last one ended (e.g. right after a kill -9) could otherwise sort first and be read as older.
    """
    import time

    latest = 0
    for path in run_dir.glob("events.out.tfevents.*"):
        stamp = path.name.split(".")[3]
        if stamp.isdigit():
            latest = max(latest, int(stamp))
    while int(time.time()) <= latest:
        time.sleep(0.05)
