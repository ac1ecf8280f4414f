"""The portal's Role (deploy/openshift/rbac-rules.yaml) is no wider than what
the OpenShift driver uses.

Every OpenShift test already runs the driver with the portal's service
account bound to that Role (tests/harness/kubeapi.py grant_roles), so the
suite passes only if the Role is enough.  This module proves the other half:
each verb of each rule is used.  It starts its own kube-apiserver with an
audit policy that logs the service account's requests (metadata level) and
the access reviews the stand-in makes on its behalf for exec (the kubelet's
and Kubernetes 1.35's ``create pods/exec`` check), drives the portal's
OpenShift operations, stops the server (the log is written in blocking mode,
so it is complete once the server has exited) and fails listing every
(rule, verb, name) no request used.

Why a module of its own rather than a check at the end of the whole suite:
it gives the same answer whatever subset of the suite runs, in whatever
order (``-k``, ``--lf``, one file), and it never has to guess whether "all
the OpenShift tests" ran.  The price: a new driver call needs its operation
added to OPERATIONS below as well as its rule to rbac-rules.yaml, and this
test says so by name when either is missing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from devtools.kube import ADMIN, PORTAL, KubeAPI
from ops.errors import OpsError
from tests.harness.kubeapi import (BACKUP_POD, SERVER_POD, OpenShiftReal, create_hcap_namespace,
                                   install_deploymentconfig_crd, install_openshift_endpoints, portal_rule_calls)

EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"
PORTAL_USER = "system:serviceaccount:hcap:hcapadmin"
HARNESS_ADMIN = "hcap-harness-admin"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "users": [PORTAL_USER]},
        # the stand-in authorising an exec for the caller, as a kubelet does
        {"level": "RequestResponse", "users": [HARNESS_ADMIN], "verbs": ["create"],
         "resources": [{"group": "authorization.k8s.io", "resources": ["subjectaccessreviews"]}]},
        {"level": "None"},
    ],
}


def _exec_ok(req, ws):
    ws.send_channel(1, "ok\n")
    ws.send_channel(3, '{"metadata":{},"status":"Success"}')


def _exec_direct(real: OpenShiftReal):
    """exec straight at the real server: a websocket GET, which it authorises
    as ``get pods/exec`` before it looks for the pod's kubelet (there is none
    here, so the call then fails)."""
    from ops.platform.openshift import OpenShiftDriver

    direct = OpenShiftDriver(api_url=real.kube.url, namespace=real.namespace, token=real.portal_token,
                             ca_file=str(real.kube.ca_file))
    with pytest.raises(OpsError):
        direct.exec(SERVER_POD, ["true"])


# The portal's OpenShift operations, each as the portal runs it.
OPERATIONS = {
    "ping (readiness)": lambda real: real.driver().ping(),
    "find the backup pod": lambda real: real.driver().backup_pod(),
    "Patroni cluster state": lambda real: real.driver().cluster_state(),
    "exec through the cluster (kubelet's create check)": lambda real: real.driver().exec(BACKUP_POD, ["true"]),
    "exec as a websocket GET": _exec_direct,
}


def granted(namespace: str) -> dict[tuple, str]:
    """{(group, resource, subresource, verb, name or None): call} for every
    verb and resource name the rendered rules grant."""
    out = {}
    for call in portal_rule_calls(namespace):
        rule = call["rule"]
        resource, _, sub = rule["resource"].partition("/")
        for verb in rule["verbs"]:
            for name in rule.get("resourceNames") or [None]:
                out[(rule["apiGroup"], resource, sub, verb, name)] = call["call"]
    return out


def used(events: list[dict], namespace: str) -> tuple[set, list]:
    """(what the portal's account was allowed to do in ``namespace``, the
    requests refused there), from the audit events."""
    allowed, refused = set(), []
    for ev in events:
        if ev.get("stage") != "ResponseComplete":
            continue
        user = ev["user"]["username"]
        if user == PORTAL_USER:
            ref = ev.get("objectRef") or {}
            in_ns = ref.get("namespace") == namespace or (ref.get("resource") == "namespaces"
                                                        and ref.get("name") == namespace)
            if not in_ns:
                continue
            key = (ref.get("apiGroup", ""), ref.get("resource", ""), ref.get("subresource", ""), ev["verb"],
                   ref.get("name"))
            code = (ev.get("responseStatus") or {}).get("code", 0)
            if code in (401, 403):
                refused.append(key)
            else:
                allowed.add(key)
        elif user == HARNESS_ADMIN:
            spec = (ev.get("requestObject") or {}).get("spec") or {}
            attrs = spec.get("resourceAttributes") or {}
            if spec.get("user") == PORTAL_USER and attrs.get("namespace") == namespace:
                key = (attrs.get("group", ""), attrs.get("resource", ""), attrs.get("subresource", ""),
                       attrs.get("verb"), attrs.get("name"))
                if ((ev.get("responseObject") or {}).get("status") or {}).get("allowed"):
                    allowed.add(key)
                else:
                    refused.append(key)
    return allowed, refused


def exercised(grant: tuple, allowed: set) -> bool:
    group, resource, sub, verb, name = grant
    return any(a[:4] == (group, resource, sub, verb) and (name is None or a[4] == name) for a in allowed)


@pytest.fixture
def audited(standin):
    """A kube-apiserver of this test's own with the audit policy, an HCAP
    namespace on it (the portal's Role from rbac-rules.yaml), and the
    stand-in in front; stopped by the test itself before it reads the log."""
    from tests.harness.openshift import Upstream

    workdir = Path(tempfile.mkdtemp(prefix="hcapadmin-kube-audit-"))
    kube = KubeAPI(workdir, audit_policy=AUDIT_POLICY).start()
    try:
        install_deploymentconfig_crd(kube)
        namespace = "hcap-least-privilege"
        create_hcap_namespace(kube, namespace)
        standin.forward_to(Upstream(kube.url, str(kube.ca_file), kube.token(ADMIN)))
        real = OpenShiftReal(standin, kube, namespace)
        install_openshift_endpoints(real)
        standin.websocket(EXEC, _exec_ok)
        yield real
    finally:
        standin.forward_to(None)
        kube.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_every_rule_of_the_portal_role_is_used_by_the_portals_operations(audited):
    assert audited.kube.tokens[PORTAL].user == PORTAL_USER
    for name, operation in OPERATIONS.items():
        operation(audited)
    audited.kube.stop()  # the audit log is complete once the server has exited
    events = audited.kube.audit_events()
    allowed, refused = used(events, audited.namespace)
    assert allowed, f"no audited request of {PORTAL_USER} in {audited.namespace}: the check would pass vacuously"
    assert not refused, f"the Role refused the portal's own operations: {refused}"
    unused = [f"{call}: {verb} {group or 'core'}/{resource}{'/' + sub if sub else ''}{' ' + name if name else ''}"
              for (group, resource, sub, verb, name), call in granted(audited.namespace).items()
              if not exercised((group, resource, sub, verb, name), allowed)]
    assert not unused, ("deploy/openshift/rbac-rules.yaml grants what none of the portal's operations used "
                        "(drop the rule, or add the operation that needs it to OPERATIONS):\n" + "\n".join(unused))


def test_the_check_sees_a_rule_nobody_used():
    """The comparison itself: a grant with no matching audited request is
    reported, a resource-named grant needs that name, and a request in
    another namespace does not count."""
    grants = {("", "pods", "", "list", None), ("", "configmaps", "", "get", "leader")}
    allowed = {("", "pods", "", "list", None), ("", "configmaps", "", "get", "other")}
    assert [g for g in sorted(grants, key=str) if not exercised(g, allowed)] == [("", "configmaps", "", "get", "leader")]
    events = [{"stage": "ResponseComplete", "user": {"username": PORTAL_USER}, "verb": "list",
               "objectRef": {"resource": "pods", "namespace": "elsewhere"}, "responseStatus": {"code": 200}}]
    assert used(events, "hcap-x") == (set(), [])


def test_every_openshift_test_runs_the_portal_with_the_role_from_rbac_rules(openshift_real):
    """The harness's namespaces bind the portal's service account to the
    rendered rbac-rules.yaml Role and nothing else, so a call it does not
    list is refused in the tests as in the cluster."""
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    from tests.harness.kubeapi import portal_role_rules

    ns = openshift_real.namespace
    role = openshift_real.kube.admin("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/hcapadmin")
    assert role["rules"] == portal_role_rules(ns)
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"], "resourceNames": [ns]} in role["rules"]
    bindings = openshift_real.kube.admin("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings")
    portal = [b["roleRef"]["name"] for b in bindings["items"]
              if any(s.get("kind") == "ServiceAccount" and s.get("name") == "hcapadmin" for s in b["subjects"])]
    assert portal == ["hcapadmin"]
    core = k8s.CoreV1Api(openshift_real.api_client())
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="deploymentconfig=hcap-server").items]
    for refused in (lambda: core.read_namespaced_pod(SERVER_POD, ns),  # list pods, yes; get, no
                    lambda: core.read_namespaced_config_map("hcap-patroni-config", ns),  # the leader's only
                    lambda: k8s.AppsV1Api(openshift_real.api_client()).read_namespaced_deployment("hcap-server", ns)):
        with pytest.raises(ApiException) as info:
            refused()
        assert info.value.status == 403


# --- the per-user checks (HCAPADMIN_ROLE_ACCESS_REVIEW) ---------------------------------
@pytest.mark.django_db
def test_admin_review_follows_the_server_kind_on_the_real_server(client, settings, real_identities):
    """Where HCAP's server is a Deployment, an admin who may scale that
    Deployment (and nothing about DeploymentConfigs) is an admin; the
    DeploymentConfig check alone would have refused them."""
    import time

    from hcapadmin.accounts.access import role_access_checks
    from hcapadmin.accounts.openshift import OpenShiftAuth
    from tests.harness.kubeapi import bind

    real = real_identities.real
    kube, ns = real.kube, real.namespace
    # a Deployment-only namespace as far as admins are concerned: their DeploymentConfig grant is gone
    kube.admin("DELETE", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/hcap-admins-scale")
    kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "server-deployment-scaler"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["hcap-server"],
                   "verbs": ["get", "patch"]}]})
    bind(kube, ns, "hcap-admins-scale-deployment", "server-deployment-scaler",
         [{"kind": "Group", "name": "hcap-admins", "apiGroup": "rbac.authorization.k8s.io"}])
    auth = OpenShiftAuth(real.url, ca_file=real.ca_file)
    deployment_scale = dict(namespace=ns, verb="patch", group="apps", resource="deployments", subresource="scale",
                            name="hcap-server")
    dc_scale = dict(deployment_scale, group="apps.openshift.io", resource="deploymentconfigs")
    deadline = time.monotonic() + 60  # failure guard: the server's RBAC cache follows the changes by itself
    while not auth.can(real_identities.ADMIN, **deployment_scale) or auth.can(real_identities.ADMIN, **dc_scale):
        assert time.monotonic() < deadline, "the RBAC changes never reached the authorizer"
        time.sleep(0.05)

    settings.ROLE_ACCESS_REVIEW = True
    settings.ROLE_ACCESS_CHECKS = role_access_checks("DeploymentConfig", "hcap-server")
    response = client.post("/login/", {"token": real_identities.ADMIN})
    assert response.status_code == 403 and b"none of your groups grants a role" in response.content

    settings.ROLE_ACCESS_CHECKS = role_access_checks("Deployment", "hcap-server")
    assert client.post("/login/", {"token": real_identities.ADMIN}).status_code == 302
    assert b'data-testid="user-roles">admin<' in client.get("/").content


def test_server_kind_setting_picks_the_admin_check(tmp_path):
    """HCAPADMIN_OPENSHIFT_SERVER_KIND reaches settings.ROLE_ACCESS_CHECKS; an
    unknown kind is a configuration error, not a silent DeploymentConfig."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    code = ("import django, json; from django.conf import settings; django.setup(); "
            "print(json.dumps(settings.ROLE_ACCESS_CHECKS['admin']))")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="hcapadmin.settings", HCAPADMIN_OPENSHIFT_SERVER_KIND="Deployment")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"resource": "deployments"' in out.stdout and '"group": "apps"' in out.stdout
    env["HCAPADMIN_OPENSHIFT_SERVER_KIND"] = "StatefulSet"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "HCAPADMIN_OPENSHIFT_SERVER_KIND" in out.stderr
