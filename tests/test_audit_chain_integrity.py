"""The audit chain cannot be broken by odd input, re-hashed without the key,
or quietly shortened: keyed hashes (HMAC-SHA-256, key outside the database),
key rotation, the checkpoint that never moves back, and the head hash that
each audit_verify run prints and logs."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hcapadmin.audit.keys import UNKEYED
from hcapadmin.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, canonical, chain_hash, record
from hcapadmin.audit.verify import COLUMNS, TABLE, badge_status, verify_chain
from hcapadmin.core.clientip import normalise_ip

KEY_A = b"a" * 40
KEY_B = b"b" * 40


def sql(statement, params=None):
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(statement, params or [])


def make(n, **kw):
    return [record("test.event", actor=f"user{i % 3}", target=f"t{i}", details={"i": i}, **kw) for i in range(n)]


def triggers_off():
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_update_delete")


def triggers_on():
    sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_no_update_delete")


def rows_from(event_id):
    with connection.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE id >= %s ORDER BY id", [event_id])
        return cur.fetchall()


def rewrite_from(event_id, new_target, hasher):
    """What an attacker with table access (triggers off) but without the key
    does: edit a row, then recompute every hash from there on with
    ``hasher(prev_hash, canonical_text, key_id) -> hash``."""
    triggers_off()
    sql("UPDATE audit_auditevent SET target = %s WHERE id = %s", [new_target, event_id])
    rows = rows_from(event_id)
    with connection.cursor() as cur:
        cur.execute("SELECT prev_hash FROM audit_auditevent WHERE id = %s", [event_id])
        prev = cur.fetchone()[0]
    for row in rows:
        (_id, created, actor, groups, ip, agent, action, target, outcome, details, _prev, _hash, key_id) = row
        text = canonical(created, actor, json.loads(groups), ip, agent, action, target, outcome, json.loads(details))
        new_hash = hasher(prev, text, key_id)
        sql("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", [prev, new_hash, _id])
        prev = new_hash
    triggers_on()


# --- keyed chain --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_events_are_keyed_with_the_first_configured_key(settings):
    settings.AUDIT_KEYS = {"k2": KEY_B, "k1": KEY_A}
    (event,) = make(1)
    assert event.key_id == "k2"
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.key_id == "k2" and stored.compute_hash() == event.hash
    text = canonical(stored.created_at, stored.actor, stored.actor_groups, stored.source_ip, stored.user_agent,
                     stored.action, stored.target, stored.outcome, stored.details)
    assert event.hash == hmac.new(KEY_B, f"{GENESIS_HASH}\nk2\n{text}".encode(), hashlib.sha256).hexdigest()
    assert event.hash != chain_hash(GENESIS_HASH, text)


@pytest.mark.django_db
@pytest.mark.parametrize("attack", ["plain-sha256", "wrong-key", "right-algorithm-guessed-sandbox-key"])
def test_rehashing_without_the_key_is_caught(settings, attack):
    settings.AUDIT_KEYS = {"k1": KEY_A}
    events = make(6)

    def hasher(prev, text, key_id):
        if attack == "plain-sha256":
            return chain_hash(prev, text)
        key = b"wrong" * 10 if attack == "wrong-key" else b"sandbox" * 8
        return hmac.new(key, f"{prev}\n{key_id}\n{text}".encode(), hashlib.sha256).hexdigest()

    rewrite_from(events[3].id, "edited", hasher)
    with pytest.raises(CommandError) as err:
        call_command("audit_verify", stdout=io.StringIO())
    assert f"event id {events[3].id}" in str(err.value) and "altered" in str(err.value)


@pytest.mark.django_db
def test_relabelling_events_as_unkeyed_is_caught(settings):
    settings.AUDIT_KEYS = {"k1": KEY_A}
    events = make(5)
    triggers_off()
    sql("UPDATE audit_auditevent SET key_id = %s WHERE id >= %s", [UNKEYED, events[2].id])
    triggers_on()
    rewrite_from(events[2].id, "edited", lambda prev, text, key_id: chain_hash(prev, text))
    result = verify_chain()
    assert not result.ok and result.bad_id == events[2].id and "unkeyed" in result.reason


@pytest.mark.django_db
def test_rotation_new_key_signs_old_keys_still_verify(settings):
    settings.AUDIT_KEYS = {"k1": KEY_A}
    old = make(3)
    settings.AUDIT_KEYS = {"k2": KEY_B, "k1": KEY_A}
    new = make(3)
    assert {e.key_id for e in old} == {"k1"} and {e.key_id for e in new} == {"k2"}
    assert verify_chain().ok and verify_chain().count == 6
    settings.AUDIT_KEYS = {"k2": KEY_B}  # k1 dropped: its events can no longer be verified
    result = verify_chain()
    assert not result.ok and result.bad_id == old[0].id and "'k1'" in result.reason


@pytest.mark.django_db
def test_events_written_before_keying_verify_and_are_reported(settings):
    # as left by the migration that added key_id: plain SHA-256, key id "unkeyed"
    prev = GENESIS_HASH
    for i in range(3):
        text = canonical("2026-11-01T10:00:0%d.000000+00:00" % i, "old", [], None, "", "legacy", "", "success",
                         {"i": i})
        digest = chain_hash(prev, text)
        sql("INSERT INTO audit_auditevent (created_at, actor, actor_groups, user_agent, action, target, outcome, "
            "details, prev_hash, hash) VALUES (%s, 'old', '[]', '', 'legacy', '', 'success', %s, %s, %s)",
            [f"2026-11-01T10:00:0{i}+00:00", json.dumps({"i": i}), prev, digest])
        prev = digest
    assert set(AuditEvent.objects.values_list("key_id", flat=True)) == {UNKEYED}
    make(2)
    result = verify_chain()
    assert result.ok and result.count == 5 and result.unkeyed == 3
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "3 events were written before the chain was keyed" in out.getvalue()


# --- truncation -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_deleting_the_newest_events_fails_audit_verify_with_the_count():
    events = make(8)
    call_command("audit_verify", stdout=io.StringIO())  # checkpoint: 8 events through events[-1]
    triggers_off()
    sql("DELETE FROM audit_auditevent WHERE id >= %s", [events[5].id])
    triggers_on()
    assert verify_chain().ok  # the remaining chain is internally consistent...
    with pytest.raises(CommandError) as err:  # ...but shorter than the checkpoint
        call_command("audit_verify", stdout=io.StringIO())
    message = str(err.value)
    assert err.value.returncode == 1
    assert "shortened" in message and "3 of those events are missing" in message
    assert f"#{events[-1].id}" in message
    # the checkpoint was not moved back to the shorter chain
    cp = AuditCheckpoint.objects.get(pk=1)
    assert (cp.last_id, cp.last_hash, cp.events, cp.ok) == (events[-1].id, events[-1].hash, 8, False)
    # appending more does not make it pass, and the badge says so too
    make(2)
    with pytest.raises(CommandError, match="3 of those events are missing"):
        call_command("audit_verify", stdout=io.StringIO())
    assert badge_status()["state"] == "failed"


@pytest.mark.django_db
def test_badge_notices_deleted_newest_events():
    events = make(6)
    assert badge_status()["state"] == "ok"
    triggers_off()
    sql("DELETE FROM audit_auditevent WHERE id >= %s", [events[4].id])
    triggers_on()
    make(1)
    status = badge_status()
    assert status["state"] == "failed" and "2 of those events are missing" in status["reason"]
    cp = AuditCheckpoint.objects.get(pk=1)
    assert cp.last_id == events[-1].id and cp.events == 6


@pytest.mark.django_db
def test_edited_checkpoint_is_not_believed():
    events = make(5)
    call_command("audit_verify", stdout=io.StringIO())
    # someone shortens the chain and moves the checkpoint back to match, without the key
    triggers_off()
    sql("DELETE FROM audit_auditevent WHERE id >= %s", [events[3].id])
    triggers_on()
    AuditCheckpoint.objects.filter(pk=1).update(last_id=events[2].id, last_hash=events[2].hash, events=3)
    for _run in range(2):  # and it stays that way: the altered checkpoint is neither signed nor reset
        with pytest.raises(CommandError, match="checkpoint record was altered"):
            call_command("audit_verify", stdout=io.StringIO())
    assert badge_status()["state"] == "failed"
    # an operator who accepts the loss deletes the checkpoint; the next run starts a new one
    AuditCheckpoint.objects.filter(pk=1).delete()
    call_command("audit_verify", stdout=io.StringIO())
    assert AuditCheckpoint.objects.get(pk=1).events == 3


@pytest.mark.django_db
def test_audit_verify_prints_and_logs_the_head(caplog):
    events = make(4)
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="hcapadmin.audit"):
        call_command("audit_verify", stdout=out)
    line = f"audit head: event id {events[-1].id} hash {events[-1].hash}"
    assert line in out.getvalue()
    assert any(line in r.getMessage() for r in caplog.records if r.name == "hcapadmin.audit")


# --- property: whatever goes in, the chain verifies --------------------------------------------
_text = (st.text(st.characters(codec="utf-8"), max_size=600) | st.text(max_size=20)
         | st.text(st.characters(categories=["Cs", "Cc", "Zs"]), max_size=8))  # lone surrogates, NUL, spaces
_addresses = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=6).map(lambda a: f"{a}%eth0"),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]:443"),
    st.text(max_size=60),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.django_db
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(actor=_text, groups=st.lists(st.text(max_size=30), max_size=3), target=_text, agent=_text,
       ip=_addresses, details=st.dictionaries(st.text(max_size=20), _json_values, max_size=5))
def test_any_event_verifies(actor, groups, target, agent, ip, details):
    event = record("prop.event", actor=actor, actor_groups=groups, target=target, user_agent=agent,
                   source_ip=ip, details=details)
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.compute_hash() == stored.hash == event.hash
    assert (stored.actor, stored.target, stored.user_agent, stored.details, stored.actor_groups) == (
        event.actor, event.target, event.user_agent, event.details, event.actor_groups)
    assert stored.source_ip == normalise_ip(ip)
    result = verify_chain()
    assert result.ok, result.reason


# --- migration on an existing database --------------------------------------------------------
@pytest.mark.django_db
def test_migration_to_the_keyed_chain_keeps_existing_events_verifying():
    """0004 on a table that already has (plain SHA-256) events and a
    checkpoint: migrate works with the append-only triggers on, the old
    events become "unkeyed", the checkpoint gets signed, new events are
    keyed and the whole chain verifies.  (Runs inside the test's
    transaction: PostgreSQL's DDL rolls back with it.)"""
    from django.db.migrations.executor import MigrationExecutor

    MigrationExecutor(connection).migrate([("audit", "0003_append_only_trigger")])
    prev = GENESIS_HASH
    for i in range(3):
        created = f"2026-11-01T10:00:0{i}.000000+00:00"
        digest = chain_hash(prev, canonical(created, "old", [], "10.0.0.1", "", "legacy", "", "success", {"i": i}))
        sql("INSERT INTO audit_auditevent (created_at, actor, actor_groups, source_ip, user_agent, action, target, "
            "outcome, details, prev_hash, hash) VALUES (%s, 'old', '[]', '10.0.0.1', '', 'legacy', '', 'success', "
            "%s, %s, %s)", [created, json.dumps({"i": i}), prev, digest])
        prev = digest
    sql("INSERT INTO audit_auditcheckpoint (id, last_id, last_hash, events, ok, reason) "
        "SELECT 1, max(id), %s, 3, true, '' FROM audit_auditevent", [prev])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([("audit", "0004_keyed_chain")])
    assert set(AuditEvent.objects.values_list("key_id", flat=True)) == {UNKEYED}
    assert AuditCheckpoint.objects.get(pk=1).signature_ok()
    new = make(2)
    assert all(e.key_id != UNKEYED for e in new)
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain intact: 5 events verified" in out.getvalue()
    assert "3 events were written before the chain was keyed" in out.getvalue()


# --- explicit cases the property test is about ---------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("kw", [
    {"details": {"n": 1e16}},                        # jsonb prints it as 10000000000000000
    {"details": {"n": 12345678901234567890.5}},
    {"details": {"n": float("nan"), "m": float("-inf"), 1: "int key", "s": {1, 2}}},
    {"details": {"big": 10**5000}},
    {"user_agent": "\ud800" + "x" * 600},            # lone surrogate, longer than the column
    {"actor": "é" * 300, "target": "\x00t" * 400},
    {"source_ip": "::ffff:10.1.2.3"},
    {"source_ip": "fe80::1%eth0"},
    {"source_ip": "::1.2.3.4"},                      # PostgreSQL prints it dotted, Python does not
])
def test_odd_values_verify(kw):
    record("test.odd", **kw)
    record("test.after")
    result = verify_chain()
    assert result.ok and result.count == 2, result.reason


@pytest.mark.django_db
def test_odd_values_written_into_the_table_are_reported_not_a_500(client_as):
    events = make(3)
    badge_status()
    triggers_off()
    sql("UPDATE audit_auditevent SET prev_hash = 'é', hash = 'ü' WHERE id = %s", [events[-1].id])
    sql("UPDATE audit_auditevent SET actor_groups = '5' WHERE id = %s", [events[0].id])
    triggers_on()
    AuditCheckpoint.objects.filter(pk=1).update(last_hash="ü")
    assert client_as("auditor").get("/audit/").status_code == 200
    with pytest.raises(CommandError, match="BROKEN"):
        call_command("audit_verify", stdout=io.StringIO())
