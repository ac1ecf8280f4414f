"""Local backups on a >= 1 GB database (pgbench scale 70), in one run:

* the portal's backup (a real ``manage.py jobs_worker --burst`` process running
  a ``backup.manual`` job: pg_dumpall + pg_dump streamed through pigz straight
  into the file) divided by backup-container's own pipeline (pg_dump to a file,
  pg_dumpall --roles-only to a file, ``cat | gzip``), measured side by side:
  target <= 0.8;
* the worker process's peak RSS (VmHWM of that process) while backing up the
  large database: target < 200 MB, and the same figure for a 10x smaller
  database to show it is flat.

HCAPADMIN_BENCH_BACKUP_SCALE changes the pgbench scale (default 70).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import Result

SCALE = int(os.environ.get("HCAPADMIN_BENCH_BACKUP_SCALE", 70))
ROOT = Path(__file__).resolve().parent.parent


def _pgbench(pg, db: str, scale: int) -> int:
    pg.psql(f'DROP DATABASE IF EXISTS "{db}"')
    pg.psql(f'CREATE DATABASE "{db}"')
    env = dict(os.environ, PGPASSWORD=pg.password)
    subprocess.run(["pgbench", "-i", "-s", str(scale), "-I", "dtGp", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
                    "-U", "postgres", db], check=True, env=env, capture_output=True)
    return int(pg.psql(f"SELECT pg_database_size('{db}')").strip())


def _baseline(pg, db: str, workdir: Path) -> float:
    """backup-container: pg_dump > backup.sql; pg_dumpall --roles-only > roles.sql; cat | gzip > file."""
    env = dict(os.environ, PGPASSWORD=pg.password)
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    backup_sql, roles_sql, final = workdir / "backup.sql", workdir / "roles.sql", workdir / "baseline.sql.gz"
    started = time.monotonic()
    with open(backup_sql, "wb") as out:
        subprocess.run(["pg_dump", "-Fp", *conn, db], stdout=out, check=True, env=env)
    with open(roles_sql, "wb") as out:
        subprocess.run(["pg_dumpall", "--roles-only", "--no-role-passwords", *conn], stdout=out, check=True, env=env)
    with open(final, "wb") as out:
        cat = subprocess.Popen(["cat", str(roles_sql), str(backup_sql)], stdout=subprocess.PIPE)
        gz = subprocess.run(["gzip"], stdin=cat.stdout, stdout=out, check=True)
        cat.stdout.close()
        cat.wait()
    elapsed = time.monotonic() - started
    size = final.stat().st_size
    for path in (backup_sql, roles_sql, final):
        path.unlink()
    print(f"    baseline: {elapsed:.1f}s, {size / 1e6:.0f} MB compressed", file=sys.stderr, flush=True)
    return elapsed


def _portal(stack, pg, db: str, workdir: Path) -> tuple[float, float]:
    """Run one backup.manual job in a real burst worker; return (seconds, worker peak RSS MB)."""
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal
    from hcapadmin.jobs.lifecycle import submit

    request = RequestFactory().post("/")
    request.principal = Principal(name="bench", groups=("hcap-admins",), roles=frozenset({"admin"}))
    job, _ = submit("backup.manual", {}, request=request, target=f"bench-{db}")
    env = {**os.environ, **stack["env"], "HCAPADMIN_MANAGED_DATABASE_URL": pg.url(db),
           "HCAPADMIN_BACKUP_DIR": str(workdir), "PYTHONUNBUFFERED": "1"}
    log = open(workdir / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "jobs_worker", "--burst"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    peak = [0]

    def watch():
        path = f"/proc/{proc.pid}/status"
        while proc.poll() is None:
            try:
                with open(path) as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc.wait()
    watcher.join()
    log.close()
    job.refresh_from_db()
    if job.status != "succeeded":
        raise RuntimeError(f"portal backup failed: {job.error}\n{(workdir / 'worker.log').read_text()[-2000:]}")
    step = job.steps[0]
    from datetime import datetime

    seconds = (datetime.fromisoformat(step["finished_at"]) - datetime.fromisoformat(step["started_at"])).total_seconds()
    size = job.result["size_bytes"]
    for path in workdir.rglob("*.sql.gz"):
        path.unlink()
    print(f"    portal: {seconds:.1f}s, {size / 1e6:.0f} MB compressed, worker peak RSS {peak[0] / 1024:.0f} MB",
          file=sys.stderr, flush=True)
    return seconds, peak[0] / 1024


def run(stack) -> list[Result]:
    pg = stack["postgres"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-backup-", dir=stack["base"]))
    small_scale = max(1, SCALE // 10)
    print(f"  pgbench -i -s {small_scale} and -s {SCALE} ...", file=sys.stderr, flush=True)
    small_size = _pgbench(pg, "bench_small", small_scale)
    large_size = _pgbench(pg, "bench_large", SCALE)
    print(f"  sizes: {small_size / 1e6:.0f} MB and {large_size / 1e6:.0f} MB", file=sys.stderr, flush=True)
    _small_seconds, small_rss = _portal(stack, pg, "bench_small", workdir)
    # side by side on the large database; the baseline first warms the same caches the portal then uses
    # equally (both read the whole database once before the timed runs below)
    subprocess.run(["pg_dump", "-Fp", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-f", os.devnull,
                    "bench_large"], env=dict(os.environ, PGPASSWORD=pg.password), check=True)
    baseline = _baseline(pg, "bench_large", workdir)
    portal, large_rss = _portal(stack, pg, "bench_large", workdir)
    for db in ("bench_small", "bench_large"):
        pg.psql(f'DROP DATABASE IF EXISTS "{db}"')
    ratio = portal / baseline
    return [
        Result(f"backup: database size (pgbench -s {SCALE})", round(large_size / 1e9, 2), "GB", ">= 1", large_size >= 1e9),
        Result("backup: portal local backup time", round(portal, 1), "s"),
        Result("backup: backup-container pipeline time", round(baseline, 1), "s"),
        Result("backup: portal / backup-container time", round(ratio, 3), "x", "<= 0.8", ratio <= 0.8),
        Result(f"backup: worker peak RSS, {large_size / 1e9:.2f} GB database", round(large_rss, 1), "MB", "< 200",
               large_rss < 200),
        Result(f"backup: worker peak RSS, {small_size / 1e6:.0f} MB database", round(small_rss, 1), "MB", "< 200",
               small_rss < 200),
        Result("backup: RSS growth large vs small database", round(large_rss - small_rss, 1), "MB", "< 20 (flat)",
               large_rss - small_rss < 20),
    ]
