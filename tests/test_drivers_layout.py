"""How the migrations and platform code is laid out: no import cycles among
the modules of migrations_ui/, ops/migrations/ and ops/platform/, and no
import inside a function there (which is how a cycle hides), apart from
Django's app-registry hook and type-checking-only imports."""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

PACKAGES = ("migrations_ui", "ops/migrations", "ops/platform")
ALLOWED_INNER = {("migrations_ui/apps.py", "migrations_ui"), ("migrations_ui/apps.py", "migrations_ui.jobs")}  # ready()


def modules() -> dict[str, Path]:
    base = Path(settings.BASE_DIR)
    found = {}
    for package in PACKAGES:
        for path in sorted((base / package).glob("*.py")):
            name = str(path.relative_to(base).with_suffix("")).replace("/", ".")
            found[name.removesuffix(".__init__")] = path
    return found


def imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def test_no_import_cycles_and_no_imports_inside_functions():
    mods = modules()
    base = Path(settings.BASE_DIR)
    graph: dict[str, set[str]] = {}
    inner = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        edges = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for target in imported(node):
                if target in mods and target != name:
                    edges.add(target)
        graph[name] = edges
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    for target in imported(node):
                        key = (str(path.relative_to(base)), target)
                        if key not in ALLOWED_INNER:
                            inner.append(key)
    assert inner == [], inner

    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(stack + [node, nxt])
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    assert "migrations_ui.views" in graph["migrations_ui.apply"]  # the refusal page reuses the list's context
    assert "migrations_ui.apply" not in graph["migrations_ui.views"]
