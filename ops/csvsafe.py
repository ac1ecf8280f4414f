"""One guard against spreadsheet formula injection for every CSV export.

A spreadsheet opening a CSV file runs a cell that starts with ``=``, ``+``,
``-`` or ``@`` (or a tab or carriage return followed by one) as a formula, so
text a user controls (an actor name, a log message) could run in the reader's
spreadsheet.  Such a cell is written with a leading apostrophe, which the
spreadsheet shows as text.  Plain Python so both ``ops`` and the Django apps
can use it.
"""

from __future__ import annotations

import json

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """``value`` as a CSV cell that no spreadsheet reads as a formula: text
    as is, ``None`` as empty, anything else as compact sorted JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "'" + text if text[:1] in FORMULA_STARTS else text
