"""Run every benchmark module against throwaway services and print a table.

    python -m bench                 # all
    python -m bench logs audit      # only bench_logs.py and bench_audit.py
    python -m bench restore         # bench_restore.py: restores through the runbook

Every module bench/bench_<name>.py is found by its name; ``<name>`` selects it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcapadmin.settings")
    os.environ.update({"SECRET_KEY": "bench-" + "x" * 40, "HCAPADMIN_TESTING": "true", "HCAPADMIN_HTTPS": "false",
                       "HCAPADMIN_LOCAL_ACCOUNTS": "true", "HCAPADMIN_PLATFORM": "local"})
    from tests.harness.plugin import start_stack, stop_stack

    import bench

    wanted = set(argv)
    modules = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")]
    modules = [m for m in sorted(modules) if not wanted or m[len("bench_"):] in wanted]
    stack = start_stack()
    os.environ.update(stack["env"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    rows, failures = [], 0
    try:
        for name in modules:
            started = time.monotonic()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                results = importlib.import_module(f"bench.{name}").run(stack)
            except Exception:
                traceback.print_exc()
                failures += 1
                continue
            rows.extend(results)
            print(f"  done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        stop_stack(stack)
    _print_table(rows)
    return 1 if failures else 0


def _print_table(rows) -> None:
    header = ("benchmark", "value", "unit", "target", "ok")
    table = [header] + [
        (r.benchmark, f"{r.value:,.3f}" if isinstance(r.value, float) else str(r.value), r.unit, r.target,
         "" if r.passed is None else ("yes" if r.passed else "NO"))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
