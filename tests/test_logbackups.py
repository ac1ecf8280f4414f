"""The log database's (MongoDB) backups beside the PostgreSQL ones: the
structural check of a mongodump archive, warnings per engine, the catalog
page, API and dashboard with both engines, the local refusal of a manual log
backup, bad engine input, and the log backup pod on OpenShift through the
stand-in API (real HTTPS and websocket exec)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.utils import timezone

from hcapadmin.audit.models import AuditEvent
from hcapadmin.backups.models import BackupVerification
from hcapadmin.jobs.models import Job
from ops import backups, logbackups
from ops.backups import VerifyFailed
from tests.harness.kubeapi import LOG_BACKUP_POD, kube_api, openshift_real  # noqa: F401
from tests.test_backups_pages import put

LOG_POD = LOG_BACKUP_POD
LOG_NEW = "hcap-mongodb-logs_2026-11-25_09-10-00.sql.gz"
LOG_LISTING = (
    "daily/2026-11-24/hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz\t812000\n"
    "daily/2026-11-23/hcap-mongodb-logs_2026-11-23_01-00-00.sql.gz\t790000\n"
)
DOCS = [{"level": "info", "message": f"line {i}", "timestamp": datetime(2026, 11, 24, tzinfo=dt_timezone.utc)}
        for i in range(20)]
REFUSAL = "mongodump is not available on this platform; log backups are taken by backup-container in OpenShift"


def archive(**collections) -> bytes:
    return logbackups.build_archive("logs", collections or {"log": DOCS})


def put_log(root: Path, when, data: bytes | None = None, raw: bytes | None = None) -> logbackups.BackupEntry:
    entry = logbackups.write_local(str(root), "hcap-mongodb", "logs", when, data if data is not None else archive())
    if raw is not None:
        Path(entry.path).write_bytes(raw)
    return entry


# --- the archive and the engine (plain Python) --------------------------------------------
def test_structural_check_passes_a_well_formed_archive_and_says_what_it_did_not_check(tmp_path):
    entry = put_log(tmp_path, datetime(2026, 11, 24, 1, tzinfo=dt_timezone.utc),
                    archive(log=DOCS, empty=[]))
    assert entry.engine == "mongo" and entry.database == "logs" and entry.kind == "daily"
    lines = []
    found = logbackups.check_archive(entry.path, log=lines.append)
    assert found["check"] == "structural" and found["documents"] == {"logs.empty": 0, "logs.log": 20}
    assert "not restored" in found["not_checked"] and found["archive_version"] == "0.1"
    assert any("logs.log: 20 documents" in line for line in lines)


@pytest.mark.parametrize("damage,message", [
    (lambda gz, arc: gz[: len(gz) * 2 // 3], "truncated or corrupt"),  # a cut gzip stream
    (lambda gz, arc: gzip.compress(arc[:-30]), "truncated"),  # complete gzip of a cut archive
    (lambda gz, arc: gzip.compress(arc[: arc.rindex(b"\xff\xff\xff\xff", 0, len(arc) - 4) + 4]), "no EOF block"),
    (lambda gz, arc: gzip.compress(b"--\n-- PostgreSQL database cluster dump\n"), "PostgreSQL"),
    (lambda gz, arc: gzip.compress(arc[:4] + b"\x02\x00\x00\x00" + arc[8:]), "impossible length"),
    (lambda gz, arc: b"not gzip at all" * 10, "truncated or corrupt"),
])
def test_structural_check_fails_clearly_on_a_damaged_file(tmp_path, damage, message):
    data = archive()
    entry = put_log(tmp_path, datetime(2026, 11, 24, 1, tzinfo=dt_timezone.utc), data)
    Path(entry.path).write_bytes(damage(Path(entry.path).read_bytes(), data))
    with pytest.raises(VerifyFailed) as info:
        logbackups.check_archive(entry.path)
    assert message in str(info.value)


def test_engine_from_bytes_config_and_input():
    assert logbackups.sniff_engine(logbackups.MAGIC_BYTES + b"rest") == "mongo"
    assert logbackups.sniff_engine(b"--\n-- PostgreSQL database cluster dump") == "postgres"
    assert logbackups.sniff_engine(b"PK\x03\x04") is None
    assert logbackups.engine_of_target("mongo=hcap-mongodb:27017/logs") == "mongo"
    assert logbackups.engine_of_target("postgres=hcap-patroni:5432/hcap") == "postgres"
    assert logbackups.engine_of_target("0 1 * * * default ./backup.sh -s") is None
    assert logbackups.parse_engine(None) == "postgres" and logbackups.parse_engine("mongo") == "mongo"
    for bad in ("mysql", "Mongo", ["mongo"], 1, "mongo "):
        with pytest.raises(backups.Invalid):
            logbackups.parse_engine(bad)


def test_warnings_are_per_engine_and_never_compare_a_mongo_size_with_a_postgres_one():
    def e(engine, day, size, database="hcap"):
        when = datetime(2026, 11, day, 1, tzinfo=dt_timezone.utc)
        return backups.BackupEntry(backups.backup_name("h", database, when), "/x", "h", database, "daily", when, size,
                                   False, engine)

    now = datetime(2026, 11, 24, 12, tzinfo=dt_timezone.utc)
    # the same database name in both engines: a small log backup after a large SQL one is no shrink
    mixed = [e("postgres", 23, 5_000_000), e("mongo", 24, 1_000), e("postgres", 24, 5_100_000)]
    assert logbackups.engine_warnings(mixed, now=now, stale_hours=26, shrink_percent=50) == []
    found = logbackups.engine_warnings([e("postgres", 24, 5_000_000), e("mongo", 21, 900_000),
                                        e("mongo", 22, 100_000)], now=now, stale_hours=26, shrink_percent=50)
    assert [(w["engine"], w["kind"]) for w in found] == [("mongo", "stale"), ("mongo", "shrunk")]
    assert all(w["message"].startswith("MongoDB ") for w in found)


# --- pages, API, dashboard (local driver) -------------------------------------------------
@pytest.fixture
def both(tmp_path, settings):
    settings.BACKUP_DIR = str(tmp_path / "pg")
    settings.LOG_BACKUP_DIR = str(tmp_path / "mongo")
    return Path(settings.BACKUP_DIR), Path(settings.LOG_BACKUP_DIR)


@pytest.mark.django_db
def test_catalog_page_and_api_list_both_engines_with_warnings_per_engine(client_as, both):
    pg_dir, log_dir = both
    now = timezone.now().replace(microsecond=0)
    pg_name = put(pg_dir, now - timedelta(hours=2), 5000)
    big = put_log(log_dir, now - timedelta(hours=30), archive(log=DOCS * 50))
    small = put_log(log_dir, now - timedelta(hours=28))  # shrunk against the log backup before it, and stale
    html = client_as("viewer").get("/backups/").content.decode()
    for name, engine in ((pg_name, "postgres"), (big.name, "mongo"), (small.name, "mongo")):
        assert f'data-name="{name}" data-engine="{engine}"' in html
    assert "<td>MongoDB</td>" in html and "<td>PostgreSQL</td>" in html
    assert REFUSAL in html and "does not restore it" in html  # says plainly what happens here
    assert "logs (MongoDB): size of each completed backup" in html  # its own size chart
    data = client_as("auditor").get("/api/v1/backups").json()
    by_name = {i["name"]: i for i in data["items"]}
    assert by_name[pg_name]["engine"] == "postgres" and by_name[small.name]["engine"] == "mongo"
    assert by_name[small.name]["database"] == "logs" and by_name[small.name]["size_bytes"] == small.size_bytes
    assert sorted((w["engine"], w["kind"], w["database"]) for w in data["warnings"]) == [
        ("mongo", "shrunk", "logs"), ("mongo", "stale", "logs")]


@pytest.mark.django_db
def test_without_a_log_backup_folder_nothing_changes(client_as, tmp_path, settings):
    settings.BACKUP_DIR = str(tmp_path)
    settings.LOG_BACKUP_DIR = None
    name = put(tmp_path, timezone.now() - timedelta(hours=1), 100)
    data = client_as("viewer").get("/api/v1/backups").json()
    assert [(i["name"], i["engine"]) for i in data["items"]] == [(name, "postgres")] and data["warnings"] == []


@pytest.mark.django_db
def test_dashboard_shows_both_engines_newest_backup(client_as, both):
    pg_dir, log_dir = both
    now = timezone.now().replace(microsecond=0)
    put(pg_dir, now - timedelta(hours=3), 2000)
    put_log(log_dir, now - timedelta(hours=40))
    newest = put_log(log_dir, now - timedelta(hours=4))
    BackupVerification.objects.create(backup_name=newest.name, database="logs", ok=True, message="structure checked",
                                      details={"check": "structural"})
    html = client_as("viewer").get("/").content.decode()
    pg_row = html[html.index('data-database="hcap" data-engine="postgres"'):]
    log_row = html[html.index('data-database="logs (MongoDB)" data-engine="mongo"'):]
    assert newest.name in log_row[:1500] and 'class="ok" data-testid="backup-age"' in log_row[:1500]
    assert "passed" in log_row[:1500] and "hcap-patroni-hcap_" in pg_row[:1500]


@pytest.mark.django_db
def test_local_manual_log_backup_is_refused_with_409_and_writes_nothing(client_as, both):
    client = client_as("admin")
    before = (Job.objects.count(), AuditEvent.objects.count())
    api = client.post("/api/v1/backups", data=json.dumps({"engine": "mongo"}), content_type="application/json")
    page = client.post("/backups/run/", {"confirm": "yes", "engine": "mongo"})
    assert api.status_code == 409 and api.json()["error"] == REFUSAL
    assert page.status_code == 409 and REFUSAL in page.content.decode()
    assert (Job.objects.count(), AuditEvent.objects.count()) == before
    admin_html = client.get("/backups/").content.decode()
    assert 'data-testid="run-log-backup"' not in admin_html and 'data-testid="run-backup"' in admin_html


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["mysql", "", " mongo", ["mongo"], {"x": 1}, 7, None])
def test_bad_engine_input_is_400_and_writes_nothing(client_as, both, engine):
    _, log_dir = both
    entry = put_log(log_dir, timezone.now() - timedelta(hours=1))
    client = client_as("admin")
    before = (Job.objects.count(), AuditEvent.objects.count())
    run = client.post("/api/v1/backups", data=json.dumps({"engine": engine}), content_type="application/json")
    verify = client.post("/api/v1/backups/verify", data=json.dumps({"name": entry.name, "engine": engine}),
                         content_type="application/json")
    if engine in ("", None):  # null / empty: no engine given (a backup: PostgreSQL; a verify: found by name)
        assert run.status_code == 202 and Job.objects.get(pk=run.json()["job"]).params == {}
        assert verify.status_code == 202 and Job.objects.get(pk=verify.json()["job"]).params["engine"] == "mongo"
        return
    assert run.status_code == 400 and "engine" in run.json()["error"]
    assert verify.status_code == 400 and "engine" in verify.json()["error"]
    if isinstance(engine, str):
        assert client.post("/backups/run/", {"confirm": "yes", "engine": engine}).status_code == 400
        assert client.post("/backups/verify/", {"name": entry.name, "engine": engine}).status_code == 400
    assert (Job.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_log_backup_actions_need_operate_like_postgres_ones(client_as, both):
    _, log_dir = both
    entry = put_log(log_dir, timezone.now() - timedelta(hours=1))
    for role in ("viewer", "approver", "auditor"):
        client = client_as(role)
        assert client.post("/api/v1/backups", data=json.dumps({"engine": "mongo"}),
                           content_type="application/json").status_code == 403
        assert client.post("/api/v1/backups/verify", data=json.dumps({"name": entry.name, "engine": "mongo"}),
                           content_type="application/json").status_code == 403
        assert client.post("/backups/verify/", {"name": entry.name, "engine": "mongo"}).status_code == 403
        assert client.post("/backups/run/", {"confirm": "yes", "engine": "mongo"}).status_code == 403
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_local_verify_of_log_backups_checks_structure_records_it_and_locks_logs(client_as, both, run_jobs, settings):
    from hcapadmin.jobs.lifecycle import default_target

    _, log_dir = both
    now = timezone.now().replace(microsecond=0)
    good = put_log(log_dir, now - timedelta(hours=2))
    bad = put_log(log_dir, now - timedelta(hours=1))
    Path(bad.path).write_bytes(gzip.compress(archive()[:-9]))
    client = client_as("admin")
    first = client.post("/api/v1/backups/verify", data=json.dumps({"name": good.name}), content_type="application/json")
    page = client.post("/backups/verify/", {"name": bad.name, "engine": "mongo"})
    assert first.status_code == 202 and page.status_code == 302
    good_job = Job.objects.get(pk=first.json()["job"])
    bad_job = Job.objects.get(kind="backup.verify", params__name=bad.name)
    assert good_job.params == {"name": good.name, "engine": "mongo"}
    # the log database's own lock name, never the managed PostgreSQL's
    assert good_job.target == bad_job.target == "logs" != default_target()
    run_jobs()
    good_job.refresh_from_db()
    bad_job.refresh_from_db()
    assert good_job.status == "succeeded", good_job.error
    assert good_job.result["check"] == "structural" and good_job.result["documents"] == {"logs.log": 20}
    assert "Not restored" in good_job.log and [s["name"] for s in good_job.steps] == ["Find backup",
                                                                                    "Check the log backup"]
    assert bad_job.status == "failed" and "truncated" in bad_job.error
    ok = BackupVerification.objects.get(backup_name=good.name)
    assert ok.ok and "not restored" in ok.message
    assert BackupVerification.objects.get(backup_name=bad.name).ok is False
    event = AuditEvent.objects.filter(action="backup.verified", details__backup=good.name).get()
    assert event.details["engine"] == "mongo" and event.outcome == "success"
    html = client.get("/backups/").content.decode()
    assert "(structure only)" in html
    settings.TARGET_DATABASE = "logs"  # a managed database that happens to be named "logs": still two locks
    from hcapadmin.backups.inventory import log_target

    assert log_target() != default_target()


# --- OpenShift: the log backup pod through the stand-in API ------------------------------
def exit_status(code):
    from tests.test_platform_openshift import exit_status as status

    return status(code)


@pytest.fixture
def log_pod(openshift_real):
    """The real API server's namespace holds the PostgreSQL backup pod and the
    log backup pod (each under its DeploymentConfig's label); execs are
    recorded per pod."""
    return {"execs": [], "ns": openshift_real.namespace}


def _openshift(settings, openshift_real):
    from hcapadmin.core.platform import _cached

    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    _cached.cache_clear()


@pytest.mark.django_db
def test_openshift_manual_log_backup_and_verify_run_backup_sh_in_the_log_backup_pod(client_as, openshift_real, log_pod,
                                                                                    settings, run_jobs):
    from tests.test_platform_openshift import EXEC, LISTING

    _openshift(settings, openshift_real)
    verify_outcome = {"lines": ["Restoring from backup ...", "Verification Summary:",
                                " - /backups/daily/2026-11-24/hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz: "
                                "Status: PASSED"], "code": 0}

    def handler(req, ws):
        pod, command = req.match["pod"], req.query["command"]
        log_pod["execs"].append((pod, command))
        if command == ["./backup.sh", "-1"]:
            ws.send_channel(1, f"Backing up 'hcap-mongodb/logs' to '/backups/daily/2026-11-25/{LOG_NEW}.in_progress'\n")
            ws.send_channel(1, f"Database backup written to /backups/daily/2026-11-25/{LOG_NEW}\n")
            ws.send_channel(3, exit_status(0))
        elif command[:2] == ["./backup.sh", "-v"]:
            for line in verify_outcome["lines"]:
                ws.send_channel(1, line + "\n")
            ws.send_channel(3, exit_status(verify_outcome["code"]))
        else:
            listing = LOG_LISTING + f"daily/2026-11-25/{LOG_NEW}\t820000\n" if pod == LOG_POD else LISTING
            ws.send_channel(1, listing)
            ws.send_channel(3, exit_status(0))

    openshift_real.standin.websocket(EXEC, handler)
    try:
        client = client_as("admin")
        catalog = client.get("/api/v1/backups").json()
        engines = {i["name"]: i["engine"] for i in catalog["items"]}
        assert engines[LOG_NEW] == "mongo" and engines["hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz"] == "postgres"
        assert 'data-testid="run-log-backup"' in client.get("/backups/").content.decode()
        run = client.post("/api/v1/backups", data=json.dumps({"engine": "mongo"}), content_type="application/json")
        verify = client.post("/api/v1/backups/verify",
                             data=json.dumps({"name": "hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz"}),
                             content_type="application/json")
        assert run.status_code == 202 and verify.status_code == 202
        log_pod["execs"].clear()
        run_jobs()
        backup_job = Job.objects.get(pk=run.json()["job"])
        verify_job = Job.objects.get(pk=verify.json()["job"])
        assert backup_job.status == "succeeded", backup_job.error
        assert backup_job.target == "logs" and backup_job.result["backup"] == LOG_NEW
        assert f"Database backup written to /backups/daily/2026-11-25/{LOG_NEW}" in backup_job.log
        assert verify_job.status == "succeeded", verify_job.error
        assert "PASSED" in verify_job.result["summary"] and verify_job.result["pod"] == LOG_POD
        backup_sh = [(pod, command) for pod, command in log_pod["execs"] if command[0] == "./backup.sh"]
        assert sorted(backup_sh) == sorted([
            (LOG_POD, ["./backup.sh", "-1"]),
            (LOG_POD, ["./backup.sh", "-v", "all", "-f",
                       "/backups/daily/2026-11-24/hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz"])])
        assert openshift_real.portal_token not in backup_job.log + verify_job.log
        assert BackupVerification.objects.get(backup_name="hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz").ok
        # backup.sh -v saying FAILED fails the verification, recorded against the log backup
        verify_outcome.update(lines=["mongorestore: error restoring: EOF", "Status: FAILED"], code=1)
        again = client.post("/api/v1/backups/verify",
                            data=json.dumps({"name": "hcap-mongodb-logs_2026-11-23_01-00-00.sql.gz", "engine": "mongo"}),
                            content_type="application/json")
        run_jobs()
        failed = Job.objects.get(pk=again.json()["job"])
        assert failed.status == "failed" and "mongorestore: error restoring" in failed.error
    finally:
        from hcapadmin.core.platform import _cached

        _cached.cache_clear()


def test_openshift_log_pod_missing_is_a_clear_error(openshift_real):
    from ops.errors import Unavailable

    driver = openshift_real.driver(log_backup_name="hcap-backup-mongo-log-absent")
    with pytest.raises(Unavailable) as info:
        driver.list_log_backups()
    assert "no running log backup pod (label deploymentconfig=hcap-backup-mongo-log-absent)" in str(info.value)


def test_sandbox_seeds_log_backups_that_pass_the_structural_check(tmp_path, settings):
    import io

    from hcapadmin.core.management.commands.sandbox_seed import make_log_backups

    settings.LOG_BACKUP_DIR = str(tmp_path)
    out = io.StringIO()
    make_log_backups(out)
    entries = logbackups.scan_local(str(tmp_path))
    assert len(entries) == 7 and {e.engine for e in entries} == {"mongo"} and "log backups: 7" in out.getvalue()
    assert entries[0].created_at > timezone.now() - timedelta(hours=26)  # the newest is not stale
    sizes = [e.size_bytes for e in reversed(entries)]
    assert sizes == sorted(sizes)  # growing: no shrink warning on the demo
    for entry in entries:
        assert logbackups.check_archive(entry.path)["documents"][f"{settings.MONGO_LOG_DB}.{settings.MONGO_LOG_COLLECTION}"] >= 200
