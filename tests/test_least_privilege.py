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

The operations are the portal's own code: the OpenShift driver's calls, and
the deploys (ops/deploys.py with the driver's ApiClient, as the deploy jobs
run it, on the templates in tests/fixtures/openshift/): db-prep, the Patroni
redeploy's deletes, db-create, a server rollout with its failure report, a
roll back and a Deployment's restart; and what the restore.openshift runbook
asks of the driver (access checks, the record, the Patroni Secret, scaling
the server and Patroni, suspending and resuming CronJobs), for a server that
is a DeploymentConfig and one that is a Deployment.  OpenShift's own endpoints the
stand-in answers (processedtemplates, DeploymentConfig instantiate, exec)
are authorised by a SubjectAccessReview for the caller, audited like the
portal's own requests.  Two grants the API server checks inside another
request are counted from that request: ``create`` by a server-side apply
that created its object (201), and ``bind`` on a ClusterRole by the creation
of a RoleBinding whose body (logged at the Request level) binds it.

Both of the portal's Roles are checked: the one in HCAP's namespace
(``service_account``) and the one in the tools namespace
(``service_account_tools``, which tests/harness/templates.py renders there).

Why a module of its own rather than a check at the end of the whole suite:
it gives the same answer whatever subset of the suite runs, in whatever
order (``-k``, ``--lf``, one file), and it never has to guess whether "all
the OpenShift tests" ran.  The price: a new driver call needs its operation
added to OPERATIONS below as well as its rule to rbac-rules.yaml, and this
test says so by name when either is missing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from devtools.kube import ADMIN, PORTAL, KubeAPI
from ops.errors import OpsError
from tests.harness.kubeapi import (BACKUP_POD, MERGE, SERVER_POD, OpenShiftReal, create_hcap_namespace,
                                   install_deploymentconfig_crd, install_openshift_endpoints, portal_rule_calls)
from tests.harness.templates import install_build_crds, install_processedtemplates, tools_namespace

EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"
PORTAL_USER = "system:serviceaccount:hcap:hcapadmin"
HARNESS_ADMIN = "hcap-harness-admin"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        # a RoleBinding's body names the ClusterRole it binds (the ``bind`` check)
        {"level": "Request", "users": [PORTAL_USER],
         "resources": [{"group": "rbac.authorization.k8s.io", "resources": ["rolebindings"]}]},
        {"level": "Metadata", "users": [PORTAL_USER]},
        # the stand-in authorising an exec (as a kubelet does), a template's
        # processing or a DeploymentConfig's instantiate (as OpenShift does) for the caller
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


TEMPLATES = Path(__file__).parent / "fixtures" / "openshift"


def _tools(real: OpenShiftReal) -> str:
    return f"{real.namespace}-tools"  # tests/harness/templates.py tools_namespace


def _kube(real: OpenShiftReal):
    """ops.deploys' client as hcapadmin/deploys/service.kube() makes it: the
    OpenShift driver's ApiClient, with the portal's service account token."""
    from ops import deploys

    return deploys.Kube(real.driver().api_client)


def _apply(kube, items, secrets=None):
    from ops import deploys

    return deploys.apply(kube, items, secrets=secrets or {}, log=lambda line: None)


def _db_prep(real: OpenShiftReal):
    """db-prep for a new application name, as the apply job runs it: the
    Secret and ConfigMap do not exist yet (read, dry-run created, created
    once), the image-puller RoleBinding goes to the tools namespace."""
    from ops import deploys

    kube, values = _kube(real), {"APP_NAME": "hcapnew"}
    plan = deploys.preview(kube, deploys.deploy_kind("db-prep"), TEMPLATES, values, target=real.namespace,
                           tools=_tools(real))
    assert {i["action"] for i in plan["items"]} == {deploys.CREATE}, plan["items"]
    # the job processes the templates again for the Secrets' values (hcapadmin/deploys/jobs.py _secrets)
    template = deploys.load_template(TEMPLATES, "patroni.prep.yml")
    processed = deploys.process(kube, real.namespace, template, values)
    secrets = {(real.namespace, o["metadata"]["name"]): o for o in processed if o["kind"] == "Secret"}
    _apply(kube, plan["items"], secrets)


def _redeploy_deletes(real: OpenShiftReal):
    """The Patroni redeploy's deletes (hcapadmin/deploys/service.py
    redeploy_deletes: the PVCs listed by the cluster's label), applied.  The
    namespace first gets what a running Patroni cluster also has: its
    Service and the StatefulSet's volume claims."""
    from hcapadmin.deploys.service import redeploy_deletes

    kube, ns = real.kube, real.namespace
    kube.admin("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hcap-patroni", "labels": {"cluster-name": "hcap-patroni"}},
        "spec": {"selector": {"cluster-name": "hcap-patroni", "role": "master"}, "ports": [{"port": 5432}]}})
    for i in range(2):
        kube.admin("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"postgresql-hcap-patroni-{i}", "labels": {"cluster-name": "hcap-patroni"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    items = redeploy_deletes(_kube(real), ns)
    assert {(i["kind"], i["name"]) for i in items} >= {("StatefulSet", "hcap-patroni"), ("Service", "hcap-patroni"),
                                                        ("PersistentVolumeClaim", "postgresql-hcap-patroni-0"),
                                                        ("ConfigMap", "hcap-patroni-config")}, items
    _apply(_kube(real), items)


def _db_create(real: OpenShiftReal):
    """db-create after the redeploy's deletes: every object is created by
    server-side apply (its dry run first), the build objects in tools."""
    from ops import deploys

    kube = _kube(real)
    plan = deploys.preview(kube, deploys.deploy_kind("db-create"), TEMPLATES, {}, target=real.namespace,
                           tools=_tools(real))
    assert {i["action"] for i in plan["items"]} == {deploys.CREATE}, plan["items"]
    _apply(kube, plan["items"])
    # a second deploy with another value changes the StatefulSet in place
    plan = deploys.preview(kube, deploys.deploy_kind("db-create"), TEMPLATES, {"CPU_LIMIT": "750m"},
                           target=real.namespace, tools=_tools(real))
    assert [i["kind"] for i in plan["items"] if i["action"] == deploys.CHANGE] == ["StatefulSet"], plan["items"]
    _apply(kube, plan["items"])


def _rollout_and_failure_report(real: OpenShiftReal):
    """Rolling out hcap-server (a DeploymentConfig): plan, instantiate, and
    the failed rollout's report on the new revision's pod, which never
    became Ready (its events and last log lines)."""
    from ops import deploys

    kube = _kube(real)
    item = deploys.rollout_plan(kube, real.namespace, "hcap-server")
    assert item["kind"] == "DeploymentConfig"
    wait = deploys.start_rollout(kube, item, "2026-01-01T00:00:00Z")
    # what OpenShift's deployer makes for the new revision
    real.kube.admin("POST", f"/api/v1/namespaces/{real.namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"hcap-server-{wait['revision']}-zz9pl",
            "labels": {"deploymentconfig": "hcap-server", "deployment": f"hcap-server-{wait['revision']}"}},
        "spec": {"containers": [{"name": "hcap-server", "image": "hcap-server:latest"}]}})
    assert deploys.ready_pods(kube, real.namespace, wait) == []
    report = deploys.failure_report(kube, real.namespace, wait)
    assert any(line.startswith(f"Pod hcap-server-{wait['revision']}-zz9pl") for line in report), report


def _rollback(real: OpenShiftReal):
    """Rolling hcap-server back to revision 6: its ReplicationController
    (what OpenShift keeps of each revision) read, the pod template patched
    back, a new revision instantiated."""
    from ops import deploys

    real.kube.admin("POST", f"/api/v1/namespaces/{real.namespace}/replicationcontrollers", {
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "hcap-server-6"},
        "spec": {"replicas": 0, "selector": {"deployment": "hcap-server-6"}, "template": {
            "metadata": {"labels": {"app": "hcap-server", "deployment": "hcap-server-6"}},
            "spec": {"containers": [{"name": "hcap-server", "image": "hcap-server:v6"}]}}}})
    kube = _kube(real)
    item = deploys.rollback_plan(kube, real.namespace, "hcap-server", 6)
    assert item["diff"], item
    deploys.start_rollback(kube, item, "2026-01-01T00:00:01Z")


def _restore_openshift(real: OpenShiftReal):
    """What the restore.openshift runbook (hcapadmin/restores/runbook_openshift.py)
    asks of the driver: the preflight's access checks, the record (the
    server's workload, the CronJobs, Patroni's replicas), the Patroni
    Secret's credentials, the quiesce (server to 0, active CronJobs
    suspended), Patroni down to one member and back, and the put-back."""
    from hcapadmin.restores.runbook_openshift import required_permissions
    from ops.platform.openshift import CronJobState

    driver = real.driver()
    assert driver.missing_permissions(required_permissions(driver)) == []
    server = driver.server_workload()
    assert server.kind == "DeploymentConfig"
    assert driver.missing_permissions(required_permissions(driver, server.kind)) == []
    cronjobs = driver.cronjob_states()
    replicas = driver.replicas_of("StatefulSet", driver.patroni_name)
    assert driver.database_credentials().user == "postgres"
    driver.scale(server.kind, server.name, 0)
    active = [c.name for c in cronjobs if not c.was_suspended]
    assert active
    driver.suspend_cronjobs(active)
    driver.scale("StatefulSet", driver.patroni_name, 1)
    driver.scale("StatefulSet", driver.patroni_name, replicas)
    driver.resume_cronjobs([CronJobState(name, False) for name in active])
    driver.scale(server.kind, server.name, server.replicas)


def _server_as_a_deployment(real: OpenShiftReal):
    """Where HCAP's server is a Deployment (no DeploymentConfig of its name):
    the restore's record and quiesce scale the Deployment, and a rollout
    restarts it by the pod template's restartedAt annotation."""
    from hcapadmin.restores.runbook_openshift import required_permissions
    from ops import deploys

    real.kube.admin("DELETE", f"/apis/apps.openshift.io/v1/namespaces/{real.namespace}/deploymentconfigs/hcap-server")
    driver = real.driver()
    server = driver.server_workload()
    assert server.kind == "Deployment"
    assert driver.missing_permissions(required_permissions(driver, server.kind)) == []
    assert driver.replicas_of(server.kind, server.name) == server.replicas
    driver.scale(server.kind, server.name, 0)
    driver.scale(server.kind, server.name, server.replicas)
    kube = _kube(real)
    item = deploys.rollout_plan(kube, real.namespace, server.name)
    assert item["kind"] == "Deployment"
    deploys.start_rollout(kube, item, "2026-01-01T00:00:02Z")


def _rollback_deployment(real: OpenShiftReal):
    """Rolling the hcap-server Deployment back to revision 1: its
    ReplicaSets listed by the Deployment's selector (what the Deployment
    controller keeps of each revision), the template JSON-patched back."""
    from ops import deploys
    from tests.test_deploys_rollback import make_replicaset

    path = f"/apis/apps/v1/namespaces/{real.namespace}/deployments/hcap-server"
    dep = real.kube.admin("PATCH", path, {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}},
                          content_type=MERGE)
    old = json.loads(json.dumps(dep["spec"]["template"]))
    old["spec"]["containers"][0]["image"] = "hcap-server:v1"
    make_replicaset(real.kube, real.namespace, dep, 1, "r1abc", old)
    kube = _kube(real)
    item = deploys.rollback_plan(kube, real.namespace, "hcap-server", 1)
    assert item["diff"], item
    deploys.start_rollback(kube, item, "2026-01-01T00:00:03Z")


# The portal's OpenShift operations, each as the portal runs it, in this order.
OPERATIONS = {
    "ping (readiness)": lambda real: real.driver().ping(),
    "find the backup pod": lambda real: real.driver().backup_pod(),
    "Patroni cluster state": lambda real: real.driver().cluster_state(),
    "exec through the cluster (kubelet's create check)": lambda real: real.driver().exec(BACKUP_POD, ["true"]),
    "exec as a websocket GET": _exec_direct,
    "OpenShift restore: access checks, record, credentials, quiesce, Patroni scale, put back": _restore_openshift,
    "deploy db-prep (create-only Secret and ConfigMap, image-puller RoleBinding in tools)": _db_prep,
    "Patroni redeploy's deletes (StatefulSet, Service, PVCs, ConfigMaps)": _redeploy_deletes,
    "deploy db-create (ServiceAccount, Service, StatefulSet; BuildConfig, ImageStream in tools)": _db_create,
    "server rollout (DeploymentConfig instantiate) and failure report": _rollout_and_failure_report,
    "server roll back (earlier revision's ReplicationController)": _rollback,
    "a server that is a Deployment: restore's scale, rollout restart": _server_as_a_deployment,
    "a server that is a Deployment: roll back to an earlier revision's ReplicaSet": _rollback_deployment,
}


def granted(namespace: str, section: str = "service_account") -> dict[tuple, str]:
    """{(group, resource, subresource, verb, name or None): call} for every
    verb and resource name the rendered rules of ``section`` grant."""
    out = {}
    for call in portal_rule_calls(namespace, section):
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
                continue
            allowed.add(key)
            if ev["verb"] == "patch" and code == 201:
                # a server-side apply that created the object: authorised as ``create`` too
                allowed.add(key[:3] + ("create", key[4]))
            body = ev.get("requestObject")
            role_ref = (body.get("roleRef") or {}) if isinstance(body, dict) else {}
            if key[:2] == ("rbac.authorization.k8s.io", "rolebindings") and code == 201 \
                    and role_ref.get("kind") == "ClusterRole":
                # creating a RoleBinding is authorised as ``bind`` on the role it binds
                allowed.add(("rbac.authorization.k8s.io", "clusterroles", "", "bind", role_ref.get("name")))
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
        install_build_crds(kube)
        namespace = "hcap-least-privilege"
        create_hcap_namespace(kube, namespace)
        tools_namespace(kube, namespace)
        standin.forward_to(Upstream(kube.url, str(kube.ca_file), kube.token(ADMIN)))
        real = OpenShiftReal(standin, kube, namespace)
        install_openshift_endpoints(real)
        install_processedtemplates(real)
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
    unused = []
    for namespace, section in ((audited.namespace, "service_account"),
                               (_tools(audited), "service_account_tools")):
        allowed, refused = used(events, namespace)
        assert allowed, f"no audited request of {PORTAL_USER} in {namespace}: the check would pass vacuously"
        assert not refused, f"the Role refused the portal's own operations in {namespace}: {refused}"
        unused += [f"{section} {call}: {verb} {group or 'core'}/{resource}{'/' + sub if sub else ''}"
                   f"{' ' + name if name else ''}"
                   for (group, resource, sub, verb, name), call in granted(namespace, section).items()
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


def test_the_check_counts_the_servers_own_checks_of_a_write():
    """An apply that created its object (201) was also authorised as
    ``create``, one that changed it (200) was not; creating a RoleBinding
    was authorised as ``bind`` on the ClusterRole its body names."""
    def event(verb, resource, name, code, group="", body=None):
        ev = {"stage": "ResponseComplete", "user": {"username": PORTAL_USER}, "verb": verb,
              "objectRef": {"apiGroup": group, "resource": resource, "namespace": "t", "name": name},
              "responseStatus": {"code": code}}
        return dict(ev, requestObject=body) if body is not None else ev

    rbac = "rbac.authorization.k8s.io"
    binding = {"kind": "RoleBinding",
               "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "system:image-puller"}}
    allowed, refused = used([event("patch", "services", "a", 201), event("patch", "serviceaccounts", "b", 200),
                             event("patch", "rolebindings", "c", 201, rbac, binding),
                             event("patch", "rolebindings", "d", 403, rbac, dict(binding, roleRef={
                                 "apiGroup": rbac, "kind": "ClusterRole", "name": "admin"}))], "t")
    assert ("", "services", "", "create", "a") in allowed
    assert ("", "serviceaccounts", "", "create", "b") not in allowed
    assert (rbac, "clusterroles", "", "bind", "system:image-puller") in allowed
    assert (rbac, "clusterroles", "", "bind", "admin") not in allowed
    assert refused == [(rbac, "rolebindings", "", "patch", "d")]


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
                    lambda: core.list_namespaced_secret(ns),  # Secrets by name only, never listed
                    lambda: k8s.AppsV1Api(openshift_real.api_client()).list_namespaced_deployment(ns)):  # get only
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
