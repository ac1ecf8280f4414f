"""Rolling back a server that runs as a Deployment, as ``kubectl rollout
undo`` does: the ReplicaSet the Deployment owns with the revision
annotation asked for gives the pod template put back.  The real
kube-apiserver runs no controller-manager, so the tests create what the
Deployment controller would (ReplicaSets, their revision annotations, pods)
and mark pods Ready as a kubelet would, only when the test says so: the
failed rollout is the timeout setting itself, whatever the machine's speed."""

from __future__ import annotations

import json

import pytest

from hcapadmin.audit.models import AuditEvent
from hcapadmin.deploys.models import Preview
from hcapadmin.jobs.models import Job
from tests.harness.kubeapi import MERGE, kube_api, mark_ready, openshift_real  # noqa: F401  (fixtures)
from tests.test_deploys import cluster  # noqa: F401  (fixture)

NAME = "hcap-web"
LABELS = {"app": "hcap-web"}
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
STAMP = "2026-11-20T10:00:00Z"


def _template(image: str, annotations: dict | None = None) -> dict:
    metadata = {"labels": dict(LABELS)}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": [{"name": "web", "image": image}]}}


def make_deployment(kube, ns: str, revision: int, template: dict, name: str = NAME, labels: dict = LABELS) -> dict:
    """A Deployment at ``revision`` (the annotation its controller keeps)."""
    return kube.admin("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {REVISION: str(revision)}},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}})


def make_replicaset(kube, ns: str, owner: dict, revision: int, pod_hash: str, template: dict,
                    owner_uid: str | None = None) -> dict:
    """What the Deployment controller keeps of a revision: a ReplicaSet owned
    by the Deployment, its template with the ``pod-template-hash`` label."""
    template = json.loads(json.dumps(template))
    template["metadata"]["labels"]["pod-template-hash"] = pod_hash
    labels = dict(owner["spec"]["selector"]["matchLabels"], **{"pod-template-hash": pod_hash})
    name = owner["metadata"]["name"]
    return kube.admin("POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{name}-{pod_hash}", "labels": labels, "annotations": {REVISION: str(revision)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                          "uid": owner_uid or owner["metadata"]["uid"], "controller": True}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template}})


def _pod(kube, ns: str, name: str, pod_hash: str, template: dict, *, ready: bool, ip: str = "10.1.0.90"):
    kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "labels": dict(LABELS, **{"pod-template-hash": pod_hash}),
        "annotations": (template["metadata"].get("annotations") or {})}, "spec": template["spec"]})
    if ready:
        mark_ready(kube, ns, name, ip)


def _controller(cluster):
    """The Deployment controller and, for the rolled-back revision, the
    kubelet: a restart makes revision 4 (ReplicaSet ``bbbbb``) whose pod
    never becomes Ready; putting revision 3's template back scales
    ReplicaSet ``aaaaa`` up again and its pod is Ready."""
    ns, kube = cluster.namespace, cluster.kube
    patches = []

    def patch(req):
        status, answer = kube.request("PATCH", req.path, token=req.bearer, body=json.loads(req.body),
                                      content_type=req.headers["content-type"])
        patches.append((req.headers["content-type"], json.loads(req.body), status))
        if status != 200:
            return status, answer
        template = answer["spec"]["template"]
        if RESTARTED_AT in (template["metadata"].get("annotations") or {}):
            answer = kube.admin("PATCH", req.path, {"metadata": {"annotations": {REVISION: "4"}}},
                                content_type=MERGE)
            make_replicaset(kube, ns, answer, 4, "bbbbb", template)
            _pod(kube, ns, f"{NAME}-bbbbb-new01", "bbbbb", template, ready=False)
        else:
            answer = kube.admin("PATCH", req.path, {"metadata": {"annotations": {REVISION: "5"}}},
                                content_type=MERGE)
            _pod(kube, ns, f"{NAME}-aaaaa-back1", "aaaaa", template, ready=True)
        return status, answer

    cluster.standin.route("PATCH", rf"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}", patch)
    return patches


@pytest.fixture
def web(cluster, settings):
    """The server as Deployment hcap-web at revision 3 (ReplicaSet aaaaa), its pod Ready."""
    settings.OPENSHIFT_SERVER_NAME = NAME
    ns, kube = cluster.namespace, cluster.kube
    template = _template("hcap-server:3")
    dep = make_deployment(kube, ns, 3, template)
    make_replicaset(kube, ns, dep, 2, "zzzzz", _template("hcap-server:2"))
    make_replicaset(kube, ns, dep, 3, "aaaaa", template)
    _pod(kube, ns, f"{NAME}-aaaaa-old01", "aaaaa", template, ready=True, ip="10.1.0.80")
    return cluster


def _post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def _deployment(cluster) -> dict:
    return cluster.kube.admin("GET", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments/{NAME}")


@pytest.mark.django_db
def test_a_failed_deployment_rollout_offers_a_roll_back_that_puts_the_earlier_template_back(web, client_as,
                                                                                            run_jobs, settings):
    ns = web.namespace
    patches = _controller(web)
    settings.DEPLOY_ROLLOUT_TIMEOUT = 1
    client = client_as("admin")
    preview = _post(client, "/api/v1/deploys/preview", {"kind": "rollout"})
    assert preview.status_code == 201, preview.content
    item = preview.json()["items"][0]
    assert (item["kind"], item["action"]) == ("Deployment", "rollout")
    rollout = Preview.objects.get(pk=preview.json()["id"])
    assert rollout.items[0]["revision"] == 3  # the revision annotation before the restart
    assert _post(client, "/api/v1/deploys", {"preview": rollout.pk}).status_code == 202
    run_jobs()
    job = Job.objects.get(pk=Preview.objects.get(pk=rollout.pk).job_id)
    assert job.status == "failed"
    assert "did not become Ready within 1s" in job.error and "Roll back to revision 3" in job.error
    assert "oc rollout undo" not in job.error
    assert f"Pod {NAME}-bbbbb-new01: " in job.log
    assert AuditEvent.objects.filter(action="deploy.failed", details__rollback_to=3).exists()
    restarted = _deployment(web)
    assert RESTARTED_AT in restarted["spec"]["template"]["metadata"]["annotations"]

    page = client.get(f"/deploys/{rollout.pk}/").content.decode()
    assert "Preview a roll back to revision 3" in page
    response = client.post(f"/deploys/{rollout.pk}/rollback/")
    assert response.status_code == 302
    back = Preview.objects.get(kind="rollback")
    item = back.items[0]
    assert (item["kind"], item["action"], item["to_revision"]) == ("Deployment", "rollback", 3)
    assert item["diff"] == [{"path": f"spec.template.metadata.annotations.{RESTARTED_AT}",
                             "before": restarted["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
                             "after": None}]
    assert "pod-template-hash" not in json.dumps(item["template"])
    assert len(patches) == 1  # a preview only
    detail = client.get(f"/deploys/{back.pk}/").content.decode()
    assert RESTARTED_AT in detail

    settings.DEPLOY_ROLLOUT_TIMEOUT = 600  # a failure guard: the pod is Ready before the wait starts
    client.post(f"/deploys/{back.pk}/confirm/", {"confirm": ns})
    run_jobs()
    back.refresh_from_db()
    job = Job.objects.get(pk=back.job_id)
    assert job.status == "succeeded", (job.error, job.log)
    # the rolled-back revision's pods (its old one kept running), never the failed revision's
    assert job.result["pods"] == [f"{NAME}-aaaaa-back1", f"{NAME}-aaaaa-old01"]
    content_type, body, status = patches[-1]
    assert content_type == "application/json-patch+json" and status == 200
    assert {"op": "replace", "path": "/metadata/resourceVersion",
            "value": restarted["metadata"]["resourceVersion"]} in body  # the previewed version, as precondition
    now = _deployment(web)["spec"]["template"]
    assert now["metadata"] == {"labels": LABELS}  # the restart annotation gone, no pod-template-hash
    assert now["spec"]["containers"][0]["image"] == "hcap-server:3"
    assert AuditEvent.objects.filter(action="deploy.applied", details__revision=5).exists()


@pytest.mark.django_db
def test_the_roll_back_shows_the_template_diff_and_is_refused_when_the_deployment_changed(web, client_as,
                                                                                          run_jobs, settings):
    ns, kube = web.namespace, web.kube
    patches = _controller(web)
    # The Deployment is at revision 4 (image 4, its ReplicaSet bbbbb); revision 3 had image 3.
    kube.admin("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}",
               {"metadata": {"annotations": {REVISION: "4"}},
                "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hcap-server:4"}]}}}},
               content_type=MERGE)
    client = client_as("admin")
    preview = _post(client, "/api/v1/deploys/preview", {"kind": "rollback", "parameters": {"revision": "3"}})
    assert preview.status_code == 201, preview.content
    item = preview.json()["items"][0]
    assert item["diff"] == [{"path": "spec.template.spec.containers[web].image", "before": "hcap-server:4",
                             "after": "hcap-server:3"}]
    # Someone changes the Deployment between the preview and the confirmation.
    kube.admin("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}",
               {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hcap-server:5"}]}}}},
               content_type=MERGE)
    assert _post(client, "/api/v1/deploys", {"preview": preview.json()["id"]}).status_code == 202
    run_jobs()
    job = Job.objects.get(pk=Preview.objects.get(pk=preview.json()["id"]).job_id)
    assert job.status == "failed"
    assert "Deployment hcap-web" in job.error and "changed since the preview" in job.error
    assert patches == []  # nothing was applied
    assert _deployment(web)["spec"]["template"]["spec"]["containers"][0]["image"] == "hcap-server:5"


@pytest.mark.django_db
def test_a_revision_without_a_replicaset_of_the_deployment_is_refused(web, client_as):
    ns, kube = web.namespace, web.kube
    dep = _deployment(web)
    kube.admin("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}",
               {"metadata": {"annotations": {REVISION: "4"}}}, content_type=MERGE)
    # Revision 1 has a ReplicaSet with the Deployment's labels, owned by another object: not this one's.
    make_replicaset(kube, ns, dep, 1, "ccccc", _template("hcap-server:1"),
                    owner_uid="00000000-0000-0000-0000-000000000001")
    client = client_as("admin")
    for revision, expected in (("1", "revision 1 of Deployment hcap-web has no ReplicaSet"),
                               ("9", "earlier revision of hcap-web (1 to 4)"),
                               ("0", "earlier revision of hcap-web (1 to 4)")):
        response = _post(client, "/api/v1/deploys/preview", {"kind": "rollback", "parameters": {"revision": revision}})
        assert response.status_code == 400, (revision, response.content)
        assert expected in response.content.decode(), response.content
    assert not Preview.objects.filter(kind="rollback").exists()
    # Revision 2 is one the Deployment owns: that preview is made.
    response = _post(client, "/api/v1/deploys/preview", {"kind": "rollback", "parameters": {"revision": "2"}})
    assert response.status_code == 201, response.content
    assert response.json()["items"][0]["diff"] == [{"path": "spec.template.spec.containers[web].image",
                                                    "before": "hcap-server:3", "after": "hcap-server:2"}]
