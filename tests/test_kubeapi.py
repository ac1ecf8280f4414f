"""The stand-in OpenShift API in front of a real kube-apiserver: identity,
RBAC, scale, server-side apply and exec authorisation come from the real
server; only exec itself (a kubelet's job) is served by the stand-in."""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from hcapadmin.accounts.openshift import OpenShiftAuth, TokenRejected
from ops.errors import Forbidden, NotFound, Unavailable
from tests.harness.kubeapi import (  # noqa: F401  (fixtures)
    BACKUP_POD, PATRONI_LEADER, PATRONI_PODS, SERVER_POD, bind, kube_api, openshift_real,
)

EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"


def wait_until(condition, what: str, timeout: float = 60):
    """Poll ``condition`` until true; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout:g}s")
        time.sleep(0.05)


def test_selfsubjectreview_through_the_standin_is_the_real_servers(openshift_real):
    auth = OpenShiftAuth(openshift_real.url, ca_file=openshift_real.ca_file)
    alice = auth.review(openshift_real.token("alice"))
    assert alice.name == "alice"
    assert set(alice.groups) == {"hcap-admins", "system:authenticated"}
    portal = auth.review(openshift_real.portal_token)
    assert portal.name == "system:serviceaccount:hcap:hcapadmin"
    assert "system:serviceaccounts:hcap" in portal.groups
    with pytest.raises(TokenRejected):
        auth.review("sha256~not-a-token-the-server-knows")
    # no stand-in route answered: the request went through to the real server, caller's token and all
    reviews = [r for r in openshift_real.standin.requests if r.path.endswith("/selfsubjectreviews")]
    assert [r.bearer for r in reviews] == [openshift_real.token("alice"), openshift_real.portal_token,
                                           "sha256~not-a-token-the-server-knows"]


def test_access_reviews_follow_the_namespace_roles(openshift_real):
    auth = OpenShiftAuth(openshift_real.url, ca_file=openshift_real.ca_file)
    scale_server = dict(namespace=openshift_real.namespace, verb="patch", group="apps.openshift.io",
                        resource="deploymentconfigs", subresource="scale", name="hcap-server")
    assert auth.can(openshift_real.token("alice"), **scale_server) is True
    assert auth.can(openshift_real.token("vic"), **scale_server) is False
    assert auth.can(openshift_real.token("alice"), **dict(scale_server, name="hcap-backup")) is False
    assert auth.can(openshift_real.token("vic"), namespace=openshift_real.namespace, verb="get",
                    resource="pods") is True
    assert auth.can(openshift_real.token("nora"), namespace=openshift_real.namespace, verb="get",
                    resource="pods") is False


def test_rbac_refuses_scale_until_a_role_and_binding_grant_it(openshift_real):
    ns = openshift_real.namespace
    apps = k8s.AppsV1Api(openshift_real.api_client("nora"))
    patch = {"spec": {"replicas": 0}}
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment_scale("hcap-server", ns, patch)
    assert info.value.status == 403
    kube = openshift_real.kube
    kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "server-scaler"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]}]})
    bind(kube, ns, "nora-scales", "server-scaler",
         [{"kind": "User", "name": "nora", "apiGroup": "rbac.authorization.k8s.io"}])
    auth = OpenShiftAuth(openshift_real.url, ca_file=openshift_real.ca_file)
    # the server's RBAC cache picks up the new binding by itself; wait for it rather than for a time
    wait_until(lambda: auth.can(openshift_real.token("nora"), namespace=ns, verb="patch", group="apps",
                                resource="deployments", subresource="scale", name="hcap-server"),
               "nora may patch deployments/scale")
    scale = apps.patch_namespaced_deployment_scale("hcap-server", ns, patch)
    assert not scale.spec.replicas  # 0, which the server's JSON leaves out
    live = kube.admin("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/hcap-server")
    assert live["spec"]["replicas"] == 0
    with pytest.raises(ApiException) as info:  # the Role grants scale, not the Deployment itself
        apps.patch_namespaced_deployment("hcap-server", ns, {"spec": {"paused": True}})
    assert info.value.status == 403


def test_server_side_apply_dry_run_leaves_the_live_object_unchanged(openshift_real):
    ns = openshift_real.namespace
    apps = k8s.AppsV1Api(openshift_real.api_client("admin"))  # the harness (the portal's Role has no apply)
    intent = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hcap-server", "namespace": ns},
              "spec": {"replicas": 3}}
    answer = apps.patch_namespaced_deployment("hcap-server", ns, intent, field_manager="hcapadmin", dry_run="All",
                                              force=True, _content_type="application/apply-patch+yaml")
    assert answer.spec.replicas == 3
    assert any(f.manager == "hcapadmin" and f.operation == "Apply" for f in answer.metadata.managed_fields)
    live = apps.read_namespaced_deployment("hcap-server", ns)
    assert live.spec.replicas == 1
    assert not any(f.manager == "hcapadmin" for f in live.metadata.managed_fields or [])
    assert live.metadata.resource_version == apps.read_namespaced_deployment("hcap-server", ns).metadata.resource_version
    applied = apps.patch_namespaced_deployment("hcap-server", ns, intent, field_manager="hcapadmin", force=True,
                                               _content_type="application/apply-patch+yaml")
    assert applied.spec.replicas == 3 and apps.read_namespaced_deployment("hcap-server", ns).spec.replicas == 3


def test_deploymentconfig_scale_subresource(openshift_real):
    ns = openshift_real.namespace
    custom = k8s.CustomObjectsApi(openshift_real.api_client("alice"))
    scale = custom.get_namespaced_custom_object_scale("apps.openshift.io", "v1", ns, "deploymentconfigs", "hcap-server")
    assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1
    assert scale["status"]["selector"] == "app=hcap-server,deploymentconfig=hcap-server"
    custom.patch_namespaced_custom_object_scale("apps.openshift.io", "v1", ns, "deploymentconfigs", "hcap-server",
                                                {"spec": {"replicas": 0}})
    dc = openshift_real.kube.admin("GET", f"/apis/apps.openshift.io/v1/namespaces/{ns}/deploymentconfigs/hcap-server")
    assert dc["spec"]["replicas"] == 0
    with pytest.raises(ApiException) as info:  # alice's Role names hcap-server only
        custom.patch_namespaced_custom_object_scale("apps.openshift.io", "v1", ns, "deploymentconfigs",
                                                    "hcap-backup", {"spec": {"replicas": 0}})
    assert info.value.status == 403


def test_exec_needs_create_pods_exec_on_the_real_server(openshift_real):
    ran = []

    def handler(req, ws):
        ran.append((req.match["pod"], req.query["command"], req.bearer))
        ws.send_channel(1, "ok\n")
        ws.send_channel(3, '{"metadata":{},"status":"Success"}')

    openshift_real.standin.websocket(EXEC, handler)
    # vic may read pods but not exec into them: refused before the stand-in's "kubelet" runs anything
    with pytest.raises(Forbidden):
        openshift_real.driver(token=openshift_real.token("vic")).exec(SERVER_POD, ["true"])
    with pytest.raises(Forbidden):  # an unknown token: 401 from the real server
        openshift_real.driver(token="sha256~unknown").exec(SERVER_POD, ["true"])
    assert ran == []
    result = openshift_real.driver().exec(SERVER_POD, ["echo", "ok"])
    assert (result.returncode, result.stdout) == (0, "ok\n")
    assert ran == [(SERVER_POD, ["echo", "ok"], openshift_real.portal_token)]
    with pytest.raises(NotFound):  # allowed, but there is no such pod
        openshift_real.driver().exec("hcap-server-1-gone", ["true"])
    openshift_real.kube.admin("PATCH", f"/api/v1/namespaces/{openshift_real.namespace}/pods/{SERVER_POD}/status",
                              {"status": {"phase": "Succeeded"}}, content_type="application/merge-patch+json")
    with pytest.raises(Unavailable, match="400"):  # a pod whose containers have ended runs nothing
        openshift_real.driver().exec(SERVER_POD, ["true"])
    assert len(ran) == 1


def test_exec_is_allowed_once_a_role_grants_it(openshift_real):
    ns = openshift_real.namespace
    openshift_real.standin.websocket(EXEC, lambda req, ws: ws.send_channel(3, '{"metadata":{},"status":"Success"}'))
    vic = openshift_real.driver(token=openshift_real.token("vic"))
    with pytest.raises(Forbidden):
        vic.exec(BACKUP_POD, ["true"])
    kube = openshift_real.kube
    kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "exec"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]})
    bind(kube, ns, "vic-exec", "exec", [{"kind": "User", "name": "vic", "apiGroup": "rbac.authorization.k8s.io"}])
    auth = OpenShiftAuth(openshift_real.url, ca_file=openshift_real.ca_file)
    wait_until(lambda: auth.can(openshift_real.token("vic"), namespace=ns, verb="create", resource="pods",
                                subresource="exec", name=BACKUP_POD), "vic may create pods/exec")
    assert vic.exec(BACKUP_POD, ["true"]).returncode == 0


def test_hcap_namespace_pods_are_ready_and_patroni_is_described(openshift_real):
    driver = openshift_real.driver()
    driver.ping()
    assert driver.running_pods("deploymentconfig=hcap-server") == [SERVER_POD]
    assert driver.backup_pod() == BACKUP_POD
    cluster = driver.cluster_state()
    assert cluster.leader == PATRONI_LEADER
    assert [(m.name, m.role, m.state) for m in cluster.members] == [
        (PATRONI_PODS[0], "leader", "running"), (PATRONI_PODS[1], "replica", "running"),
        (PATRONI_PODS[2], "replica", "running")]
    core = k8s.CoreV1Api(openshift_real.api_client())
    pod = k8s.CoreV1Api(openshift_real.api_client("admin")).read_namespaced_pod(SERVER_POD, openshift_real.namespace)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    secret = openshift_real.kube.admin("GET", f"/api/v1/namespaces/{openshift_real.namespace}/secrets/hcap-patroni")
    assert set(secret["data"]) == {"superuser-username", "superuser-password", "replication-username",
                                   "replication-password", "db-name", "db-username", "db-password"}
    # the portal's service account may read the Patroni Secret only (the restore's credentials)
    assert core.read_namespaced_secret("hcap-patroni", openshift_real.namespace).data.keys() == secret["data"].keys()
    for refused in (lambda: core.read_namespaced_secret("hcap-mongodb", openshift_real.namespace),
                    lambda: core.list_namespaced_secret(openshift_real.namespace)):
        with pytest.raises(ApiException) as info:
            refused()
        assert info.value.status == 403
    batch = k8s.BatchV1Api(openshift_real.api_client())
    assert sorted(c.metadata.name for c in batch.list_namespaced_cron_job(openshift_real.namespace).items) == [
        "hcap-archive-withdrawn", "hcap-in-progress-stale-clean", "hcap-open-expired-clean"]


def test_the_standins_own_routes_still_come_first(openshift_real):
    """OpenShift-only endpoints are served by the stand-in; the rest is forwarded."""
    openshift_real.standin.route("GET", r"/apis/user.openshift.io/v1/users/~",
                                 lambda req: (200, {"kind": "User", "metadata": {"name": "from-standin"}}))
    status, answer = openshift_real.kube.request("GET", "/version")
    assert status == 200 and answer["gitVersion"].startswith("v1.")
    core = k8s.CoreV1Api(openshift_real.api_client())
    assert core.read_namespace(openshift_real.namespace).metadata.name == openshift_real.namespace
    import requests

    with requests.Session() as session:
        session.trust_env = False
        me = session.get(openshift_real.url + "/apis/user.openshift.io/v1/users/~", verify=openshift_real.ca_file,
                         headers={"Authorization": "Bearer " + openshift_real.token("alice")}, timeout=30)
        assert me.json()["metadata"]["name"] == "from-standin"
        missing = session.get(openshift_real.url + "/apis/template.openshift.io/v1/namespaces/x/processedtemplates",
                              verify=openshift_real.ca_file, timeout=30,
                              headers={"Authorization": "Bearer " + openshift_real.token("admin")})
        # not registered by this test, so forwarded: the real server has no such API (for a user
        # RBAC would refuse first, with 403, as a real cluster does)
        assert missing.status_code == 404


def test_openshift_only_endpoints_answer_from_the_real_server(openshift_real):
    import requests

    ns = openshift_real.namespace
    with requests.Session() as session:
        session.trust_env = False

        def call(method, path, key):
            return session.request(method, openshift_real.url + path, verify=openshift_real.ca_file, timeout=30,
                                   headers={"Authorization": "Bearer " + openshift_real.token(key)}, json={})

        me = call("GET", "/apis/user.openshift.io/v1/users/~", "alice")
        assert me.status_code == 200
        assert (me.json()["metadata"]["name"], me.json()["groups"]) == ("alice", ["hcap-admins"])
        assert session.get(openshift_real.url + "/apis/user.openshift.io/v1/users/~", verify=openshift_real.ca_file,
                           headers={"Authorization": "Bearer sha256~unknown"}, timeout=30).status_code == 401
        rollout = f"/apis/apps.openshift.io/v1/namespaces/{ns}/deploymentconfigs/hcap-server/instantiate"
        assert call("POST", rollout, "vic").status_code == 403
        started = call("POST", rollout, "admin")
        assert started.status_code == 201 and started.json()["status"]["latestVersion"] == 8
        assert call("POST", rollout.replace("hcap-server", "hcap-gone"), "admin").status_code == 404
    dc = openshift_real.kube.admin("GET", f"/apis/apps.openshift.io/v1/namespaces/{ns}/deploymentconfigs/hcap-server")
    assert dc["status"]["latestVersion"] == 8


def test_etcd_starts_again_on_new_ports_when_its_free_port_was_taken(tmp_path, monkeypatch):
    """A port found free can be taken before etcd binds it (another
    process's connection): etcd exits with "address already in use" and the
    harness starts it again on new ports instead of failing the session."""
    import socket

    from devtools import kube as kube_module
    from devtools.kube import KubeAPI

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: looks free to a connect, cannot be bound again
    port = taken.getsockname()[1]
    real_free_port = kube_module.free_port
    handed = []

    def free_port():
        handed.append(port if not handed else real_free_port())
        return handed[-1]

    monkeypatch.setattr(kube_module, "free_port", free_port)
    api = KubeAPI(tmp_path)
    try:
        api.workdir = tmp_path
        tmp_path.mkdir(exist_ok=True)
        api._start_etcd()
        assert api.etcd_port != port and api.etcd.poll() is None
        assert "address already in use" in (tmp_path / "etcd.log.1").read_text()
    finally:
        api.stop()
        taken.close()
