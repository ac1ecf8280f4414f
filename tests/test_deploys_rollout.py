"""Rolling out the server: DeploymentConfig ``instantiate`` (the stand-in
plays OpenShift's controller and, when a test says so, the kubelet), waiting
for the new pods Ready, a failure past HCAPADMIN_ROLLOUT_TIMEOUT with the
pods' events and log lines, and cancel.  The harness marks a new pod Ready
only when the test asks, so the failure case is the timeout setting itself,
whatever the machine's speed."""

from __future__ import annotations

import json

import pytest

from hcapadmin.audit.models import AuditEvent
from hcapadmin.deploys.models import Preview
from hcapadmin.jobs.models import Job
from tests.harness.kubeapi import MERGE, kube_api, mark_ready, openshift_real  # noqa: F401  (fixtures)
from tests.test_deploys import cluster  # noqa: F401  (fixture)
from tests.test_migrations import fresh_db, sample  # noqa: F401  (fixtures)

INSTANTIATE = r"/apis/apps.openshift.io/v1/namespaces/(?P<ns>[^/]+)/deploymentconfigs/(?P<name>[^/]+)/instantiate"
POD_LOG = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log"


def _controller(real, *, ready: bool):
    """OpenShift's DeploymentConfig controller: instantiate raises
    latestVersion and creates the revision's pod; ``ready`` plays the kubelet."""
    kube = real.kube

    def instantiate(req):
        ns, name = req.match["ns"], req.match["name"]
        path = f"/apis/apps.openshift.io/v1/namespaces/{ns}/deploymentconfigs/{name}"
        dc = kube.admin("GET", path)
        latest = int(dc["status"].get("latestVersion") or 0) + 1
        dc = kube.admin("PATCH", path + "/status", {"status": {"latestVersion": latest}}, content_type=MERGE)
        pod = f"{name}-{latest}-zzzzz"
        kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": {"deploymentconfig": name, "deployment": f"{name}-{latest}"}},
            "spec": {"containers": [{"name": "hcap-server", "image": "hcap-server:new"}]}})
        if ready:
            mark_ready(kube, ns, pod, "10.1.0.99")
        else:
            kube.admin("POST", f"/api/v1/namespaces/{ns}/events", {
                "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{pod}.1"},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
                "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container"})
        return 201, dc

    real.standin.route("POST", INSTANTIATE, instantiate)
    real.standin.route("GET", POD_LOG, lambda req: (200, "starting\nmigrations: 2 pending\n"
                                                        "Error: connect ECONNREFUSED hcap-patroni:5432\n"))


def _rollout(client):
    preview = client.post("/api/v1/deploys/preview", json.dumps({"kind": "rollout"}),
                          content_type="application/json")
    assert preview.status_code == 201, preview.content
    item = preview.json()["items"][0]
    assert (item["kind"], item["action"]) == ("DeploymentConfig", "rollout")
    response = client.post("/api/v1/deploys", json.dumps({"preview": preview.json()["id"]}),
                           content_type="application/json")
    assert response.status_code == 202
    return Preview.objects.get(pk=preview.json()["id"])


@pytest.mark.django_db
def test_rollout_succeeds_when_the_new_pods_are_ready(cluster, client_as, run_jobs):
    _controller(cluster, ready=True)
    preview = _rollout(client_as("admin"))
    run_jobs()
    job = Job.objects.get(pk=preview.job_id)
    assert job.status == "succeeded", job.error
    assert job.result["revision"] == 8 and job.result["previous_revision"] == 7
    assert job.result["pods"] == ["hcap-server-8-zzzzz"]
    assert AuditEvent.objects.filter(action="deploy.applied", details__revision=8).exists()


@pytest.mark.django_db
def test_rollout_fails_past_the_timeout_with_events_logs_and_the_rollback(cluster, client_as, run_jobs, settings):
    settings.DEPLOY_ROLLOUT_TIMEOUT = 1
    _controller(cluster, ready=False)
    preview = _rollout(client_as("admin"))
    run_jobs()
    job = Job.objects.get(pk=preview.job_id)
    assert job.status == "failed"
    assert "did not become Ready within 1s" in job.error and "Roll back to revision 7" in job.error
    assert "BackOff: Back-off restarting failed container" in job.log
    assert "log: Error: connect ECONNREFUSED hcap-patroni:5432" in job.log
    assert AuditEvent.objects.filter(action="deploy.failed", details__rollback_to=7).exists()


@pytest.mark.django_db(transaction=True)
def test_rollout_cancel_while_waiting(cluster, client_as, run_jobs):
    _controller(cluster, ready=False)
    pods = rf"/api/v1/namespaces/{cluster.namespace}/pods"

    def listing(req):
        # The job is waiting for its pods: cancel it now, as a person would.
        from django.db import connection

        try:
            Job.objects.get(kind="deploy.rollout").request_cancel(actor="alice")
        finally:
            connection.close()  # this stand-in thread's own connection
        return 200, {"kind": "PodList", "apiVersion": "v1", "items": []}

    cluster.standin.route("GET", pods, listing)
    preview = _rollout(client_as("admin"))
    run_jobs()
    job = Job.objects.get(pk=preview.job_id)
    assert job.status == "cancelled", (job.status, job.error)


@pytest.mark.django_db
def test_rollout_of_a_deployment_restarts_it_and_waits_for_the_restarted_pods(cluster, client_as, run_jobs,
                                                                              settings):
    ns, kube = cluster.namespace, cluster.kube
    labels = {"app": "hcap-web"}
    kube.admin("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hcap-web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "hcap-server:1"}]}}}})
    # An old pod, Ready, without the restart annotation: it does not count.
    kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "hcap-web-old", "labels": labels}, "spec": {"containers": [{"name": "web", "image": "hcap-server:1"}]}})
    mark_ready(kube, ns, "hcap-web-old", "10.1.0.80")
    settings.OPENSHIFT_SERVER_NAME = "hcap-web"
    patched = []

    def restart(req):
        # The Deployment controller and the kubelet: the patched template's pod, Ready.
        status, answer = kube.request("PATCH", req.path, token=req.bearer, body=json.loads(req.body),
                                      content_type=req.headers["content-type"])
        patched.append(json.loads(req.body))
        if status == 200:
            annotations = answer["spec"]["template"]["metadata"]["annotations"]
            kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "hcap-web-new", "labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": "hcap-server:1"}]}})
            mark_ready(kube, ns, "hcap-web-new", "10.1.0.81")
        return status, answer

    cluster.standin.route("PATCH", rf"/apis/apps/v1/namespaces/{ns}/deployments/hcap-web", restart)
    client = client_as("admin")
    preview = client.post("/api/v1/deploys/preview", json.dumps({"kind": "rollout"}), content_type="application/json")
    assert preview.json()["items"][0]["kind"] == "Deployment"
    client.post("/api/v1/deploys", json.dumps({"preview": preview.json()["id"]}), content_type="application/json")
    run_jobs()
    job = Job.objects.get(pk=Preview.objects.get(pk=preview.json()["id"]).job_id)
    assert job.status == "succeeded", job.error
    assert job.result["pods"] == ["hcap-web-new"]
    assert patched[0]["metadata"]["resourceVersion"]  # the previewed version is the server's precondition


@pytest.mark.django_db
def test_rollout_reports_the_migrations_pending_before_and_applied_after(cluster, client_as, run_jobs, settings,
                                                                        sample, fresh_db):
    from tests.test_migrations import SAMPLE_ORDER, run_tool
    from tests.test_migrations_openshift import install_pod

    _name, url, _conninfo = fresh_db
    run_tool(sample, url, "up", "1")  # the running server applied the first one
    settings.MANAGED_DATABASE_URL = url
    install_pod(cluster, sample, url)
    _controller(cluster, ready=True)
    original = [h for m, p, h in cluster.standin.routes if m == "POST" and p.pattern == "^" + INSTANTIATE + "$"][0]

    def instantiate_and_start(req):
        answer = original(req)
        run_tool(sample, url, "up", "3")  # the new server applies pending migrations as it starts (the 4th is broken)
        return answer

    cluster.standin.route("POST", INSTANTIATE, instantiate_and_start)
    preview = _rollout(client_as("admin"))
    run_jobs()
    job = Job.objects.get(pk=preview.job_id)
    assert job.status == "succeeded", job.error
    assert job.result["migrations_pending_before"] == SAMPLE_ORDER[1:]
    assert job.result["migrations_applied"] == sorted(SAMPLE_ORDER[1:4]), job.log
    assert job.result["migrations_pending_after"] == SAMPLE_ORDER[4:]
    assert f"Migrations before: {len(SAMPLE_ORDER) - 1} pending" in job.log


@pytest.mark.django_db
def test_a_failed_rollout_offers_a_roll_back_to_the_previous_revision(cluster, client_as, run_jobs, settings):
    ns, kube = cluster.namespace, cluster.kube
    # What OpenShift keeps of revision 7: its ReplicationController with that revision's pod template.
    kube.admin("POST", f"/api/v1/namespaces/{ns}/replicationcontrollers", {
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "hcap-server-7"},
        "spec": {"replicas": 0, "selector": {"deployment": "hcap-server-7"}, "template": {
            "metadata": {"labels": {"app": "hcap-server", "deploymentconfig": "hcap-server",
                                    "deployment": "hcap-server-7"}},
            "spec": {"containers": [{"name": "hcap-server", "image": "hcap-server:v7"}]}}}})
    settings.DEPLOY_ROLLOUT_TIMEOUT = 1
    _controller(cluster, ready=False)
    client = client_as("admin")
    rollout = _rollout(client)
    run_jobs()
    assert Job.objects.get(pk=rollout.job_id).status == "failed"
    page = client.get(f"/deploys/{rollout.pk}/").content.decode()
    assert "Preview a roll back to revision 7" in page
    response = client.post(f"/deploys/{rollout.pk}/rollback/")
    assert response.status_code == 302
    back = Preview.objects.get(kind="rollback")
    item = back.items[0]
    assert (item["action"], item["to_revision"]) == ("rollback", 7)
    assert {"path": "spec.template.spec.containers[hcap-server].image", "before": "hcap-server:latest",
            "after": "hcap-server:v7"} in item["diff"]
    assert not Job.objects.filter(kind="deploy.rollout").exclude(pk=rollout.job_id).exists()  # a preview only
    _controller(cluster, ready=True)
    client.post(f"/deploys/{back.pk}/confirm/", {"confirm": ns})
    run_jobs()
    back.refresh_from_db()
    job = Job.objects.get(pk=back.job_id)
    assert job.status == "succeeded", job.error
    dc = kube.admin("GET", f"/apis/apps.openshift.io/v1/namespaces/{ns}/deploymentconfigs/hcap-server")
    assert dc["spec"]["template"]["spec"]["containers"][0]["image"] == "hcap-server:v7"
    assert job.result["revision"] == 9
