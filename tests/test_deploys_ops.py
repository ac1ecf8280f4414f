"""ops/deploys.py against the real API server (dry run, server-side apply
with managed fields, conflicts, deletes, RBAC) behind the stand-in, which
answers OpenShift's ``processedtemplates`` (tests/harness/templates.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ops import deploys
from ops.errors import Conflict, Forbidden, Invalid
from tests.harness.kubeapi import MERGE, kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.harness.templates import install_build_crds, install_processedtemplates, tools_namespace

TEMPLATES = Path(__file__).parent / "fixtures" / "openshift"


@pytest.fixture
def deploy_env(openshift_real):
    """(real, Kube with the portal's token, tools namespace, processed templates seen)."""
    install_build_crds(openshift_real.kube)
    tools = tools_namespace(openshift_real.kube, openshift_real.namespace)
    calls = []
    install_processedtemplates(openshift_real, calls)
    kube = deploys.Kube(openshift_real.api_client())
    return openshift_real, kube, tools, calls


def _preview(kube, real, tools, kind, values=None):
    return deploys.preview(kube, deploys.deploy_kind(kind), TEMPLATES, values or {}, target=real.namespace,
                           tools=tools)


def _secret(real, name):
    return real.kube.admin("GET", f"/api/v1/namespaces/{real.namespace}/secrets/{name}")


def test_db_prep_keeps_the_existing_secret_and_plans_the_image_puller_grant(deploy_env):
    real, kube, tools, calls = deploy_env
    before = _secret(real, "hcap-patroni")
    plan = _preview(kube, real, tools, "db-prep")
    by = {(i["kind"], i["name"]): i for i in plan["items"]}
    assert by[("Secret", "hcap-patroni")]["action"] == deploys.KEEP
    assert by[("ConfigMap", "hcap-patroni-settings")]["action"] == deploys.CREATE
    grant = by[("RoleBinding", f"{real.namespace}-hcap-patroni-image-puller")]
    assert grant["namespace"] == tools and grant["action"] == deploys.CREATE
    assert any("kept as it is" in w for w in plan["warnings"])
    # Parameter values travel as data in the Template's parameters.
    assert {p["name"]: p.get("value") for p in calls[0]["parameters"]}["APP_NAME"] == "hcap"
    # The dry run changed nothing.
    status, _ = kube.request("GET", f"/api/v1/namespaces/{real.namespace}/configmaps/hcap-patroni-settings")
    assert status == 404
    result = deploys.apply(kube, plan["items"], secrets={}, log=lambda line: None)
    assert {(a["kind"], a["action"]) for a in result["applied"]} == {("ConfigMap", "create"), ("RoleBinding", "create")}
    after = _secret(real, "hcap-patroni")
    assert after["data"] == before["data"] and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    binding = real.kube.admin("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{tools}/rolebindings/"
                                     f"{real.namespace}-hcap-patroni-image-puller")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hcap-patroni", "namespace": real.namespace}]


def test_db_prep_creates_a_missing_secret_with_generated_passwords_never_in_the_plan(deploy_env):
    real, kube, tools, _calls = deploy_env
    plan = _preview(kube, real, tools, "db-prep", {"APP_NAME": "hcapnew"})
    secret_item = next(i for i in plan["items"] if i["kind"] == "Secret")
    assert secret_item["action"] == deploys.CREATE and secret_item["name"] == "hcapnew-patroni"
    assert set(secret_item["object"]["stringData"].values()) == {deploys.REDACTED}
    assert all(d["after"] in (None, deploys.REDACTED) for d in secret_item["diff"] if d["path"].startswith("data."))
    # The job processes again for the Secret's values (a plan never holds them).
    template = deploys.load_template(TEMPLATES, "patroni.prep.yml")
    fresh = deploys.process(kube, real.namespace, template, {"APP_NAME": "hcapnew"})
    secrets = {(real.namespace, o["metadata"]["name"]): o for o in fresh if o["kind"] == "Secret"}
    deploys.apply(kube, plan["items"], secrets=secrets, log=lambda line: None)
    made = _secret(real, "hcapnew-patroni")
    password = base64.b64decode(made["data"]["superuser-password"]).decode()
    assert len(password) == 32 and password.isalnum()
    assert password == secrets[(real.namespace, "hcapnew-patroni")]["stringData"]["superuser-password"]


def test_db_create_sends_build_objects_to_tools_and_shows_a_field_diff_of_a_change(deploy_env):
    real, kube, tools, _calls = deploy_env
    values = {"APP_NAME": "hcapx"}
    plan = _preview(kube, real, tools, "db-create", values)
    where = {(i["kind"], i["namespace"]) for i in plan["items"]}
    assert ("BuildConfig", tools) in where and ("ImageStream", tools) in where
    assert ("StatefulSet", real.namespace) in where
    sts = next(i for i in plan["items"] if i["kind"] == "StatefulSet")
    image = sts["object"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert f"/{tools}/hcapx-patroni" in image  # IMAGE_NAMESPACE is the tools namespace
    deploys.apply(kube, plan["items"], log=lambda line: None)
    live = real.kube.admin("GET", f"/apis/apps/v1/namespaces/{real.namespace}/statefulsets/hcapx-patroni")
    assert any(m["manager"] == "hcapadmin" and m["operation"] == "Apply" for m in live["metadata"]["managedFields"])

    again = _preview(kube, real, tools, "db-create", dict(values, CPU_LIMIT="750m"))
    sts = next(i for i in again["items"] if i["kind"] == "StatefulSet")
    assert sts["action"] == deploys.CHANGE
    assert sts["diff"] == [{"path": "spec.template.spec.containers[postgresql].resources.limits.cpu",
                            "before": "500m", "after": "750m"}]
    assert {i["action"] for i in again["items"] if i["kind"] != "StatefulSet"} == {deploys.UNCHANGED}


def test_refuses_when_an_object_changed_since_the_preview(deploy_env):
    real, kube, tools, _calls = deploy_env
    values = {"APP_NAME": "hcapy"}
    deploys.apply(kube, _preview(kube, real, tools, "db-create", values)["items"], log=lambda line: None)
    plan = _preview(kube, real, tools, "db-create", dict(values, CPU_LIMIT="800m"))
    # Someone else changes the Service after the preview.
    real.kube.admin("PATCH", f"/api/v1/namespaces/{real.namespace}/services/hcapy-patroni",
                    {"metadata": {"annotations": {"note": "changed by hand"}}}, content_type=MERGE)
    with pytest.raises(Conflict, match="Service hcapy-patroni .* changed since the preview.*new preview"):
        deploys.apply(kube, plan["items"], log=lambda line: None)
    live = real.kube.admin("GET", f"/apis/apps/v1/namespaces/{real.namespace}/statefulsets/hcapy-patroni")
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"


def test_a_field_another_manager_set_is_a_conflict_warning_then_taken_over(deploy_env):
    real, kube, tools, _calls = deploy_env
    values = {"APP_NAME": "hcapz"}
    deploys.apply(kube, _preview(kube, real, tools, "db-create", values)["items"], log=lambda line: None)
    real.kube.admin("PATCH", f"/api/v1/namespaces/{real.namespace}/services/hcapz-patroni",
                    {"metadata": {"labels": {"cluster-name": "by-hand"}}}, content_type=MERGE)
    plan = _preview(kube, real, tools, "db-create", values)
    svc = next(i for i in plan["items"] if i["kind"] == "Service")
    assert svc["action"] == deploys.CHANGE and svc["force"] and svc["conflicts"]
    assert {"path": "metadata.labels.cluster-name", "before": "by-hand", "after": "hcapz-patroni"} in svc["diff"]
    assert any("takes over fields" in w for w in plan["warnings"])
    deploys.apply(kube, plan["items"], log=lambda line: None)
    live = real.kube.admin("GET", f"/api/v1/namespaces/{real.namespace}/services/hcapz-patroni")
    assert live["metadata"]["labels"]["cluster-name"] == "hcapz-patroni"


def test_an_immutable_change_is_refused_in_the_preview_and_not_applied(deploy_env):
    real, kube, tools, _calls = deploy_env
    # The harness's hcap-patroni StatefulSet has another selector and no volume claims.
    plan = _preview(kube, real, tools, "db-create")
    sts = next(i for i in plan["items"] if i["kind"] == "StatefulSet")
    assert sts["action"] == deploys.REFUSED
    with pytest.raises(Conflict, match="refuses StatefulSet hcap-patroni"):
        deploys.apply(kube, plan["items"], log=lambda line: None)


def test_deletes_with_the_previewed_resource_version(deploy_env):
    real, kube, _tools, _calls = deploy_env
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hcap-patroni-config"}}
    item = deploys.plan_delete(kube, cm, real.namespace)
    assert item["action"] == deploys.DELETE and item["resource_version"]
    deploys.apply(kube, [item], log=lambda line: None)
    status, _ = kube.request("GET", f"/api/v1/namespaces/{real.namespace}/configmaps/hcap-patroni-config")
    assert status == 404
    assert deploys.plan_delete(kube, cm, real.namespace) is None


def test_rbac_a_user_without_rights_cannot_process_or_apply(deploy_env):
    real, _kube, tools, _calls = deploy_env
    viewer = deploys.Kube(real.api_client(real.token("vic")))
    with pytest.raises(Forbidden, match="processing template"):
        _preview(viewer, real, tools, "db-prep")


def test_hostile_parameter_values_stay_data(deploy_env):
    real, kube, tools, _calls = deploy_env
    hostile = 'x"\n  namespace: kube-system\nkind: ClusterRoleBinding\n${APP_NAME} $(id) \'; --'
    params = deploys.parameters(deploys.deploy_kind("db-prep"), TEMPLATES, {"tools_namespace": tools})
    values = deploys.check_values(params, {"APP_DB_NAME": hostile})
    plan = _preview(kube, real, tools, "db-prep", values)
    cm = next(i for i in plan["items"] if i["kind"] == "ConfigMap")
    assert cm["object"]["data"]["db-name"] == hostile  # one pass: a value is never substituted again
    assert cm["namespace"] == real.namespace and cm["object"]["kind"] == "ConfigMap"
    for bad in ({"NOPE": "x"}, {"PATRONI_SUPERUSER_PASSWORD": "mine"}, {"APP_NAME": 5}, {"APP_NAME": "a\x00b"},
                {"APP_NAME": "x" * 5000}, ["APP_NAME"]):
        with pytest.raises(Invalid):
            deploys.check_values(params, bad)
    with pytest.raises(Invalid):  # an object name the API refuses is a 4xx, never applied
        _preview(kube, real, tools, "db-prep", {"APP_NAME": "Bad Name/.."})
