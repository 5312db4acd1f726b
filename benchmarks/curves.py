"""Reading a run's learning curve from its metrics.csv, shared by the benchmark scripts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(steps, episode returns, steps/s) from a run's metrics.csv (iterations with no finished episode skipped)."""
    steps, returns, speed = [], [], []
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("charts/episode_return"):
                steps.append(int(row["step"]))
                returns.append(float(row["charts/episode_return"]))
            if row.get("time/steps_per_second"):
                speed.append(float(row["time/steps_per_second"]))
    return np.array(steps), np.array(returns), float(np.median(speed)) if speed else float("nan")


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)
