"""Every job on the managed database locks one name, whatever the platform:
``hcapadmin.jobs.lifecycle.default_target()``."""

from __future__ import annotations

import pytest

from hcapadmin.jobs.models import Job
from hcapadmin.jobs.lifecycle import default_target
from tests.test_migrations import SAMPLE_ORDER, fresh_db  # noqa: F401  (fixture)
from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.test_migrations_openshift import install_pod, pod_folder  # noqa: F401  (fixture)


def _openshift(settings, openshift_real, url):
    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.MANAGED_DATABASE_URL = url  # on OpenShift: only to read pgmigrations


@pytest.mark.django_db
def test_backup_and_migration_apply_lock_the_same_name_on_openshift(openshift_real, pod_folder, fresh_db, settings,  # noqa: F811
                                                                    client_as):
    from hcapadmin.audit.models import AuditEvent

    dbname, url, _ = fresh_db
    assert dbname != "hcap"  # the URL names another database than the default target
    (pod_folder / "1630000000000_broken-backfill.js").unlink()
    install_pod(openshift_real, pod_folder, db_url=url)
    _openshift(settings, openshift_real, url)
    client = client_as("admin")
    assert client.post("/backups/run/", {"confirm": "yes"}).status_code == 302
    assert client.post("/migrations/apply/", {"confirm": "apply", "expected": SAMPLE_ORDER[:5]}).status_code == 302
    backup = Job.objects.get(kind="backup.manual")
    apply = Job.objects.get(kind="migrations.apply")
    assert backup.mutating and apply.mutating
    assert backup.target == apply.target == default_target() == "hcap"
    assert AuditEvent.objects.get(action="migrations.apply", outcome="success").target == "hcap"


@pytest.mark.django_db
def test_the_target_setting_names_the_lock_for_every_kind(openshift_real, pod_folder, fresh_db, settings,  # noqa: F811
                                                          client_as):
    _, url, _ = fresh_db
    (pod_folder / "1630000000000_broken-backfill.js").unlink()
    install_pod(openshift_real, pod_folder, db_url=url)
    _openshift(settings, openshift_real, url)
    settings.TARGET_DATABASE = "hcap-prod"
    client = client_as("admin")
    assert client.post("/backups/run/", {"confirm": "yes"}).status_code == 302
    assert client.post("/migrations/apply/", {"confirm": "apply", "expected": SAMPLE_ORDER[:5]}).status_code == 302
    assert set(Job.objects.values_list("target", flat=True)) == {"hcap-prod"}


@pytest.mark.django_db
def test_local_jobs_lock_the_managed_databases_name(fresh_db, settings):  # noqa: F811
    dbname, url, _ = fresh_db
    settings.PLATFORM = "local"
    settings.TARGET_DATABASE = None
    settings.MANAGED_DATABASE_URL = url
    assert default_target() == dbname


def test_every_job_kind_on_the_managed_database_is_mutating():
    from hcapadmin.jobs.registry import get_kind

    for name in ("backup.manual", "backup.verify", "migrations.apply"):
        assert get_kind(name).mutating, name
