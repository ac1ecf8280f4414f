"""Local restores through the runbook (``restore.local`` run by a real
``manage.py jobs_worker --burst`` process), in one run:

* the portal's restore time on a >= 1 GB backup (pgbench scale 110: a
  1.7 GB database whose plain dump is 1.07 GB of SQL; pgbench's rows
  compress to about 30 MB of gzip), measured as the portal shows it: the load, check and
  cut-over steps' durations from the job's record, divided by
  ``gunzip -c FILE | psql`` of the same file into a new database, run
  directly; interleaved (baseline, portal, baseline, portal, ...), medians:
  target <= 1.1.  The median of each round's own ratio is printed beside it:
  on a shared machine it moves less with load that comes and goes;
* downtime in online mode (connections blocked -> allowed at the cut-over)
  at about 100 MB (scale / 16) and at the large size (scale): target <= 2 s at both;
  offline mode's downtime (block -> allowed) beside it, for comparison.

The preflight's checksum and the safety backup are part of every real
restore but not of the measured figure (backup-container's restore has
neither); the job log and report show them.

Every timed run starts after a CHECKPOINT and a sync, so that writing out
the previous run's data (1 GB of dirty pages, the dropped database's
files) falls inside neither side's time.

HCAPADMIN_BENCH_RESTORE_SCALE changes the pgbench scale (default 110; 11 gives
about 170 MB), HCAPADMIN_BENCH_RESTORE_ROUNDS the number of interleaved
rounds (default 3).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import Result

SCALE = int(os.environ.get("HCAPADMIN_BENCH_RESTORE_SCALE", 110))
ROUNDS = max(1, int(os.environ.get("HCAPADMIN_BENCH_RESTORE_ROUNDS", 3)))
ROOT = Path(__file__).resolve().parent.parent
_STAMPS = iter(range(10_000))


def _stamp() -> str:
    return (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=next(_STAMPS))).strftime("%Y%m%d%H%M%S")


def _pgbench(pg, db: str, scale: int) -> int:
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    pg.psql(f'CREATE DATABASE "{db}"')
    env = dict(os.environ, PGPASSWORD=pg.password)
    subprocess.run(["pgbench", "-i", "-s", str(scale), "-I", "dtGp", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
                    "-U", "postgres", db], check=True, env=env, capture_output=True)
    return int(pg.psql(f"SELECT pg_database_size('{db}')").strip())


def _backup(pg, db: str, folder: Path) -> str:
    from ops.backups import local_backup

    entry = local_backup(f"host=127.0.0.1 port={pg.port} user=postgres password={pg.password} dbname={db}",
                         str(folder), "hcap-patroni", now=datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc))
    return entry.path


def _settle(pg) -> None:
    """Write out what earlier runs left dirty before the next timed run."""
    pg.psql("CHECKPOINT")
    os.sync()


def _sql_size(path: str) -> int:
    """Bytes of SQL in a gzip backup (decompressed, counted, not kept)."""
    import zlib

    size, inflate = 0, zlib.decompressobj(zlib.MAX_WBITS | 16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(inflate.decompress(chunk))
    return size


def _baseline(pg, path: str) -> float:
    """backup-container's load: a new database, then ``gunzip -c FILE | psql``."""
    db = "bench_restore_baseline"
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    _settle(pg)
    env = dict(os.environ, PGPASSWORD=pg.password)
    started = time.monotonic()
    pg.psql(f'CREATE DATABASE "{db}"')
    gunzip = subprocess.Popen(["gunzip", "-c", path], stdout=subprocess.PIPE)
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", db],
                   stdin=gunzip.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    gunzip.stdout.close()
    gunzip.wait()
    elapsed = time.monotonic() - started
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(f"    baseline gunzip | psql: {elapsed:.1f}s", file=sys.stderr, flush=True)
    return elapsed


def _portal(stack, pg, db: str, path: str, workdir: Path, mode: str) -> dict:
    """One restore.local job in a real burst worker; returns its report plus
    the measured seconds (load + check + cut-over)."""
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal
    from hcapadmin.jobs.lifecycle import submit
    from ops.restore import sha256_file

    request = RequestFactory().post("/")
    request.principal = Principal(name="bench", groups=("hcap-admins",), roles=frozenset({"admin"}))
    stamp = _stamp()
    params = {"target": db, "backup": Path(path).name, "path": path, "size": os.path.getsize(path),
              "sha256": sha256_file(path), "mode": mode, "stamp": stamp}
    _settle(pg)
    job, _ = submit("restore.local", params, request=request, target=db)
    safety = workdir / f"safety-{stamp}"
    env = {**os.environ, **stack["env"], "HCAPADMIN_MANAGED_DATABASE_URL": pg.url(db),
           "HCAPADMIN_BACKUP_DIR": str(safety), "PYTHONUNBUFFERED": "1"}
    with open(workdir / "worker.log", "wb") as log:
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "jobs_worker", "--burst", "--import",
                        "hcapadmin.restores.runbook"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=False)
    job.refresh_from_db()
    if job.status != "succeeded":
        raise RuntimeError(f"portal restore failed: {job.error}\n{(workdir / 'worker.log').read_text()[-2000:]}")
    report = job.result["steps"]["report"]
    seconds = sum(report["steps"][name]["seconds"] for name in ("load", "check", "cutover"))
    pg.psql(f'DROP DATABASE IF EXISTS "{report["pre_restore"]}" WITH (FORCE)')
    for file in safety.rglob("*.sql.gz"):
        file.unlink()
    print(f"    portal {mode}: load+check+cutover {seconds:.1f}s (load {report['steps']['load']['seconds']:.1f}s), "
          f"downtime {report['downtime_seconds']:.3f}s"
          + (f", application downtime {report['application_downtime_seconds']:.1f}s"
             if "application_downtime_seconds" in report else ""), file=sys.stderr, flush=True)
    return {**report, "measured_seconds": seconds}


def run(stack) -> list[Result]:
    import hcapadmin.restores.runbook  # noqa: F401  registers restore.local in this process

    pg = stack["postgres"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=stack["base"]))
    small_scale = max(1, SCALE // 16)
    print(f"  pgbench -i -s {small_scale} and -s {SCALE}, backups ...", file=sys.stderr, flush=True)
    small_size = _pgbench(pg, "bench_rs_small", small_scale)
    large_size = _pgbench(pg, "bench_rs_large", SCALE)
    small_path = _backup(pg, "bench_rs_small", workdir / "small")
    large_path = _backup(pg, "bench_rs_large", workdir / "large")
    large_sql = _sql_size(large_path)
    print(f"  sizes: {small_size / 1e6:.0f} MB and {large_size / 1e6:.0f} MB "
          f"(backup {large_sql / 1e6:.0f} MB of SQL, {os.path.getsize(large_path) / 1e6:.0f} MB compressed)",
          file=sys.stderr, flush=True)
    small_online = _portal(stack, pg, "bench_rs_small", small_path, workdir, "online")
    # interleaved on the large backup: each portal run has a baseline run just before it
    baselines, portals, large_online = [], [], []
    for _ in range(ROUNDS):
        baselines.append(_baseline(pg, large_path))
        report = _portal(stack, pg, "bench_rs_large", large_path, workdir, "online")
        portals.append(report["measured_seconds"])
        large_online.append(report["downtime_seconds"])
    offline = _portal(stack, pg, "bench_rs_large", large_path, workdir, "offline")
    for db in ("bench_rs_small", "bench_rs_large"):
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    baseline, portal = statistics.median(baselines), statistics.median(portals)
    ratio = portal / baseline
    per_round = [p / b for p, b in zip(portals, baselines)]
    print(f"  per-round ratios: {', '.join(f'{r:.3f}' for r in per_round)}", file=sys.stderr, flush=True)
    small_down, large_down = small_online["downtime_seconds"], max(large_online)
    return [
        Result(f"restore: database size (pgbench -s {SCALE})", round(large_size / 1e9, 2), "GB", ">= 1",
               large_size >= 1e9),
        Result("restore: the backup's SQL (uncompressed)", round(large_sql / 1e9, 2), "GB", ">= 1", large_sql >= 1e9),
        Result("restore: the backup file (gzip)", round(os.path.getsize(large_path) / 1e6, 1), "MB"),
        Result("restore: portal load+check+cutover (median)", round(portal, 1), "s"),
        Result("restore: gunzip | psql of the same file (median)", round(baseline, 1), "s"),
        Result(f"restore: portal / gunzip | psql time ({ROUNDS} interleaved)", round(ratio, 3), "x", "<= 1.1",
               ratio <= 1.1),
        Result("restore: median of the per-round ratios", round(statistics.median(per_round), 3), "x"),
        Result(f"restore: online downtime, {small_size / 1e6:.0f} MB database", round(small_down, 3), "s", "<= 2",
               small_down <= 2),
        Result(f"restore: online downtime, {large_size / 1e9:.2f} GB database (worst)", round(large_down, 3), "s",
               "<= 2", large_down <= 2),
        Result(f"restore: offline downtime (block -> allowed), {large_size / 1e9:.2f} GB database",
               round(offline["application_downtime_seconds"], 1), "s"),
        Result("restore: offline cut-over alone", round(offline["downtime_seconds"], 3), "s"),
    ]
