"""Backup size over time as a small inline SVG (rendered server-side); the
geometry comes from hcapadmin.lib.svgchart."""

from __future__ import annotations

from hcapadmin.lib.svgchart import Frame, line_chart

FRAME = Frame(width=640, height=180, pad_left=64, pad_right=16, pad_top=12, pad_bottom=28)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def size_chart(history) -> dict | None:
    """``history``: catalog items of one database, oldest first."""
    chart = line_chart(FRAME, [(i.entry.created_at.timestamp(), i.entry.size_bytes) for i in history])
    if chart is None:
        return None
    for point, item in zip(chart["points"], history):
        point["label"] = f"{item.entry.created_at:%Y-%m-%d %H:%M} {_mb(item.entry.size_bytes)}"
        point["item"] = item
    chart.update({
        "top_label": _mb(chart["top"]), "first_label": history[0].entry.created_at.strftime("%Y-%m-%d"),
        "last_label": history[-1].entry.created_at.strftime("%Y-%m-%d"),
        "label_y": FRAME.height - 8, "top_y": FRAME.pad_top + 4,
    })
    return chart
