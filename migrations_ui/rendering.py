"""HTML for the migrations pages, built in Python: the list's table rows
(the page lists up to hundreds of rows and must render in a fraction of the
time of the reads), a file's source highlighted with Pygments, and a cache of
rendered rows per merged report."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from datetime import timezone
from html import escape
from urllib.parse import quote

from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight as _highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JavascriptLexer, PostgresLexer, TextLexer, TypeScriptLexer

from ops.migrations.report import Report

_LEXERS = {".js": JavascriptLexer, ".cjs": JavascriptLexer, ".mjs": JavascriptLexer, ".ts": TypeScriptLexer,
           ".sql": PostgresLexer}


def _date_cell(item) -> str:
    d = item.date
    if d is None:
        return '<span class="empty">none</span>'
    d = d.astimezone(timezone.utc)
    return f'<time datetime="{d.isoformat()}">{d:%Y-%m-%d %H:%M} UTC</time>'


def _detail_href():
    """(prefix, suffix) of a migration's page around its quoted name: one
    reverse() per table, as the name is quoted whole (``&`` too), which
    reverse() would leave as is."""
    prefix, _, suffix = reverse("migration_detail", args=["_"]).rpartition("_")
    return escape(prefix), escape(suffix)


def render_rows(items) -> SafeString:
    out = []
    prefix, suffix = _detail_href()
    for item in items:
        name = escape(item.name)
        shown = escape(item.file or item.name)
        warning = (f' <span class="warn" title="{escape(item.warning)}">⚠ name</span>' if item.warning else "")
        run_on = f"{item.run_on:%Y-%m-%d %H:%M:%S}" if item.run_on else "—"
        out.append(
            f'<tr class="mig-{item.status}" data-name="{name}"><td><a href="{prefix}{escape(quote(item.name, safe=""))}{suffix}">'
            f"<code>{shown}</code></a>{warning}</td>"
            f'<td><span class="badge status-{item.status}">{escape(item.status_label)}</span></td>'
            f"<td>{_date_cell(item)}</td><td>{run_on}</td></tr>"
        )
    return mark_safe("\n".join(out))


def highlight(filename: str, source: str, marked_lines=()) -> tuple[str, str]:
    """(HTML, CSS) for the source, with line numbers and ``marked_lines`` marked."""
    lexer = _LEXERS.get(os.path.splitext(filename)[1].lower(), TextLexer)()
    formatter = HtmlFormatter(linenos="table", cssclass="source", hl_lines=[n for n in marked_lines if n],
                              lineanchors="L", anchorlinenos=True, wrapcode=True)
    return _highlight(source, lexer, formatter), formatter.get_style_defs(".source")


# Rendered fragments per merged report.  Reports are memoised on their inputs
# (ops.migrations.report) and every request gets a copy sharing the memoised
# report's ``items`` list, so that list identifies "the same report"; the cache
# holds the list itself, so its id cannot be reused while an entry lives.
_FRAGMENTS: OrderedDict = OrderedDict()
_FRAGMENTS_LOCK = threading.Lock()
_FRAGMENTS_SIZE = 64


def fragment(report: Report, key, build):
    """``build()`` once per key for the items of ``report`` (and its copies)."""
    cache_key = (id(report.items), key)
    with _FRAGMENTS_LOCK:
        hit = _FRAGMENTS.get(cache_key)
        if hit is not None and hit[0] is report.items:
            _FRAGMENTS.move_to_end(cache_key)
            return hit[1]
    value = build()
    with _FRAGMENTS_LOCK:
        _FRAGMENTS[cache_key] = (report.items, value)
        _FRAGMENTS.move_to_end(cache_key)
        while len(_FRAGMENTS) > _FRAGMENTS_SIZE:
            _FRAGMENTS.popitem(last=False)
    return value
