"""Geometry of the small inline SVG charts the pages draw server-side.

Templates draw the shapes; this module only computes coordinates, so every
chart scales and rounds the same way.  Plain Python (no Django).

``line_chart``: points (x value, y value) scaled into a frame with padding
for axis labels, y from 0 to the largest value; one point alone sits in the
middle.  ``stacked_bars``: one bar per slot of equal width, each a stack of
rectangles (one per series, bottom up) scaled to the tallest bar; a non-zero
count is at least 1 unit high so it stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    pad_left: int = 0
    pad_right: int = 0
    pad_top: int = 0
    pad_bottom: int = 0

    @property
    def inner_width(self) -> int:
        return self.width - self.pad_left - self.pad_right

    @property
    def inner_height(self) -> int:
        return self.height - self.pad_top - self.pad_bottom

    @property
    def axis(self) -> dict:
        """Corners of the plot area: x0..x1 left to right, y0 (top)..y1 (bottom)."""
        return {"x0": self.pad_left, "x1": self.width - self.pad_right,
                "y0": self.pad_top, "y1": self.height - self.pad_bottom}


def line_chart(frame: Frame, values: list[tuple[float, float]]) -> dict | None:
    """``values``: (x, y) pairs in drawing order.  Returns the points (``x``,
    ``y`` in SVG units, one per value), the ``polyline`` attribute, the
    ``axis`` corners and the largest y (``top``); None for no values."""
    if not values:
        return None
    xs = [x for x, _ in values]
    ys = [y for _, y in values]
    x_min, x_max = min(xs), max(xs)
    top = max(ys) or 1
    span = (x_max - x_min) or 1.0
    points = []
    for x, y in values:
        px = frame.pad_left + (frame.inner_width * (x - x_min) / span if x_max > x_min else frame.inner_width / 2)
        py = frame.pad_top + frame.inner_height - frame.inner_height * y / top
        points.append({"x": round(px, 1), "y": round(py, 1)})
    return {
        "width": frame.width, "height": frame.height, "points": points, "top": top, "axis": frame.axis,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
    }


def stacked_bars(frame: Frame, stacks: list[list[tuple[str, int]]], *, gap: float = 1) -> dict:
    """``stacks``: per slot, (series, count) pairs bottom up.  Returns the
    bars (``x``, ``w`` of the slot and ``rects`` with ``series``, ``x``,
    ``y``, ``w``, ``h``) and ``max``, the tallest total."""
    totals = [sum(count for _, count in stack) for stack in stacks]
    top = max(totals, default=0)
    slot = frame.inner_width / max(len(stacks), 1)
    bars = []
    for i, stack in enumerate(stacks):
        x = frame.pad_left + i * slot
        y = frame.pad_top + frame.inner_height
        rects = []
        for series, count in stack:
            if not count or not top:
                continue
            h = max(count / top * frame.inner_height, 1)
            y -= h
            rects.append({"series": series, "x": round(x + gap, 2), "y": round(y, 2),
                          "w": round(max(slot - 2 * gap, 1), 2), "h": round(h, 2)})
        bars.append({"x": round(x, 2), "w": round(slot, 2), "rects": rects, "total": totals[i]})
    return {"width": frame.width, "height": frame.height, "bars": bars, "max": top}
