"""The migrations page with 2,000 files and 2,000 applied rows.

Figures: the page's render time (full request through Django's middleware,
session and all, median), and that time divided by the time of the two
underlying reads alone (listing the folder + reading the applied rows),
measured interleaved in the same run.  Target: ratio <= 1.5.

The merge of files and rows is memoised on its exact inputs, so the repeated
loads measured above hit it; the figure for the first load after a change
(memo cleared) is reported beside it.  For context it also reports the
migrations view alone (no session/auth
middleware: a request built with RequestFactory) and a trivial portal page
(/healthz), i.e. the fixed per-request cost every page pays."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench import Result

N = 2000
ROUNDS = 21


def _setup(stack) -> tuple[str, str]:
    pg = stack["postgres"]
    pg.create_database("bench_migrations")
    folder = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    base = 1_500_000_000_000
    names = [f"{base + i * 3_600_000}_change-{i:04d}" for i in range(N)]
    for i, name in enumerate(names):
        ext = "sql" if i % 3 == 0 else "js"
        body = ("-- Up Migration\nSELECT 1;\n-- Down Migration\nSELECT 1;\n" if ext == "sql"
                else "exports.up = (pgm) => {};\nexports.down = (pgm) => {};\n")
        (folder / f"{name}.{ext}").write_text(body)
    (folder / "assets").mkdir()
    values = ",".join(f"('{n}', now() - interval '{N - i} minutes')" for i, n in enumerate(names))
    pg.psql("DROP TABLE IF EXISTS pgmigrations; CREATE TABLE pgmigrations (id SERIAL PRIMARY KEY, "
            "name varchar(255) NOT NULL, run_on timestamp NOT NULL); "
            f"INSERT INTO pgmigrations (name, run_on) VALUES {values};", "bench_migrations")
    return str(folder), pg.url("bench_migrations")


def run(stack) -> list[Result]:
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    from hcapadmin.accounts.demo import ensure_demo_users
    from hcapadmin.lib import dburl
    from ops.migrations import applied, sources
    from ops.migrations import report as reports

    folder, url = _setup(stack)
    ensure_demo_users(password="bench-pw-123")
    client = Client()
    client.force_login(get_user_model().objects.get(username="admin"))
    conninfo = dburl.to_conninfo(url)
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal
    from migrations_ui.views import migration_list

    factory = RequestFactory()
    principal = Principal(name="bench", roles=frozenset({"admin"}))
    page_times, read_times, view_times, trivial_times, cold_times = [], [], [], [], []
    with override_settings(MIGRATIONS_DIR=folder, MANAGED_DATABASE_URL=url, MIGRATIONS_TABLE="pgmigrations",
                           MIGRATIONS_SCHEMA="public"):
        response = client.get("/migrations/", HTTP_HOST="localhost")
        assert response.status_code == 200, response.status_code
        html = response.content.decode()
        assert f'data-testid="count-applied">{N}<' in html, "the page did not see 2,000 applied migrations"
        for _ in range(ROUNDS):
            started = time.perf_counter()
            files = sources.LocalFolder(folder).migration_files().names
            rows = applied.read_applied(conninfo, "pgmigrations", "public")
            read_times.append(time.perf_counter() - started)
            assert len(files) == N and len(rows.rows) == N
            started = time.perf_counter()
            response = client.get("/migrations/", HTTP_HOST="localhost")
            page_times.append(time.perf_counter() - started)
            assert response.status_code == 200
            request = factory.get("/migrations/", HTTP_HOST="localhost")
            request.principal = principal
            started = time.perf_counter()
            response = migration_list(request)
            view_times.append(time.perf_counter() - started)
            assert response.status_code == 200
            started = time.perf_counter()
            client.get("/healthz", HTTP_HOST="localhost")
            trivial_times.append(time.perf_counter() - started)
            reports._MEMO.clear()  # the first view after any change: sort and merge from scratch
            started = time.perf_counter()
            response = client.get("/migrations/", HTTP_HOST="localhost")
            cold_times.append(time.perf_counter() - started)
            assert response.status_code == 200
    page = statistics.median(page_times)
    reads = statistics.median(read_times)
    view = statistics.median(view_times)
    trivial = statistics.median(trivial_times)
    ratio = page / reads
    return [
        Result("migrations: page, 2,000 files + 2,000 applied (median)", page, "s"),
        Result("migrations: the two reads alone (median)", reads, "s"),
        Result("migrations: page / reads", ratio, "x", "<= 1.5", ratio <= 1.5),
        Result("migrations: page right after a change (merge not memoised) / reads",
               statistics.median(cold_times) / reads, "x"),
        Result("migrations: view without session/auth middleware / reads", view / reads, "x"),
        Result("migrations: a trivial portal page (/healthz), for context", trivial, "s"),
    ]
