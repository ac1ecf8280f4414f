"""A real Kubernetes API server (etcd + kube-apiserver, devtools/kube.py)
for the OpenShift-facing tests, started once per test session and only when
a test first asks for it.

    from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)

    def test_x(kube_api):          # the server: url, ca_file, token(key), api_client(key)
    def test_y(openshift_real):    # the stand-in in front of it, and a fresh HCAP namespace

``openshift_real`` is the stand-in OpenShift API (tests/harness/openshift.py)
forwarding everything it does not serve itself to the real server with the
caller's token: identity and access reviews, RBAC, reads, patches, scale and
server-side apply are the real thing; pod exec (and logs) and Patroni's REST
API stay with handlers the test registers, and OpenShift's ``users/~`` and
DeploymentConfig ``instantiate`` are answered from the real server's reviews
and objects (install_openshift_endpoints).

``create_hcap_namespace`` lays out what HCAP runs in one namespace: the
``hcap-server`` Deployment and DeploymentConfig (a CustomResourceDefinition
with a working ``scale`` subresource), the ``hcap-backup`` DeploymentConfig,
the Patroni StatefulSet, its ConfigMaps and Secret, the database CronJobs,
and Pods whose status is written Ready as a kubelet would; plus Roles that
give the portal's service account and the demo users' groups what they need.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.kube import ADMIN, PORTAL, KubeAPI

PORTAL_SA_NAMESPACE = "hcap"
SERVER_POD = "hcap-server-7-abcde"
BACKUP_POD = "hcap-backup-3-x7k2p"
LOG_BACKUP_POD = "hcap-backup-mongo-log-2-q8w4z"  # backup-container for the log database
PATRONI_PODS = ("hcap-patroni-0", "hcap-patroni-1", "hcap-patroni-2")
PATRONI_LEADER = "hcap-patroni-0"
CRONJOBS = ("hcap-archive-withdrawn", "hcap-in-progress-stale-clean", "hcap-open-expired-clean")
DC_CRD = "deploymentconfigs.apps.openshift.io"
MERGE = "application/merge-patch+json"

_names = itertools.count(1)


@pytest.fixture(scope="session")
def kube_api():
    """etcd + kube-apiserver for the session (started on first use)."""
    workdir = Path(tempfile.mkdtemp(prefix="hcapadmin-kube-"))
    kube = KubeAPI(workdir)
    try:
        kube.start()
        install_deploymentconfig_crd(kube)
        yield kube
    finally:
        kube.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class OpenShiftReal:
    standin: object  # tests.harness.openshift.StandIn, forwarding to kube
    kube: KubeAPI
    namespace: str

    @property
    def url(self) -> str:
        return self.standin.url  # what the portal is pointed at

    @property
    def ca_file(self) -> str:
        return str(self.standin.ca_file)

    @property
    def portal_token(self) -> str:
        return self.kube.token(PORTAL)

    def token(self, key: str) -> str:
        return self.kube.token(key)

    def api_client(self, key_or_token: str = PORTAL):
        """A kubernetes ApiClient that talks to the stand-in (and so, for
        everything it does not serve, to the real server) with one token."""
        return self.kube.api_client(key_or_token, host=self.standin.url, ca_file=str(self.standin.ca_file))

    def driver(self, token: str | None = None, **kwargs):
        """The portal's OpenShift driver pointed at the stand-in, with the
        portal's service account token unless told otherwise."""
        from ops.platform.openshift import OpenShiftDriver

        return OpenShiftDriver(api_url=self.url, namespace=self.namespace, token=token or self.portal_token,
                               ca_file=self.ca_file, **kwargs)


@pytest.fixture
def openshift_real(standin, kube_api):
    """The stand-in forwarding to the real API server, and a fresh HCAP
    namespace laid out by create_hcap_namespace()."""
    from tests.harness.openshift import Upstream

    namespace = f"hcap-t{next(_names)}-{int(time.time() * 1000) % 100000}"
    create_hcap_namespace(kube_api, namespace)
    standin.forward_to(Upstream(kube_api.url, str(kube_api.ca_file), kube_api.token(ADMIN)))
    real = OpenShiftReal(standin, kube_api, namespace)
    install_openshift_endpoints(real)
    try:
        yield real
    finally:
        standin.forward_to(None)


# -- OpenShift's own endpoints, answered from the real server's objects ------------
def install_openshift_endpoints(real: OpenShiftReal) -> None:
    """Stand-in routes for the OpenShift-only endpoints the portal may call,
    answered with the real server's authentication, RBAC and objects:

    - ``GET /apis/user.openshift.io/v1/users/~``: the caller's SelfSubjectReview
      as an OpenShift User (its ``groups`` are the caller's own groups, without
      the ``system:`` virtual ones, as OpenShift lists them);
    - ``POST .../deploymentconfigs/{name}/instantiate``: allowed when the caller
      may ``create deploymentconfigs/instantiate``; starts a rollout by raising
      the DeploymentConfig's ``status.latestVersion``, as OpenShift's controller
      does.

    A test's own ``standin.route(...)`` for the same path takes precedence."""
    kube = real.kube

    def users_tilde(req):
        status, answer = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=req.bearer,
                                      body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        if status != 201:
            return status, answer
        info = answer["status"]["userInfo"]
        return 200, {"kind": "User", "apiVersion": "user.openshift.io/v1", "metadata": {"name": info["username"]},
                     "identities": [], "groups": [g for g in info.get("groups", []) if not g.startswith("system:")]}

    def instantiate(req):
        namespace, name = req.match["ns"], req.match["name"]
        refused = real.standin.authorize(req, namespace=namespace, verb="create", group="apps.openshift.io",
                                         resource="deploymentconfigs", subresource="instantiate", name=name)
        if refused is not None:
            return refused
        path = f"/apis/apps.openshift.io/v1/namespaces/{namespace}/deploymentconfigs/{name}"
        status, dc = kube.request("GET", path, token=kube.token(ADMIN))
        if status != 200:
            return status, dc
        latest = int((dc.get("status") or {}).get("latestVersion") or 0) + 1
        dc = kube.admin("PATCH", path + "/status", {"status": {"latestVersion": latest}}, content_type=MERGE)
        return 201, dc

    real.standin.route("GET", r"/apis/user.openshift.io/v1/users/~", users_tilde)
    real.standin.route("POST", r"/apis/apps.openshift.io/v1/namespaces/(?P<ns>[^/]+)/deploymentconfigs/"
                               r"(?P<name>[^/]+)/instantiate", instantiate)


# -- objects ----------------------------------------------------------------------
def install_deploymentconfig_crd(kube: KubeAPI, timeout: float = 120) -> None:
    """DeploymentConfig (apps.openshift.io/v1) as a CustomResourceDefinition
    with the ``scale`` subresource on .spec.replicas / .status.replicas; its
    ``instantiate`` stays with the stand-in (OpenShift's own controller)."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": DC_CRD},
        "spec": {
            "group": "apps.openshift.io", "scope": "Namespaced",
            "names": {"plural": "deploymentconfigs", "singular": "deploymentconfig", "kind": "DeploymentConfig",
                      "listKind": "DeploymentConfigList", "shortNames": ["dc"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "properties": {"replicas": {"type": "integer", "minimum": 0}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "properties": {"replicas": {"type": "integer"},
                                              "selector": {"type": "string"}}}}}},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                         "statusReplicasPath": ".status.replicas",
                                                         "labelSelectorPath": ".status.selector"}},
            }],
        },
    }
    kube.admin("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, expect=(201, 409))
    deadline = time.monotonic() + timeout  # failure guard only
    while True:
        status, answer = kube.request("GET", "/apis/apps.openshift.io/v1", token=kube.token(ADMIN))
        if status == 200 and any(r.get("name") == "deploymentconfigs/scale" for r in answer.get("resources", [])):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"DeploymentConfig CRD not served after {timeout:g}s: {status} {answer}")
        time.sleep(0.1)


def _pod(name: str, labels: dict, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [{"name": labels.get("app", name), "image": f"{labels.get('app', name)}:latest"}]}}


def mark_ready(kube: KubeAPI, namespace: str, name: str, ip: str) -> dict:
    """Write a Pod's status as a kubelet would once its containers run."""
    pod = kube.admin("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                  for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    containers = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "started": True,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}} for c in pod["spec"]["containers"]]
    status = {"phase": "Running", "conditions": conditions, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
              "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now, "containerStatuses": containers}
    return kube.admin("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status},
                      content_type=MERGE)


def _workload(kind: str, api: str, name: str, labels: dict, replicas: int) -> dict:
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": labels.get("app", name), "image": f"{name}:latest"}]}}
    spec = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    if kind == "DeploymentConfig":
        spec["selector"] = labels  # a DeploymentConfig's selector is a plain map
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "labels": {"app": labels["app"]}},
            "spec": spec}


def create_hcap_namespace(kube: KubeAPI, namespace: str, *, db_password: str = "hcap-db-password") -> dict:
    """Create ``namespace`` with HCAP's objects (see the module docstring).
    Returns the names created, for tests to refer to."""
    ns = f"/api/v1/namespaces/{namespace}"
    kube.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": namespace}})
    server_labels = {"app": "hcap-server", "deploymentconfig": "hcap-server"}
    backup_labels = {"app": "hcap-backup", "deploymentconfig": "hcap-backup"}
    log_backup_labels = {"app": "hcap-backup-mongo-log", "deploymentconfig": "hcap-backup-mongo-log"}
    patroni_labels = {"app": "hcap-patroni", "statefulset": "hcap-patroni", "cluster-name": "hcap-patroni",
                      "app.kubernetes.io/name": "patroni"}
    kube.admin("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments",
               _workload("Deployment", "apps/v1", "hcap-server", server_labels, 1))
    for name, labels in (("hcap-server", server_labels), ("hcap-backup", backup_labels),
                         ("hcap-backup-mongo-log", log_backup_labels)):
        kube.admin("POST", f"/apis/apps.openshift.io/v1/namespaces/{namespace}/deploymentconfigs",
                   _workload("DeploymentConfig", "apps.openshift.io/v1", name, labels, 1))
        kube.admin("PATCH", f"/apis/apps.openshift.io/v1/namespaces/{namespace}/deploymentconfigs/{name}/status",
                   {"status": {"replicas": 1, "latestVersion": 7 if name == "hcap-server" else 3,
                               "selector": ",".join(f"{k}={v}" for k, v in labels.items())}}, content_type=MERGE)
    kube.admin("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets",
               _workload("StatefulSet", "apps/v1", "hcap-patroni", patroni_labels, len(PATRONI_PODS)))
    for name in CRONJOBS:
        kube.admin("POST", f"/apis/batch/v1/namespaces/{namespace}/cronjobs", {
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": "0 2 * * *", "suspend": False, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": name, "image": "hcap-server:latest",
                                                          "command": ["npm", "run", name]}]}}}}}})
    kube.admin("POST", f"{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "hcap-patroni-config", "labels": {"cluster-name": "hcap-patroni"},
        "annotations": {"config": json.dumps({"ttl": 30, "loop_wait": 10, "maximum_lag_on_failover": 1048576})}}})
    kube.admin("POST", f"{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "hcap-patroni-leader", "labels": {"cluster-name": "hcap-patroni"},
        "annotations": {"leader": PATRONI_LEADER, "optime": "67108960"}}})
    kube.admin("POST", f"{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hcap-patroni"},
                                         "type": "Opaque", "stringData": {
        "superuser-username": "postgres", "superuser-password": db_password + "-super",
        "replication-username": "replication", "replication-password": db_password + "-repl",
        "db-name": "hcap", "db-username": "hcap", "db-password": db_password}})
    pods = [(SERVER_POD, server_labels, None), (BACKUP_POD, backup_labels, None),
            (LOG_BACKUP_POD, log_backup_labels, None)]
    for i, name in enumerate(PATRONI_PODS):
        role = "master" if name == PATRONI_LEADER else "replica"
        status = {"conn_url": f"postgres://10.1.0.{20 + i}:5432/postgres", "api_url": f"http://10.1.0.{20 + i}:8008/patroni",
                  "state": "running", "role": role, "version": "2.1.7", "xlog_location": 67108960}
        pods.append((name, dict(patroni_labels, role=role), {"status": json.dumps(status)}))
    for i, (name, labels, annotations) in enumerate(pods):
        kube.admin("POST", f"{ns}/pods", _pod(name, labels, annotations))
        mark_ready(kube, namespace, name, f"10.1.0.{10 + i}")
    grant_roles(kube, namespace)
    return {"namespace": namespace, "server_pod": SERVER_POD, "backup_pod": BACKUP_POD, "log_backup_pod": LOG_BACKUP_POD,
            "patroni_pods": PATRONI_PODS, "leader": PATRONI_LEADER}


RBAC_RULES = Path(__file__).resolve().parent.parent.parent / "deploy" / "openshift" / "rbac-rules.yaml"
PORTAL_TEMPLATE = RBAC_RULES.parent / "hcapadmin.yaml"
_TEMPLATE_PARAM = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def portal_rule_calls(namespace: str, section: str = "service_account") -> list[dict]:
    """The calls listed in deploy/openshift/rbac-rules.yaml, their ``rule``'s
    ``${PARAM}`` rendered as ``oc process`` would for ``namespace`` (other
    parameters take the template's defaults, which match the namespace
    create_hcap_namespace lays out)."""
    import yaml

    values = {p["name"]: str(p.get("value", "")) for p in yaml.safe_load(PORTAL_TEMPLATE.read_text())["parameters"]}
    values["NAMESPACE"] = namespace

    def render(node):
        if isinstance(node, dict):
            return {k: render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(v) for v in node]
        if isinstance(node, str):
            return _TEMPLATE_PARAM.sub(lambda m: values[m.group(1)], node)
        return node

    return [dict(call, rule=render(call["rule"])) for call in yaml.safe_load(RBAC_RULES.read_text())[section]]


def portal_role_rules(namespace: str, section: str = "service_account") -> list[dict]:
    """The portal's Role in ``namespace``: one RBAC rule per call listed in
    rbac-rules.yaml (``service_account``, the same rules hcapadmin.yaml's
    Role grants, which tests/test_deploy_manifests.py checks; or
    ``service_account_tools``, the Role in the tools namespace)."""
    rules = []
    for call in portal_rule_calls(namespace, section):
        rule = call["rule"]
        rbac = {"apiGroups": [rule["apiGroup"]], "resources": [rule["resource"]], "verbs": list(rule["verbs"])}
        if rule.get("resourceNames"):
            rbac["resourceNames"] = list(rule["resourceNames"])
        rules.append(rbac)
    return rules


def grant_roles(kube: KubeAPI, namespace: str) -> None:
    """RBAC as HCAP's namespace has it: the portal's service account gets
    exactly the Role built from deploy/openshift/rbac-rules.yaml (so every
    OpenShift test passes only if that Role is enough); the portal's role
    groups may read pods, and hcap-admins may also scale the server, as
    OpenShift's ``view`` and ``edit`` would let them."""
    rules = {
        "hcapadmin": portal_role_rules(namespace),
        "hcap-reader": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        "hcap-scaler": [{"apiGroups": ["apps.openshift.io"], "resources": ["deploymentconfigs/scale"],
                         "resourceNames": ["hcap-server"], "verbs": ["get", "patch"]}],
    }
    for name, rule in rules.items():
        kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
                   {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
                    "rules": rule})
    bindings = {
        "hcapadmin": ("hcapadmin", [{"kind": "ServiceAccount", "name": "hcapadmin",
                                     "namespace": PORTAL_SA_NAMESPACE}]),
        "hcap-readers": ("hcap-reader", [{"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"}
                                         for g in ("hcap-admins", "hcap-approvers", "hcap-auditors",
                                                   "hcap-viewers")]),
        "hcap-admins-scale": ("hcap-scaler", [{"kind": "Group", "name": "hcap-admins",
                                               "apiGroup": "rbac.authorization.k8s.io"}]),
    }
    for name, (role, subjects) in bindings.items():
        bind(kube, namespace, name, role, subjects)


def bind(kube: KubeAPI, namespace: str, name: str, role: str, subjects: list) -> None:
    kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": subjects})


class RealIdentities:
    """The demo users' tokens on the real server, shaped like the stand-in's
    ``OpenShiftIdentities`` (tests/conftest.py): ADMIN (alice, hcap-admins),
    APPROVER (april), AUDITOR (olga), VIEWER (vic), NOROLE (nora).  Identity
    and access reviews are answered by the real server; the token file is
    fixed at start, so a test that revokes a token or changes groups mid-test
    uses the stand-in's ``openshift_identities`` instead."""

    def __init__(self, real: OpenShiftReal):
        self.real = real
        self.standin = real.standin
        self.ADMIN = real.token("alice")
        self.APPROVER = real.token("april")
        self.AUDITOR = real.token("olga")
        self.VIEWER = real.token("vic")
        self.NOROLE = real.token("nora")

    def calls(self) -> list:
        return [r for r in self.standin.requests if "selfsubjectreviews" in r.path or r.path.endswith("/users/~")]


@pytest.fixture
def real_identities(openshift_real, settings):
    """The portal pointed at the stand-in in front of the real server
    (HCAPADMIN_OPENSHIFT_API_URL, CA and namespace): logins are reviewed by
    the real server."""
    from django.core.cache import cache

    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    cache.clear()  # the Bearer review cache
    return RealIdentities(openshift_real)
