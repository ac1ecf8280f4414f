"""The Patroni redeploy: its plan says which volumes are deleted, it needs a
different person's approval, and its job deletes the StatefulSet, Service,
PVCs and both ConfigMaps, runs db-create, waits for a leader, then points at
a restore request prefilled with the newest verified backup."""

from __future__ import annotations

import json

import pytest

from hcapadmin.audit.models import AuditEvent
from hcapadmin.deploys.models import Preview
from hcapadmin.jobs.models import Job
from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.test_deploys import cluster  # noqa: F401  (fixture)
from tests.test_platform_openshift import LISTING, exit_status

pytestmark = pytest.mark.django_db
EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"
VERIFIED = "hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz"


def _patroni_volumes(real):
    """The StatefulSet's claims and Service, as db-create made them."""
    ns = real.namespace
    real.kube.admin("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hcap-patroni", "labels": {"cluster-name": "hcap-patroni"}},
        "spec": {"ports": [{"port": 5432}], "selector": {"cluster-name": "hcap-patroni"}}})
    for i in range(3):
        name = f"postgresql-hcap-patroni-{i}"
        real.kube.admin("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {"cluster-name": "hcap-patroni"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}})
        # No pod uses it: the PVC-protection controller would drop its finalizer.
        real.kube.admin("PATCH", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
                        {"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")


def _patroni_after_create(real):
    """Patroni writes its leader ConfigMap once the new StatefulSet runs."""
    ns = real.namespace

    def leader(req):
        status, sts = real.kube.request("GET", f"/apis/apps/v1/namespaces/{ns}/statefulsets/hcap-patroni",
                                        token=real.kube.token("admin"))
        recreated = status == 200 and any(m.get("manager") == "hcapadmin" for m in sts["metadata"]["managedFields"])
        if not recreated:  # the old cluster's ConfigMap, or none: the real server answers
            return real.kube.request("GET", req.path, token=req.bearer)
        return 200, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "hcap-patroni-leader", "namespace": ns, "annotations": {"leader": "hcap-patroni-0"}}}

    real.standin.route("GET", rf"/api/v1/namespaces/{ns}/configmaps/hcap-patroni-leader", leader)

    def backups(req, ws):
        ws.send_channel(1, LISTING if "hcap-backup-mongo" not in req.match["pod"] else "")
        ws.send_channel(3, exit_status(0))

    real.standin.websocket(EXEC, backups)


def _preview(client):
    response = client.post("/api/v1/deploys/preview", json.dumps({"kind": "patroni-redeploy"}),
                           content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def test_the_plan_names_the_deleted_volumes_and_needs_another_persons_approval(cluster, client_as, run_jobs):
    _patroni_volumes(cluster)
    admin = client_as("admin")
    preview = _preview(admin)
    deleted = [(i["kind"], i["name"]) for i in preview["items"] if i["action"] == "delete"]
    assert deleted == [("StatefulSet", "hcap-patroni"), ("Service", "hcap-patroni")] + [
        ("PersistentVolumeClaim", f"postgresql-hcap-patroni-{i}") for i in range(3)] + [
        ("ConfigMap", "hcap-patroni-config"), ("ConfigMap", "hcap-patroni-leader")]
    assert sum("postgresql-hcap-patroni-0 (5Gi) would be deleted" in w for w in preview["warnings"]) == 1
    assert preview["destructive"]
    # Confirming is not enough: no job until someone else approves.
    response = admin.post("/api/v1/deploys", json.dumps({"preview": preview["id"]}), content_type="application/json")
    assert response.status_code == 202 and response.json()["job"] is None
    assert response.json()["status"] == "awaiting approval"
    assert not Job.objects.exists()
    # The admin cannot approve (no approver role); an approver who made the preview cannot either.
    assert admin.post(f"/deploys/{preview['id']}/approve/", {"confirm": cluster.namespace}).status_code == 403
    approver = client_as("approver")
    Preview.objects.filter(pk=preview["id"]).update(created_by="approver")
    refused = approver.post(f"/deploys/{preview['id']}/approve/", {"confirm": cluster.namespace})
    assert refused.status_code == 403 and "another person" in refused.content.decode()
    assert not Job.objects.exists()
    status, _ = cluster.kube.request("GET", f"/apis/apps/v1/namespaces/{cluster.namespace}/statefulsets/hcap-patroni",
                                     token=cluster.kube.token("admin"))
    assert status == 200


def test_redeploy_runs_in_order_once_approved(cluster, client_as, run_jobs):
    from hcapadmin.backups.models import BackupVerification

    _patroni_volumes(cluster)
    _patroni_after_create(cluster)
    BackupVerification.objects.create(backup_name=VERIFIED, database="hcap", ok=True, message="ok")
    admin = client_as("admin")
    preview = _preview(admin)
    admin.post(f"/deploys/{preview['id']}/confirm/", {"confirm": cluster.namespace})
    approver = client_as("approver")
    url = f"/api/v1/deploys/{preview['id']}/approve"
    wrong = approver.post(url, json.dumps({"confirm": "another-namespace"}), content_type="application/json")
    assert wrong.status_code == 400 and cluster.namespace in wrong.json()["error"]
    assert not Job.objects.exists()
    approved = approver.post(url, json.dumps({"confirm": cluster.namespace}), content_type="application/json")
    assert approved.status_code == 202 and approved.json()["job"], approved.content
    again = approver.post(url, json.dumps({"confirm": cluster.namespace}), content_type="application/json")
    assert again.status_code == 409 and Job.objects.count() == 1
    first = len(cluster.standin.requests)
    run_jobs()
    job = Job.objects.get(pk=Preview.objects.get(pk=preview["id"]).job_id)
    assert job.status == "succeeded", job.error
    assert [s["name"] for s in job.runbook["steps"]] == ["delete", "create", "healthy", "restore"]
    changes = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in cluster.standin.requests[first:]
               if r.method in ("DELETE", "POST", "PATCH") and "dryRun" not in r.query
               and "processedtemplates" not in r.path and "selfsubject" not in r.path]
    kinds = [(m, p[0] if m == "DELETE" else p[-1]) for m, p in changes]
    assert kinds[:7] == [("DELETE", "statefulsets"), ("DELETE", "services")] + [
        ("DELETE", "persistentvolumeclaims")] * 3 + [("DELETE", "configmaps")] * 2
    assert ("PATCH", "hcap-patroni") in [(m, p[-1]) for m, p in changes[7:]]  # db-create after every delete
    restore = next(s for s in job.runbook["steps"] if s["name"] == "restore")
    assert restore["data"]["backup"] == VERIFIED
    assert restore["data"]["restore_request_url"].endswith(f"?backup={VERIFIED}")
    assert AuditEvent.objects.filter(action="deploy.approved").exists()
