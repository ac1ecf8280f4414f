"""Deploys end to end: the parameter form, the preview, confirm, the job,
against the real API server behind the stand-in (which answers
``processedtemplates`` and DeploymentConfig ``instantiate``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hcapadmin.audit.models import AuditEvent
from hcapadmin.deploys.models import Preview
from hcapadmin.jobs.models import Job
from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.harness.templates import install_build_crds, install_processedtemplates, tools_namespace

TEMPLATES = Path(__file__).parent / "fixtures" / "openshift"

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(openshift_real, settings):
    install_build_crds(openshift_real.kube)
    tools = tools_namespace(openshift_real.kube, openshift_real.namespace)
    install_processedtemplates(openshift_real)
    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    settings.DEPLOY_TEMPLATES_DIR = str(TEMPLATES)
    settings.DEPLOY_TOOLS_NAMESPACE = tools
    openshift_real.tools = tools
    return openshift_real


def _get(real, path):
    status, answer = real.kube.request("GET", path, token=real.kube.token("admin"))
    return status, answer


def test_form_preview_confirm_apply(cluster, client_as, run_jobs):
    ns = cluster.namespace
    client = client_as("admin")
    form = client.get("/deploys/new/db-prep/")
    html = form.content.decode()
    assert form.status_code == 200
    assert 'name="APP_NAME"' in html and 'value="hcap"' in html and "required" in html
    assert 'name="PATRONI_SUPERUSER_PASSWORD"' not in html and "never shown" in html
    response = client.post("/deploys/new/db-prep/", {"APP_NAME": "hcap", "APP_DB_NAME": "hcap"})
    assert response.status_code == 302, response.content[:500]
    preview = Preview.objects.get()
    page = client.get(response["Location"]).content.decode()
    assert "hcap-patroni-settings" in page and "kept as it is" in page and "image-puller" in page
    assert Job.objects.count() == 0  # nothing applied before the confirmation
    assert _get(cluster, f"/api/v1/namespaces/{ns}/configmaps/hcap-patroni-settings")[0] == 404

    wrong = client.post(f"/deploys/{preview.pk}/confirm/", {"confirm": "not-it"})
    assert wrong.status_code == 400 and Job.objects.count() == 0
    client.post(f"/deploys/{preview.pk}/confirm/", {"confirm": ns})
    preview.refresh_from_db()
    assert preview.confirmed_by and preview.job_id
    again = client.post(f"/deploys/{preview.pk}/confirm/", {"confirm": ns})
    assert again.status_code == 409  # one preview, one deploy
    run_jobs()
    job = Job.objects.get(pk=preview.job_id)
    assert job.status == "succeeded", job.error
    assert _get(cluster, f"/api/v1/namespaces/{ns}/configmaps/hcap-patroni-settings")[0] == 200
    actions = list(AuditEvent.objects.filter(action__startswith="deploy.").values_list("action", flat=True))
    assert {"deploy.previewed", "deploy.confirmed", "deploy.applied"} <= set(actions)
    confirmed = AuditEvent.objects.get(action="deploy.confirmed")
    assert {i["action"] for i in confirmed.details["plan"]} == {"keep", "create"}


def test_api_preview_then_deploy_and_read(cluster, client_as, run_jobs):
    client = client_as("admin")
    body = {"kind": "db-create", "parameters": {"APP_NAME": "hcapapi", "CPU_LIMIT": "300m"}}
    response = client.post("/api/v1/deploys/preview", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    preview = response.json()
    assert {(i["kind"], i["action"]) for i in preview["items"]} >= {("StatefulSet", "create"), ("BuildConfig", "create")}
    assert preview["job"] is None
    response = client.post("/api/v1/deploys", json.dumps({"preview": preview["id"]}), content_type="application/json")
    assert response.status_code == 202
    run_jobs()
    answer = client.get(f"/api/v1/deploys/{preview['id']}").json()
    assert answer["job"]["status"] == "succeeded" and answer["confirmed_by"]
    status, sts = _get(cluster, f"/apis/apps/v1/namespaces/{cluster.namespace}/statefulsets/hcapapi-patroni")
    assert status == 200 and sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "300m"
    # Bad bodies: 400, nothing written.
    before = Preview.objects.count()
    for bad in ({"kind": "db-prep", "parameters": {"APP_NAME": 5}}, {"kind": "nope"},
                {"kind": "db-prep", "parameters": {"PATRONI_SUPERUSER_PASSWORD": "mine"}},
                {"kind": "db-prep", "parameters": {"UNKNOWN": "x"}}, {"kind": "rollout", "parameters": {"A": "b"}}):
        r = client.post("/api/v1/deploys/preview", json.dumps(bad), content_type="application/json")
        assert r.status_code == 400, (bad, r.content)
    assert Preview.objects.count() == before
    assert client.post("/api/v1/deploys", json.dumps({"preview": 999999}),
                       content_type="application/json").status_code == 404


def test_the_job_refuses_when_an_object_changed_after_the_preview(cluster, client_as, run_jobs):
    client = client_as("admin")
    body = {"kind": "db-prep", "parameters": {}}
    preview = client.post("/api/v1/deploys/preview", json.dumps(body), content_type="application/json").json()
    # db-prep only creates: the preview kept the existing Secret; it is deleted before the job runs
    assert [i["action"] for i in preview["items"] if i["kind"] == "Secret"] == ["keep"]
    cluster.kube.admin("DELETE", f"/api/v1/namespaces/{cluster.namespace}/secrets/hcap-patroni")
    client.post("/api/v1/deploys", json.dumps({"preview": preview["id"]}), content_type="application/json")
    run_jobs()
    job = Job.objects.get(pk=Preview.objects.get(pk=preview["id"]).job_id)
    assert job.status == "failed" and "was deleted since the preview" in job.error and "new preview" in job.error
    assert _get(cluster, f"/api/v1/namespaces/{cluster.namespace}/configmaps/hcap-patroni-settings")[0] == 404
    assert AuditEvent.objects.filter(action="deploy.failed", outcome="failure").exists()


def test_hostile_parameters_from_the_form_are_data_or_a_400(cluster, client_as):
    client = client_as("admin")
    hostile = "x\n---\nkind: ClusterRoleBinding\n${{APP_NAME}} {{ 7*7 }} <script>"
    response = client.post("/deploys/new/db-prep/", {"APP_NAME": "hcap", "APP_DB_NAME": hostile})
    assert response.status_code == 302
    cm = next(i for i in Preview.objects.get().items if i["kind"] == "ConfigMap")
    assert cm["object"]["data"]["db-name"] == hostile
    page = client.get(response["Location"]).content.decode()
    assert "<script>" not in page
    for bad in ({"APP_NAME": "Not A Name"}, {"APP_NAME": "a\x00b"}, {"APP_NAME": "x" * 5000}):
        assert client.post("/deploys/new/db-prep/", bad).status_code == 400
    assert Preview.objects.count() == 1


def test_sandbox_says_what_it_would_do(client_as):
    client = client_as("admin")
    page = client.get("/deploys/").content.decode()
    assert "HCAPADMIN_PLATFORM=openshift" in page and "HCAPADMIN_TEMPLATES_DIR" in page
    assert client.get("/deploys/new/db-create/").status_code == 200
    assert client.post("/deploys/new/db-create/", {}).status_code == 409
    r = client.post("/api/v1/deploys/preview", json.dumps({"kind": "db-prep"}), content_type="application/json")
    assert r.status_code == 409 and "openshift" in r.json()["error"]


def test_generated_passwords_never_reach_the_portal_and_the_form_shows_the_deployed_values(cluster, client_as,
                                                                                            run_jobs):
    import base64

    client = client_as("admin")
    response = client.post("/deploys/new/db-prep/", {"APP_NAME": "hcapsec", "APP_DB_NAME": "hcapsec"})
    preview = Preview.objects.get()
    page = client.get(response["Location"]).content.decode()
    client.post(f"/deploys/{preview.pk}/confirm/", {"confirm": cluster.namespace})
    run_jobs()
    assert Job.objects.get(pk=Preview.objects.get().job_id).status == "succeeded"
    status, secret = _get(cluster, f"/api/v1/namespaces/{cluster.namespace}/secrets/hcapsec-patroni")
    password = base64.b64decode(secret["data"]["superuser-password"]).decode()
    assert len(password) == 32
    stored = json.dumps([list(Preview.objects.values()), list(Job.objects.values("log", "result", "params")),
                         list(AuditEvent.objects.values("details"))], default=str)
    assert password not in stored and password not in page
    form = client.get("/deploys/new/db-prep/").content.decode()
    assert 'value="hcapsec"' in form  # prefilled with what was deployed


@pytest.mark.parametrize("role", ["viewer", "auditor", "approver"])
def test_only_admins_preview_or_confirm(cluster, client_as, role):
    client = client_as("admin")
    preview = client.post("/api/v1/deploys/preview", json.dumps({"kind": "db-prep"}),
                          content_type="application/json").json()
    client = client_as(role)
    assert client.get(f"/api/v1/deploys/{preview['id']}").status_code == 200
    assert client.post("/api/v1/deploys/preview", json.dumps({"kind": "db-prep"}),
                       content_type="application/json").status_code == 403
    assert client.post("/api/v1/deploys", json.dumps({"preview": preview["id"]}),
                       content_type="application/json").status_code == 403
    assert client.post(f"/deploys/{preview['id']}/confirm/", {"confirm": cluster.namespace}).status_code == 403
    assert Preview.objects.count() == 1 and not Job.objects.exists()
    assert AuditEvent.objects.filter(action="permission.denied").count() == 3


def test_a_job_never_applies_a_preview_that_was_not_confirmed(cluster, client_as, run_jobs):
    from hcapadmin.jobs.lifecycle import default_target, submit

    client = client_as("admin")
    preview = client.post("/api/v1/deploys/preview", json.dumps({"kind": "db-prep"}),
                          content_type="application/json").json()
    job, _ = submit("deploy.apply", {"preview": preview["id"]}, request=None, target=default_target())
    run_jobs()
    job.refresh_from_db()
    assert job.status == "failed" and "not confirmed" in job.error
    assert _get(cluster, f"/api/v1/namespaces/{cluster.namespace}/configmaps/hcap-patroni-settings")[0] == 404
