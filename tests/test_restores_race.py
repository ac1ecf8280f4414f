"""Two approvers acting at the same moment, in two processes against the real
PostgreSQL: exactly one restore runbook job and one ``restore.approved`` event.

The test holds the request's row lock itself, starts both approver
processes, waits until PostgreSQL shows both blocked on that lock, then lets
go: the two approvals then really contend, on any machine speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from hcapadmin.restores.models import RestoreRequest

ROOT = Path(__file__).resolve().parent.parent

APPROVER = """
import json, os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcapadmin.settings")
django.setup()
from django.test import RequestFactory
from hcapadmin.accounts.principal import Principal
from hcapadmin.restores.models import Conflict, RestoreRequest
pk, name = int(sys.argv[1]), sys.argv[2]
http = RequestFactory().post(f"/api/v1/restores/{pk}/approve")
http.principal = Principal(name=name, groups=("hcap-approvers",), roles=frozenset({"approver"}))
try:
    job = RestoreRequest.objects.get(pk=pk).approve(request=http, comment="race")
    print(json.dumps({"job": job.pk if job else None}))
except Conflict as exc:
    print(json.dumps({"conflict": str(exc)}))
"""


def _waiting_on_locks(conn, dbname: str) -> int:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        [dbname]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("needed,approvers", [(1, ("approver-a", "approver-b")), (2, ("approver-a", "approver-b"))])
def test_concurrent_approvals_submit_exactly_one_job(pg, redis_url, needed, approvers, tmp_path, settings):
    from hcapadmin.jobs.queue import get_queue
    from tests.test_restores import put

    now = timezone.now()
    settings.BACKUP_DIR = str(tmp_path)
    name, _path = put(tmp_path)  # the approval takes the file's path from the catalog
    req = RestoreRequest.objects.create(
        backup_name=name, backup_database="hcap", backup_created_at=now,
        backup_size=10, backup_sha256="0" * 64, backup_verified=True, target="hcap", mode="online", reason="race",
        requested_by="requester", approvals_required=needed, expires_at=now + timedelta(hours=1))
    dbname = connection.settings_dict["NAME"]
    env = {**os.environ, "DATABASE_URL": pg.url(dbname), "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
           "HCAPADMIN_BACKUP_DIR": str(tmp_path)}
    holder = psycopg.connect(pg.url(dbname).replace("postgres://", "postgresql://"))
    watcher = psycopg.connect(pg.url(dbname).replace("postgres://", "postgresql://"), autocommit=True)
    procs = []
    try:
        holder.execute(f"SELECT 1 FROM {RestoreRequest._meta.db_table} WHERE id = %s FOR UPDATE", [req.pk])
        procs = [subprocess.Popen([sys.executable, "-c", APPROVER, str(req.pk), name], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in approvers]
        deadline = time.monotonic() + 120  # a failure guard only
        while _waiting_on_locks(watcher, dbname) < 2:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the approver processes never reached the row lock"
            time.sleep(0.05)
        holder.rollback()  # let both go at once
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        holder.close()
        watcher.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        get_queue().empty()
    jobs = Job.objects.filter(kind="restore.local", params__request=req.pk)
    assert jobs.count() == 1
    assert AuditEvent.objects.filter(action="restore.approved", details__request=req.pk).count() == 1
    req.refresh_from_db()
    assert req.status == "approved" and req.job_id == jobs.get().pk
    submitted = [o for o in outputs if o.get("job")]
    assert len(submitted) == 1 and submitted[0]["job"] == req.job_id
    if needed == 1:
        assert sum(1 for o in outputs if "conflict" in o) == 1
        assert req.decisions.count() == 1
    else:
        assert sorted(d.approver for d in req.decisions.all()) == list(approvers)
