"""The audit trail: append-only in PostgreSQL, hash chain verification,
concurrent writers, review page, exports and API (issue 3)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from hcapadmin.audit.models import GENESIS_HASH, AuditEvent, record
from hcapadmin.audit.verify import badge_status, verify_chain

ROOT = Path(__file__).resolve().parent.parent


def make(n, **kw):
    return [record(kw.get("action", "test.event"), actor=kw.get("actor", f"user{i % 3}"), target=f"t{i}",
                   outcome=kw.get("outcome", "success"), details={"i": i, "text": "ünïcode ✓"}) for i in range(n)]


def sql(statement, params=None):
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(statement, params or [])


# --- chain and append-only ---------------------------------------------------------------
@pytest.mark.django_db
def test_chain_links_and_verifies():
    events = make(5)
    assert events[0].prev_hash == GENESIS_HASH
    for a, b in zip(events, events[1:]):
        assert b.prev_hash == a.hash
    result = verify_chain(chunk=2)
    assert result.ok and result.count == 5 and result.last_id == events[-1].id
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain intact: 5 events verified" in out.getvalue()


@pytest.mark.django_db
def test_record_survives_hostile_values():
    e = record("x", actor="a\x00b", target="t\x00", source_ip="not-an-ip", details={"k\x00": "v\x00", "n": [1.5, None]})
    assert (e.actor, e.target, e.source_ip, e.details) == ("ab", "t", None, {"k": "v", "n": [1.5, None]})
    assert verify_chain().ok


@pytest.mark.django_db
def test_model_refuses_change():
    (event,) = make(1)
    event.actor = "mallory"
    with pytest.raises(ValueError):
        event.save()
    with pytest.raises(ValueError):
        event.delete()


@pytest.mark.django_db
@pytest.mark.parametrize("statement", [
    "UPDATE audit_auditevent SET actor = 'mallory'",
    "DELETE FROM audit_auditevent",
])
def test_trigger_refuses_update_and_delete(statement):
    make(2)
    with pytest.raises(DatabaseError, match="append-only"):
        sql(statement)
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            AuditEvent.objects.all().update(actor="mallory")
    assert AuditEvent.objects.filter(actor="mallory").count() == 0
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_trigger_refuses_truncate():
    make(1)
    # conftest switches this trigger off for the test database's flushes; switch it back on here
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_truncate")
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE"):
        sql("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db
def test_tampering_with_trigger_disabled_is_caught():
    events = make(6)
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update_delete")  # superuser
    sql("UPDATE audit_auditevent SET outcome = 'success', details = '{\"i\": 99}' WHERE id = %s", [events[3].id])
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update_delete")
    with pytest.raises(CommandError) as err:
        call_command("audit_verify")
    assert f"event id {events[3].id}" in str(err.value) and "altered" in str(err.value)
    assert err.value.returncode == 1
    assert badge_status()["state"] == "failed"


@pytest.mark.django_db
def test_deleting_an_event_with_trigger_disabled_is_caught():
    events = make(6)
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update_delete")
    sql("DELETE FROM audit_auditevent WHERE id = %s", [events[2].id])
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update_delete")
    result = verify_chain()
    assert not result.ok and result.bad_id == events[3].id and "removed" in result.reason
    assert result.count == 2


@pytest.mark.django_db
def test_badge_verifies_incrementally_and_checks_its_checkpoint():
    make(30)
    status = badge_status(budget=20)
    assert status["state"] == "partial" and status["pending"] == 10
    status = badge_status(budget=20)
    assert status["state"] == "ok" and status["pending"] == 0
    through = status["verified_through"]
    # the checkpoint event itself is altered -> the next badge check notices
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update_delete")
    sql("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [through])
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update_delete")
    make(1)
    status = badge_status()
    assert status["state"] == "failed" and status["bad_id"] == through


def _child_env(dbname: str, pg) -> dict:
    env = dict(os.environ)
    env["DATABASE_URL"] = pg.url(dbname)
    env["DJANGO_SETTINGS_MODULE"] = "hcapadmin.settings"
    return env


WRITER = """
import sys, time, django
django.setup()
from hcapadmin.audit.models import record
name, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
for i in range(n):
    record("concurrency.test", actor=name, target=str(i), details={"i": i})
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_processes_writing_at_once_leave_a_valid_chain(pg):
    env = _child_env(connection.settings_dict["NAME"], pg)
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"proc-{k}", str(start), "150"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    actors = list(AuditEvent.objects.order_by("id").values_list("actor", flat=True))
    assert sorted(set(actors)) == ["proc-1", "proc-2"] and len(actors) == 300
    switches = sum(1 for a, b in zip(actors, actors[1:]) if a != b)
    assert switches > 1, "the two writers did not overlap"
    result = verify_chain()
    assert result.ok and result.count == 300
    # the command, as a real process: exit 0 and the count
    done = subprocess.run([sys.executable, "manage.py", "audit_verify"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "300 events verified" in done.stdout
    # tampered (as superuser, trigger off): non-zero and the first bad id
    bad = AuditEvent.objects.order_by("id").values_list("id", flat=True)[120]
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update_delete")
    sql("UPDATE audit_auditevent SET target = 'x' WHERE id = %s", [bad])
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update_delete")
    done = subprocess.run([sys.executable, "manage.py", "audit_verify"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and f"event id {bad}" in done.stderr


# --- review page, exports, API ----------------------------------------------------------------
@pytest.mark.django_db
def test_review_page_lists_newest_first_and_pages_by_keyset(client_as):
    events = make(120)
    c = client_as("auditor")
    r = c.get("/audit/")
    assert r.status_code == 200
    shown = r.context["events"]
    assert [e.id for e in shown] == [e.id for e in reversed(events)][:50]
    assert b"Chain verifies" in r.content
    seen = [e.id for e in shown]
    link = r.context["next_link"]
    while link:
        r = c.get("/audit/" + link)
        assert r.status_code == 200
        seen += [e.id for e in r.context["events"]]
        link = r.context["next_link"]
    ids = [e.id for e in AuditEvent.objects.order_by("-id")]
    assert seen == ids  # every event exactly once, in order (audit.export not involved)


@pytest.mark.django_db
def test_review_filters(client_as):
    make(6)
    record("login.failure", actor="mallory", target="mallory", outcome="failure")
    c = client_as("auditor")
    r = c.get("/audit/", {"actor": "mallory"})
    assert [e.actor for e in r.context["events"]] == ["mallory"]
    r = c.get("/audit/", {"action": "login.failure", "outcome": "failure"})
    assert len(r.context["events"]) == 1
    r = c.get("/audit/", {"target": "t2"})
    assert [e.target for e in r.context["events"]] == ["t2"]
    r = c.get("/audit/", {"outcome": "denied"})
    assert r.context["events"] == [] and b"No audit events match these filters" in r.content
    now = timezone.localtime()
    r = c.get("/audit/", {"since": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
                          "until": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")})
    assert len(r.context["events"]) >= 7
    r = c.get("/audit/", {"until": (now - timedelta(days=2)).strftime("%Y-%m-%d")})
    assert r.context["events"] == []


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {"outcome": "bogus"}, {"since": "yesterday"}, {"until": "2026-13-45"}, {"before": "-1"}, {"before": "abc"},
    {"actor": "x" * 300}, {"since": "2026-02-02", "until": "2026-01-01"}, {"before": "9" * 30},
])
def test_bad_filters_are_400(client_as, params):
    c = client_as("auditor")
    r = c.get("/audit/", params)
    assert r.status_code == 400 and b'data-testid="filter-error"' in r.content
    r = c.get("/api/v1/audit", params)
    assert r.status_code == 400 and "error" in r.json()
    export_params = {k: v for k, v in params.items() if k != "before"}  # exports take no cursor
    if export_params:
        assert c.get("/audit/export.csv", export_params).status_code == 400
        assert not AuditEvent.objects.filter(action="audit.export").exists()


@pytest.mark.django_db
def test_api_pages_with_cursor(client_as):
    make(7)
    c = client_as("auditor")
    r = c.get("/api/v1/audit", {"limit": 3, "action": "test.event"}).json()
    assert len(r["items"]) == 3 and isinstance(r["next"], str)
    ids = [i["id"] for i in r["items"]]
    while r["next"]:
        r = c.get("/api/v1/audit", {"limit": 3, "action": "test.event", "before": r["next"]}).json()
        ids += [i["id"] for i in r["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 7
    item = c.get("/api/v1/audit", {"limit": 1}).json()["items"][0]
    assert set(item) >= {"id", "created_at", "actor", "action", "target", "outcome", "details", "hash", "prev_hash"}
    assert c.get("/api/v1/audit", {"limit": 501}).status_code == 400


@pytest.mark.django_db
def test_exports_stream_the_filtered_set_and_are_audited(client_as):
    make(9)
    record("backup.requested", actor="=HYPERLINK(\"http://evil\")", target="hcap", outcome="failure")
    c = client_as("auditor")
    r = c.get("/audit/export.csv", {"outcome": "success"})
    assert r.status_code == 200 and r.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 9 and all(row["outcome"] == "success" for row in rows)
    assert json.loads(rows[0]["details"]) == {"i": 8, "text": "ünïcode ✓"}
    r = c.get("/audit/export.csv", {"action": "backup.requested"})
    (row,) = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert row["actor"].startswith("'=")  # no spreadsheet formula
    r = c.get("/audit/export.json", {"actor": "user1"})
    assert r.status_code == 200 and r.streaming
    data = json.loads(b"".join(r.streaming_content))
    assert len(data) == 3 and {d["actor"] for d in data} == {"user1"}
    exports = list(AuditEvent.objects.filter(action="audit.export").order_by("id"))
    assert [e.details for e in exports] == [
        {"format": "csv", "filters": {"outcome": "success"}},
        {"format": "csv", "filters": {"action": "backup.requested"}},
        {"format": "json", "filters": {"actor": "user1"}},
    ]
    assert all(e.actor == "auditor" for e in exports)


@pytest.mark.django_db
def test_detail_page(client_as):
    (e,) = make(1)
    c = client_as("auditor")
    r = c.get(f"/audit/{e.id}/")
    assert r.status_code == 200 and e.hash.encode() in r.content and "ünïcode".encode() in r.content
    assert c.get(f"/audit/{e.id + 1000}/").status_code == 404
