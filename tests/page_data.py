"""Demo data for whole-site page tests (accessibility, raw template syntax):
an "empty" portal (no jobs, no backups, no log entries, no migrations) and
one "with data" (jobs in every status, backups with warnings, log entries of
every level, applied/pending/missing migrations, audit events).

The text in this data never contains template syntax (``{{``, ``{%``,
``{#``), so a page showing it must come from an unrendered template."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

FIXTURE_MIGRATIONS = Path(__file__).resolve().parent / "fixtures" / "migrations_sample"
UTC = timezone.utc


def _jobs(now):
    from hcapadmin.jobs.models import Job, params_key

    rows = [
        ("backup.manual", "Manual backup", "succeeded", "Backup complete\n", {"backup": "hcap-patroni-hcap_x.sql.gz"}, ""),
        ("backup.verify", "Verify backup", "failed", "restoring\nERROR: relation missing\n", None, "psql exited 3"),
        ("backup.manual", "Manual backup", "running", "dumping roles\n", None, ""),
        ("migrations.apply", "Apply migrations", "queued", "", None, ""),
        ("backup.verify", "Verify backup", "cancelled", "", None, ""),
        ("backup.manual", "Manual backup", "abandoned", "dumping\n", None, "the worker stopped"),
    ]
    for i, (kind, title, status, log, result, error) in enumerate(rows):
        started = now - timedelta(minutes=10 + i) if status != "queued" else None
        finished = now - timedelta(minutes=5) if status not in ("queued", "running") else None
        steps = [{"name": "Back up database", "started_at": (now - timedelta(minutes=9)).isoformat(),
                  "finished_at": finished.isoformat() if finished else None,
                  "outcome": status if finished else None}] if started else []
        Job.objects.create(kind=kind, title=title, params={"n": i}, target="hcap",
                           params_key=params_key(kind, {"n": i}, "hcap"), status=status, requested_by="admin",
                           cancellable=kind == "backup.verify", started_at=started, finished_at=finished,
                           heartbeat_at=now if status == "running" else None, worker_name="w1" if started else "",
                           progress=1.0 if status == "succeeded" else 0.4, steps=steps, log=log, result=result,
                           error=error)


def _backups(root: Path, now):
    from ops import backups

    def put(when, size, database="hcap", in_progress=False):
        name = backups.backup_name("hcap-patroni", database, when) + (".in_progress" if in_progress else "")
        path = root / backups.folder_kind(when.date()) / f"{when:%Y-%m-%d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x1f\x8b" + b"x" * size)

    put(now - timedelta(days=4), 5000)
    put(now - timedelta(days=3), 5200)
    put(now - timedelta(days=2), 1000)  # shrunk, and stale
    put(now - timedelta(days=1), 800, database="other")
    put(now, 10, in_progress=True)


def _log_backups(root: Path, now):
    """The log database's (MongoDB) backups: a fresh one and an older one."""
    from ops.logbackups import build_archive, write_local

    for hours, count in ((30, 40), (2, 50)):
        write_local(str(root), "hcap-mongodb", "logs", now - timedelta(hours=hours),
                    build_archive("logs", {"log": [{"level": "info", "message": f"m{i}"} for i in range(count)]}))


def _logs(coll, now):
    docs = []
    for i, level in enumerate(("error", "warn", "info", "http", "verbose", "debug", "silly", "info")):
        doc = {"timestamp": now - timedelta(minutes=i), "level": level, "message": f"{level} message {i}",
               "label": "server", "hostname": "hcap-server-1-abcde"}
        if i % 2:
            doc["message"] += "\nsecond line of the message"
            doc["meta"] = {"req": {"status": 500 if level == "error" else 200, "url": "/api/v1/employers"}}
        docs.append(doc)
    coll.insert_many(docs)


def _migrations(folder: Path, pg, database: str):
    shutil.copytree(FIXTURE_MIGRATIONS, folder, dirs_exist_ok=True)
    pg.psql("CREATE TABLE pgmigrations (id serial PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL);"
            "INSERT INTO pgmigrations (name, run_on) VALUES "
            "('1590000000000_applicants', '2020-05-20 10:00'), ('1600000000000_employer-expressions', '2020-09-13 10:00'),"
            "('1605000000000_gone-file', '2020-11-10 10:00')", database)


def _audit():
    from hcapadmin.audit.models import record

    record("backup.manual", actor="admin", target="hcap", details={"job": 1})
    record("permission.denied", actor="viewer", target="/backups/run/", outcome="denied",
           details={"permission": "operate", "method": "POST"})
    record("login.failure", actor="nobody", target="login", outcome="failure")


class World:
    """Files, a managed database and a log collection for one state; built
    once per test module (they live outside the per-test transaction)."""

    def __init__(self, state: str, *, root: Path, pg, mongo_client):
        assert state in ("empty", "data"), state
        self.state, self.pg = state, pg
        now = datetime.now(UTC).replace(microsecond=0)
        self.backup_dir, self.migrations_dir = root / "backups", root / "migrations"
        self.backup_dir.mkdir(parents=True)
        self.log_backup_dir = root / "log-backups"
        self.migrations_dir.mkdir()
        self.database = "pages_" + uuid.uuid4().hex[:10]
        pg.create_database(self.database)
        self.coll_name = "log_" + uuid.uuid4().hex[:10]
        self.coll = mongo_client["pagetests"][self.coll_name]
        if state == "data":
            _backups(self.backup_dir, now)
            _log_backups(self.log_backup_dir, now)
            _logs(self.coll, now)
            _migrations(self.migrations_dir, pg, self.database)

    def apply(self, settings) -> None:
        """Point the portal at this world, and add its rows to the portal
        database (jobs, audit events: they go with each test's transaction)."""
        settings.BACKUP_DIR = str(self.backup_dir)
        settings.LOG_BACKUP_DIR = str(self.log_backup_dir)
        settings.MIGRATIONS_DIR = str(self.migrations_dir)
        settings.MANAGED_DATABASE_URL = self.pg.url(self.database)
        settings.LOG_SOURCES = {"hcap": ("pagetests", self.coll_name)}
        if self.state == "data":
            _jobs(datetime.now(UTC).replace(microsecond=0))
            _audit()

    def drop(self) -> None:
        self.coll.drop()
        self.pg.psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def worlds_fixture(tmp_path_factory, pg, mongo_url):
    """Body of a module-scoped fixture: yields get(state) -> World."""
    from pymongo import MongoClient

    client = MongoClient(mongo_url, tz_aware=True)
    made: dict[str, World] = {}

    def get(state: str) -> World:
        if state not in made:
            made[state] = World(state, root=tmp_path_factory.mktemp(f"pages-{state}"), pg=pg, mongo_client=client)
        return made[state]

    yield get
    for world in made.values():
        world.drop()
    client.close()
