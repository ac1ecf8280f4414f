"""The input and output conventions of docs/conventions.md that a reader
cannot see from one view: no written URL paths, one CSV formula guard, one
chart geometry, cursors signed per use."""

from __future__ import annotations

import ast
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Pages and views whose URLs come from reverse() / {% url %}.
PY_FILES = ["hcapadmin/accounts/decorators.py", "hcapadmin/accounts/views.py", "hcapadmin/core/api.py",
            "hcapadmin/core/views.py", "hcapadmin/backups/views.py", "hcapadmin/jobs/views.py",
            "hcapadmin/audit/views.py", "hcapadmin/audit/query.py", "hcapadmin/accounts/middleware.py",
            "hcapadmin/restores/views.py", "migrations_ui/views.py", "migrations_ui/apply.py",
            "migrations_ui/rendering.py", "migrations_ui/forms.py", "hcapadmin/logbrowser/views.py",
            "hcapadmin/logbrowser/forms.py"]
TEMPLATE_SKIP: tuple[str, ...] = ()
WRITTEN_PATH = re.compile(r'(?:href|action|hx-get|hx-post|src)="/(?!/)')


def _string_constants(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


@pytest.mark.parametrize("name", PY_FILES)
def test_views_write_no_url_paths(name):
    written = [(line, value) for line, value in _string_constants(ROOT / name) if value.startswith("/")]
    assert written == [], f"{name}: use reverse() instead of {written}"


def test_templates_write_no_url_paths():
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        if path.relative_to(ROOT / "templates").parts[0] in TEMPLATE_SKIP:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if WRITTEN_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    assert found == [], "use {% url %}: " + ", ".join(found)


@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"), ("+1", "'+1"), ("-1", "'-1"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), ("a=b", "a=b"), (None, ""),
    ({"b": 1, "a": "é"}, '{"a": "é", "b": 1}'),
    (["=x"], '["=x"]'), (-5, "'-5"),
])
def test_csv_cell_never_starts_a_formula(value, cell):
    from ops.csvsafe import cell as csv_cell

    assert csv_cell(value) == cell


def test_line_chart_scales_into_the_frame():
    from hcapadmin.lib.svgchart import Frame, line_chart

    frame = Frame(width=640, height=180, pad_left=64, pad_right=16, pad_top=12, pad_bottom=28)
    assert line_chart(frame, []) is None
    chart = line_chart(frame, [(0, 100), (10, 50)])
    assert chart["points"] == [{"x": 64, "y": 12.0}, {"x": 624, "y": 82.0}]
    assert chart["polyline"] == "64.0,12.0 624.0,82.0" and chart["top"] == 100
    assert chart["axis"] == {"x0": 64, "x1": 624, "y0": 12, "y1": 152}
    alone = line_chart(frame, [(5, 0)])  # one point, size 0: centred, on the baseline
    assert alone["points"] == [{"x": 344.0, "y": 152.0}]


def test_stacked_bars_keep_small_counts_visible():
    from hcapadmin.lib.svgchart import Frame, stacked_bars

    chart = stacked_bars(Frame(width=100, height=100), [[("error", 1000), ("info", 1)], [], [("warn", 500)]])
    first, empty, third = chart["bars"]
    assert chart["max"] == 1001 and empty["rects"] == [] and empty["total"] == 0
    assert [r["series"] for r in first["rects"]] == ["error", "info"]
    assert first["rects"][1]["h"] == 1  # 1 of 1001 would be 0.1 units high
    assert third["x"] == pytest.approx(66.67, abs=0.01) and third["rects"][0]["y"] == pytest.approx(50.05, abs=0.01)


def test_backup_size_chart_keeps_its_geometry_and_labels():
    from hcapadmin.backups.charts import size_chart

    start = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
    history = [SimpleNamespace(entry=SimpleNamespace(created_at=start + timedelta(days=i), size_bytes=size))
               for i, size in enumerate((2_000_000, 1_000_000))]
    chart = size_chart(history)
    assert [(p["x"], p["y"]) for p in chart["points"]] == [(64, 12.0), (624, 82.0)]
    assert chart["points"][0]["label"] == "2026-11-01 01:00 2.0 MB" and chart["points"][1]["item"] is history[1]
    assert (chart["top_label"], chart["first_label"], chart["last_label"]) == ("2.0 MB", "2026-11-01", "2026-11-02")
    assert (chart["width"], chart["height"], chart["label_y"], chart["top_y"]) == (640, 180, 172, 16)
    assert size_chart([]) is None


@pytest.mark.django_db
def test_audit_cursor_is_signed_for_its_use_only(client_as):
    from django.core import signing

    from hcapadmin.audit.models import record

    events = [record("test.cursor", actor="c") for _ in range(3)]
    c = client_as("auditor")
    first = c.get("/api/v1/audit", {"action": "test.cursor", "limit": 1}).json()
    assert first["next"] != str(events[-1].id)  # opaque, not the id
    second = c.get("/api/v1/audit", {"action": "test.cursor", "limit": 1, "before": first["next"]}).json()
    assert [i["id"] for i in second["items"]] == [events[1].id]
    page = c.get("/audit/", {"action": "test.cursor", "before": first["next"]})
    assert page.status_code == 200 and [e.id for e in page.context["events"]] == [events[1].id, events[0].id]
    for forged in (str(events[-1].id), signing.Signer(salt="another.use").sign(str(events[-1].id)),
                   signing.Signer().sign(str(events[-1].id)), first["next"] + "x"):
        response = c.get("/api/v1/audit", {"before": forged})
        assert response.status_code == 400 and "cursor" in response.json()["error"], forged
        assert c.get("/audit/", {"before": forged}).status_code == 400
