"""Backup size over time as a small inline SVG (rendered server-side)."""

from __future__ import annotations

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 640, 180, 64, 16, 12, 28


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def size_chart(history) -> dict | None:
    """``history``: catalog items of one database, oldest first."""
    if not history:
        return None
    times = [i.entry.created_at.timestamp() for i in history]
    sizes = [i.entry.size_bytes for i in history]
    t0, t1 = min(times), max(times)
    top = max(sizes) or 1
    span = (t1 - t0) or 1.0
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    points = []
    for item, t, s in zip(history, times, sizes):
        x = PAD_L + (inner_w * (t - t0) / span if t1 > t0 else inner_w / 2)
        y = PAD_T + inner_h - inner_h * s / top
        points.append({"x": round(x, 1), "y": round(y, 1), "label": f"{item.entry.created_at:%Y-%m-%d %H:%M} {_mb(s)}",
                       "item": item})
    return {
        "width": WIDTH, "height": HEIGHT, "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "axis": {"x0": PAD_L, "x1": WIDTH - PAD_R, "y0": PAD_T, "y1": HEIGHT - PAD_B},
        "top_label": _mb(top), "first_label": history[0].entry.created_at.strftime("%Y-%m-%d"),
        "last_label": history[-1].entry.created_at.strftime("%Y-%m-%d"),
        "label_y": HEIGHT - 8, "top_y": PAD_T + 4,
    }
