"""Table rows of the migrations list, built in Python: the page lists up to
hundreds of rows and must render in a fraction of the time of the reads."""

from __future__ import annotations

from datetime import timezone
from urllib.parse import quote

from html import escape
from django.utils.safestring import SafeString, mark_safe


def _date_cell(item) -> str:
    d = item.date
    if d is None:
        return '<span class="empty">none</span>'
    d = d.astimezone(timezone.utc)
    return f'<time datetime="{d.isoformat()}">{d:%Y-%m-%d %H:%M} UTC</time>'


def render_rows(items) -> SafeString:
    out = []
    for item in items:
        name = escape(item.name)
        shown = escape(item.file or item.name)
        warning = (f' <span class="warn" title="{escape(item.warning)}">⚠ name</span>' if item.warning else "")
        run_on = f"{item.run_on:%Y-%m-%d %H:%M:%S}" if item.run_on else "—"
        out.append(
            f'<tr class="mig-{item.status}" data-name="{name}"><td><a href="/migrations/{escape(quote(item.name, safe=""))}/">'
            f"<code>{shown}</code></a>{warning}</td>"
            f'<td><span class="badge status-{item.status}">{escape(item.status_label)}</span></td>'
            f"<td>{_date_cell(item)}</td><td>{run_on}</td></tr>"
        )
    return mark_safe("\n".join(out))
