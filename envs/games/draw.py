"""Tiny numpy-only drawing for ``render_mode="rgb_array"``: no display, no extra dependency.

Every function draws in place on an ``uint8 [H, W, 3]`` canvas. Coordinates are pixels (x right, y down);
``world_to_px`` maps a square world ``[-half, half]^2`` (y up) onto the canvas.
"""

from __future__ import annotations

import numpy as np

Color = tuple[int, int, int]

BACKGROUND: Color = (245, 245, 240)
GRID: Color = (220, 220, 215)
BLUE: Color = (40, 90, 220)
RED: Color = (215, 50, 45)
GREEN: Color = (40, 170, 70)
YELLOW: Color = (235, 190, 30)
BROWN: Color = (140, 90, 40)
DARK: Color = (50, 50, 55)
GREY: Color = (150, 150, 150)


def canvas(height: int, width: int, color: Color = BACKGROUND) -> np.ndarray:
    """A new ``uint8 [height, width, 3]`` image filled with ``color``."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = color
    return img


def world_to_px(x: float, y: float, half: float, size: int) -> tuple[float, float]:
    """World point in ``[-half, half]^2`` (y up) to pixel coordinates on a ``size``-pixel square canvas."""
    scale = size / (2.0 * half)
    return (x + half) * scale, (half - y) * scale


def fill_rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
    """Fill the pixel rectangle ``[x0, x1) x [y0, y1)`` (clipped to the canvas)."""
    h, w = img.shape[:2]
    c0, c1 = max(0, int(round(x0))), min(w, int(round(x1)))
    r0, r1 = max(0, int(round(y0))), min(h, int(round(y1)))
    if c0 < c1 and r0 < r1:
        img[r0:r1, c0:c1] = color


def fill_circle(img: np.ndarray, cx: float, cy: float, radius: float, color: Color) -> None:
    """Fill a disc of ``radius`` pixels centred on ``(cx, cy)``."""
    _disc(img, cx, cy, radius, color, inner=None)


def ring(img: np.ndarray, cx: float, cy: float, radius: float, color: Color, width: float = 2.0) -> None:
    """Draw a circle outline ``width`` pixels thick."""
    _disc(img, cx, cy, radius, color, inner=max(0.0, radius - width))


def _disc(img: np.ndarray, cx: float, cy: float, radius: float, color: Color, inner: float | None) -> None:
    h, w = img.shape[:2]
    r0, r1 = max(0, int(cy - radius - 1)), min(h, int(cy + radius + 2))
    c0, c1 = max(0, int(cx - radius - 1)), min(w, int(cx + radius + 2))
    if r0 >= r1 or c0 >= c1:
        return
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - cx
    d2 = xs * xs + ys * ys
    sel = d2 <= radius * radius
    if inner is not None:
        sel &= d2 >= inner * inner
    img[r0:r1, c0:c1][sel] = color


def line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color, width: float = 1.5) -> None:
    """Draw a segment ``width`` pixels thick (distance-to-segment test on its bounding box)."""
    h, w = img.shape[:2]
    pad = width + 1
    r0, r1 = max(0, int(min(y0, y1) - pad)), min(h, int(max(y0, y1) + pad + 1))
    c0, c1 = max(0, int(min(x0, x1) - pad)), min(w, int(max(x0, x1) + pad + 1))
    if r0 >= r1 or c0 >= c1:
        return
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    px, py = x0 + t * dx - xs, y0 + t * dy - ys
    img[r0:r1, c0:c1][px * px + py * py <= (width / 2.0) ** 2] = color
