"""The client address the audit trail records and lockouts count: behind a
trusted proxy only the entry that proxy appended is believed, and every
address is normalised before it is hashed and stored."""

from __future__ import annotations

import base64

import pytest
from django.test import RequestFactory

from hcapadmin.audit.models import AuditEvent, record
from hcapadmin.audit.verify import verify_chain
from hcapadmin.core.clientip import client_ip, normalise_ip


def _request(**meta):
    return RequestFactory().get("/", **meta)


@pytest.mark.parametrize("value,expected", [
    ("10.1.2.3", "10.1.2.3"),
    (" 10.1.2.3 ", "10.1.2.3"),
    ("::ffff:10.1.2.3", "10.1.2.3"),          # IPv4-mapped: the IPv4 client
    ("::FFFF:a01:203", "10.1.2.3"),
    ("fe80::1%eth0", "fe80::1"),               # the zone names an interface of another machine
    ("FE80:0:0:0:0:0:0:1%25", "fe80::1"),
    ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("10.0.0.1:5678", "10.0.0.1"),
    ("::1.2.3.4", "::102:304"),
    ("not-an-ip", None),
    ("", None),
    ("10.1.2.3, 10.0.0.1", None),
    ("١٠.١.٢.٣", None),                        # other scripts' digits
    ("010.1.2.3", None),
    ("10.1.2.3/24", None),
    (None, None),
    ("x" * 5000, None),
])
def test_normalise_ip(value, expected):
    assert normalise_ip(value) == expected
    if expected is not None:
        assert normalise_ip(expected) == expected  # idempotent


def test_without_a_proxy_header_remote_addr_is_used(settings):
    settings.TRUSTED_PROXY_HEADER = None
    assert client_ip(_request(REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="203.0.113.9")) == "192.0.2.7"
    assert client_ip(_request(REMOTE_ADDR="::ffff:192.0.2.7")) == "192.0.2.7"


def test_client_supplied_left_most_forwarded_entry_is_not_believed(settings):
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_HOPS = 1
    # the client sent "X-Forwarded-For: 6.6.6.6"; OpenShift's router appended what it saw
    request = _request(REMOTE_ADDR="10.128.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.20")
    assert client_ip(request) == "198.51.100.20"
    assert client_ip(_request(REMOTE_ADDR="10.128.0.1", HTTP_X_FORWARDED_FOR="198.51.100.20")) == "198.51.100.20"


def test_trusted_hops_count_from_the_right(settings):
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_HOPS = 2
    request = _request(HTTP_X_FORWARDED_FOR="6.6.6.6, 7.7.7.7, 198.51.100.20, 10.0.0.5")
    assert client_ip(request) == "198.51.100.20"
    # fewer entries than hops: every entry came from a trusted proxy
    assert client_ip(_request(HTTP_X_FORWARDED_FOR="198.51.100.20")) == "198.51.100.20"


def test_garbage_in_the_trusted_entry_is_no_address(settings):
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_HOPS = 1
    assert client_ip(_request(REMOTE_ADDR="10.128.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, unknown")) is None
    assert client_ip(_request(REMOTE_ADDR="10.128.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, ::ffff:10.1.2.3")) == "10.1.2.3"


@pytest.mark.django_db
@pytest.mark.parametrize("forwarded,stored", [
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:DB8::0:1", "2001:db8::1"),
    ("::1.2.3.4", "::102:304"),
    ("garbage", None),
])
def test_anonymous_request_with_odd_address_writes_a_verifying_event(client, settings, forwarded, stored):
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_HOPS = 1
    bad = base64.b64encode(b"nobody:wrong-password").decode()
    client.get("/api/v1/audit", HTTP_AUTHORIZATION=f"Basic {bad}", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {forwarded}")
    event = AuditEvent.objects.get(action="login.failure")
    assert event.source_ip is None if stored is None else normalise_ip(event.source_ip) == stored
    assert event.compute_hash() == event.hash
    assert verify_chain().ok
    # the next event still verifies too: the chain did not stop at the odd one
    record("after", actor="x")
    result = verify_chain()
    assert result.ok and result.count == 2


@pytest.mark.django_db
def test_spoofed_forwarded_for_is_not_recorded_end_to_end(client, settings):
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_HOPS = 1
    bad = base64.b64encode(b"nobody:wrong-password").decode()
    client.get("/api/v1/audit", HTTP_AUTHORIZATION=f"Basic {bad}",
               HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.20")
    event = AuditEvent.objects.get(action="login.failure")
    assert event.source_ip == "198.51.100.20"


@pytest.mark.django_db
def test_record_with_a_request_normalises_before_hashing():
    request = _request(REMOTE_ADDR="::ffff:10.1.2.3")
    event = record("test.ip", request=request)
    assert event.source_ip == "10.1.2.3"
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.source_ip == "10.1.2.3" and stored.hash == event.hash and stored.compute_hash() == event.hash
    assert verify_chain().ok
