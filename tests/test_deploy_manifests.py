"""The OpenShift manifests in deploy/openshift/ hold what OpenShift's
restricted-v2 SCC admits and what docs/deploy.md promises: hardened
containers, probes, resources, secrets by name only, network policies, the
Route's TLS, the Role equal to the API calls listed in rbac-rules.yaml, and
settings that pass ``check --deploy``.

The templates are processed here the way ``oc process`` does it (``${NAME}``
inside strings, ``${{NAME}}`` for a whole non-string value), so no cluster
or ``oc`` binary is needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "openshift"
TEMPLATE = DEPLOY / "hcapadmin.yaml"
MIGRATE_TEMPLATE = DEPLOY / "hcapadmin-migrate.yaml"
RBAC_RULES = DEPLOY / "rbac-rules.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

PARAMS = {
    "NAMESPACE": "f0a1b2-prod",
    "IMAGE": "image-registry.openshift-image-registry.svc:5000/f0a1b2-tools/hcapadmin@sha256:" + "0" * 64,
    "HOSTNAME": "hcapadmin-prod.apps.example.gov.bc.ca",
    "ENVIRONMENT_NAME": "PROD",
    "OPENSHIFT_API_URL": "https://api.example.gov.bc.ca:6443",
    "API_SERVER_CIDR": "142.34.0.0/24",
}
SECRET_MOUNT = "/var/run/secrets/hcapadmin"

_PARAM = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_WHOLE = re.compile(r"^\$\{\{([A-Za-z0-9_]+)\}\}$")


def process(path: Path, params: dict) -> list[dict]:
    """``oc process -f path -p ...``: the template's objects with parameters
    substituted; a required parameter without a value is an error."""
    template = yaml.safe_load(path.read_text())
    assert template["kind"] == "Template"
    values = {}
    for param in template.get("parameters", []):
        assert "generate" not in param, "generated parameters would put secrets into the template"
        name = param["name"]
        if name in params:
            values[name] = str(params[name])
        elif "value" in param:
            values[name] = str(param["value"])
        elif param.get("required"):
            raise AssertionError(f"{path.name}: required parameter {name} has no value")
        else:
            values[name] = ""

    def sub(node):
        if isinstance(node, dict):
            return {sub(k): sub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v) for v in node]
        if isinstance(node, str):
            whole = _WHOLE.match(node)
            if whole:
                return yaml.safe_load(values[whole.group(1)])
            return _PARAM.sub(lambda m: values[m.group(1)], node)
        return node

    return sub(template["objects"])


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return process(TEMPLATE, PARAMS) + process(MIGRATE_TEMPLATE, {"IMAGE": PARAMS["IMAGE"]})


def of_kind(objects, kind) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"].get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name}"
    return found[0]


def pod_specs(objects) -> list[tuple[str, dict, dict]]:
    """(workload name, pod template metadata, pod spec) of every workload."""
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "DeploymentConfig"):
            name = o["metadata"].get("name") or o["metadata"].get("generateName")
            out.append((name, o["spec"]["template"]["metadata"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "CronJob":
            tpl = o["spec"]["jobTemplate"]["spec"]["template"]
            out.append((o["metadata"]["name"], tpl["metadata"], tpl["spec"]))
    return out


def containers(objects):
    for name, _meta, spec in pod_specs(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield name, spec, c


def readme_settings() -> dict[str, bool]:
    """{name: is_secret} from README.md's settings table (as tests/test_readme.py reads it)."""
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)`( \(\*secret\*\))? \|", (ROOT / "README.md").read_text(), flags=re.M)
    return {name: bool(secret) for name, secret in rows}


def selects(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


# --- the templates themselves -----------------------------------------------------------
def test_templates_process_and_leave_no_placeholder(objects):
    text = json.dumps(objects)
    assert "${" not in text
    kinds = sorted(o["kind"] for o in objects)
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget",
                 "Service", "Route", "NetworkPolicy", "Job"):
        assert kind in kinds, kind
    with pytest.raises(AssertionError, match="required parameter NAMESPACE"):
        process(TEMPLATE, {k: v for k, v in PARAMS.items() if k != "NAMESPACE"})


def test_no_secret_objects_and_no_secret_values(objects):
    """Secrets are created by hand (docs/deploy.md) and only named here."""
    assert of_kind(objects, "Secret") == []
    settings = readme_settings()
    secret_names = {n for n, s in settings.items() if s}
    assert {"SECRET_KEY", "HCAPADMIN_AUDIT_KEY", "DATABASE_URL"} <= secret_names
    for path in (TEMPLATE, MIGRATE_TEMPLATE):
        raw = path.read_text()
        assert "kind: Secret" not in raw
        assert not re.search(r"://[^/\s:@]+:[^/\s@$]+@", raw), f"{path.name}: a URL with a password"
        assert "sha256~" not in raw
    for cm in of_kind(objects, "ConfigMap"):
        leaked = sorted(set(cm["data"]) & {n for name in secret_names for n in (name, name + "_FILE")})
        assert not leaked, f"secret settings in ConfigMap {cm['metadata']['name']}: {leaked}"
    for workload, spec, c in containers(objects):
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for name in secret_volumes.values():
            assert name in ("hcapadmin",), f"{workload}: secret volume names {name!r}"
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        for var in c.get("env", []):
            base = var["name"][:-5] if var["name"].endswith("_FILE") else var["name"]
            if var["name"].endswith("_FILE"):
                assert settings.get(base) is True, f"{workload}: {var['name']} is not a documented secret's _FILE"
                assert var["value"] == f"{SECRET_MOUNT}/{base}"
                assert any(mounts.get(v) == SECRET_MOUNT for v in secret_volumes), f"{workload}: secret not mounted"
            elif base in secret_names or base == "REDIS_PASSWORD":
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], f"{workload}: {var['name']} literal"
            else:
                assert "value" not in var or not settings.get(base), f"{workload}: {var['name']} belongs in the ConfigMap"
    # Every secret the settings need outside the sandbox reaches web, worker and migrate.
    needed = {"SECRET_KEY", "HCAPADMIN_AUDIT_KEY", "HCAPADMIN_TOKEN_KEY", "DATABASE_URL", "REDIS_URL", "MONGO_URL",
              "HCAPADMIN_MANAGED_DATABASE_URL"}
    for workload, _spec, c in containers(objects):
        if c["name"] in ("web", "worker", "migrate"):
            assert {v["name"][:-5] for v in c["env"] if v["name"].endswith("_FILE")} == needed, workload


def test_configmap_keys_are_documented_settings(objects):
    settings = readme_settings()
    cm = named(objects, "ConfigMap", "hcapadmin-config")
    undocumented = sorted(k for k in cm["data"] if k not in settings)
    assert not undocumented, f"ConfigMap keys missing from README's settings table: {undocumented}"
    assert all(isinstance(v, str) for v in cm["data"].values())
    assert cm["data"]["HCAPADMIN_PLATFORM"] == "openshift"
    assert cm["data"]["HCAPADMIN_OPENSHIFT_NAMESPACE"] == PARAMS["NAMESPACE"]
    assert cm["data"]["ALLOWED_HOSTS"] == PARAMS["HOSTNAME"]
    assert cm["data"]["CSRF_TRUSTED_ORIGINS"] == "https://" + PARAMS["HOSTNAME"]
    for flag in ("HCAPADMIN_DEBUG", "HCAPADMIN_SANDBOX", "HCAPADMIN_LOCAL_ACCOUNTS"):
        assert cm["data"][flag] == "false"
    assert cm["data"]["HCAPADMIN_HTTPS"] == "true"
    for workload, _spec, c in containers(objects):
        if c["name"] in ("web", "worker", "migrate"):
            assert c["envFrom"] == [{"configMapRef": {"name": "hcapadmin-config"}}], workload


# --- pods ---------------------------------------------------------------------------------
def test_every_container_is_admitted_by_restricted_v2(objects):
    seen = []
    for workload, spec, c in containers(objects):
        seen.append(c["name"])
        where = f"{workload}/{c['name']}"
        pod_sc = spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        for context in (pod_sc, sc):
            for fixed in ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"):
                assert fixed not in context, f"{where}: {fixed} is set (OpenShift assigns the UID)"
        assert sc.get("privileged") in (None, False), where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities") == {"drop": ["ALL"]}, where
        assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
        assert pod_sc.get("runAsNonRoot") is True, where
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert all("hostPath" not in v for v in volumes.values()), where
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp is not an emptyDir"
        for port in c.get("ports", []):
            assert port["containerPort"] >= 1024, f"{where}: a privileged port"
    assert sorted(seen) == ["migrate", "redis", "web", "worker"]


def test_probes(objects):
    web = named(objects, "Deployment", "hcapadmin-web")["spec"]["template"]["spec"]["containers"][0]
    host = [{"name": "Host", "value": PARAMS["HOSTNAME"]}]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = web[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http"), probe
        # The kubelet's own Host (the pod address) is not in ALLOWED_HOSTS: Django answers 400.
        assert get["httpHeaders"] == host, probe
        assert web[probe]["timeoutSeconds"] >= 3, probe
    # /readyz answers within 3 s by design; the probe waits longer than that.
    assert web["readinessProbe"]["timeoutSeconds"] > 3
    startup = web["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert any(p["containerPort"] == 8080 and p["name"] == "http" for p in web["ports"])
    redis = named(objects, "Deployment", "hcapadmin-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["livenessProbe"]["tcpSocket"] and redis["readinessProbe"]["tcpSocket"]
    # The worker serves no port (see the comment in the template); a dead
    # worker process ends its container.
    worker = named(objects, "Deployment", "hcapadmin-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["python", "manage.py", "jobs_worker"]


def test_resources_are_set_everywhere(objects):
    for workload, _spec, c in containers(objects):
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            assert set(res.get(kind) or {}) >= {"cpu", "memory"}, f"{workload}/{c['name']}: {kind}"


def test_replicas_pdb_and_selectors(objects):
    web = named(objects, "Deployment", "hcapadmin-web")
    worker = named(objects, "Deployment", "hcapadmin-worker")
    redis = named(objects, "Deployment", "hcapadmin-redis")
    assert web["spec"]["replicas"] == 2 and worker["spec"]["replicas"] == 1 and redis["spec"]["replicas"] == 1
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == PARAMS["IMAGE"]
    assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == PARAMS["IMAGE"]
    assert "command" not in web["spec"]["template"]["spec"]["containers"][0]  # the image's gunicorn
    for d in (web, worker, redis):
        assert selects(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    pdb = named(objects, "PodDisruptionBudget", "hcapadmin-web")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"], web["spec"]["template"]["metadata"]["labels"])
    assert not selects(pdb["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
    for svc, target in (("hcapadmin-web", web), ("hcapadmin-redis", redis)):
        service = named(objects, "Service", svc)
        assert selects({"matchLabels": service["spec"]["selector"]}, target["spec"]["template"]["metadata"]["labels"])
    # Only web and worker carry the service account's token.
    for name, _meta, spec in pod_specs(objects):
        uses_api = name in ("hcapadmin-web", "hcapadmin-worker")
        assert spec.get("automountServiceAccountToken") is uses_api, name
        if uses_api:
            assert spec["serviceAccountName"] == "hcapadmin"


def test_route_is_edge_tls_with_hsts(objects):
    route = named(objects, "Route", "hcapadmin")
    assert route["spec"]["host"] == PARAMS["HOSTNAME"]
    assert route["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert route["spec"]["to"]["name"] == "hcapadmin-web"
    hsts = route["metadata"]["annotations"]["haproxy.router.openshift.io/hsts_header"]
    max_age = re.search(r"max-age=(\d+)", hsts)
    assert max_age and int(max_age.group(1)) >= 31536000
    assert "includeSubDomains" in hsts


def test_network_policies(objects):
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    labels = {n: named(objects, "Deployment", n)["spec"]["template"]["metadata"]["labels"]
              for n in ("hcapadmin-web", "hcapadmin-worker", "hcapadmin-redis")}
    labels["migrate"] = of_kind(objects, "Job")[0]["spec"]["template"]["metadata"]["labels"]

    def ingress_rules(pod):
        return [r for p in policies.values() if "Ingress" in p["policyTypes"] and selects(p["podSelector"], pod)
                for r in p.get("ingress", [])]

    def egress_rules(pod):
        selected = [p for p in policies.values() if "Egress" in p["policyTypes"] and selects(p["podSelector"], pod)]
        assert selected, "no egress policy selects the pod"
        return [r for p in selected for r in p.get("egress", [])]

    # In: the router only, to web's port; nothing to the worker; web and worker to Redis.
    web_in = ingress_rules(labels["hcapadmin-web"])
    assert len(web_in) == 1
    assert web_in[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert all("namespaceSelector" in peer and "podSelector" not in peer and "ipBlock" not in peer
               for peer in web_in[0]["from"])
    assert {"policy-group.network.openshift.io/ingress": ""} in [p["namespaceSelector"]["matchLabels"]
                                                                  for p in web_in[0]["from"]]
    assert any(selects(p["podSelector"], labels["hcapadmin-worker"]) and p.get("ingress") == []
               for p in policies.values() if "Ingress" in p["policyTypes"])
    assert ingress_rules(labels["hcapadmin-worker"]) == []
    redis_in = ingress_rules(labels["hcapadmin-redis"])
    assert len(redis_in) == 1 and redis_in[0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    (peer,) = redis_in[0]["from"]
    assert selects(peer["podSelector"], labels["hcapadmin-web"]) and selects(peer["podSelector"], labels["hcapadmin-worker"])
    assert not selects(peer["podSelector"], labels["migrate"])
    assert egress_rules(labels["hcapadmin-redis"]) == []

    # Out: DNS, the API server, PostgreSQL, MongoDB, Redis; nothing else.
    for pod in ("hcapadmin-web", "hcapadmin-worker", "migrate"):
        rules = egress_rules(labels[pod])
        by_port = {}
        for rule in rules:
            assert rule.get("to"), "an egress rule without peers allows everywhere"
            assert rule.get("ports"), "an egress rule without ports allows every port"
            for port in rule["ports"]:
                peers = by_port.setdefault(port["port"], [])
                peers.extend(peer for peer in rule["to"] if peer not in peers)
        assert set(by_port) == {53, 5353, 6443, 5432, 27017, 6379}, pod
        assert by_port[53] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}}}]
        assert by_port[6443] == [{"ipBlock": {"cidr": PARAMS["API_SERVER_CIDR"]}}]
        assert by_port[5432] == [{"podSelector": {"matchLabels": {"cluster-name": "hcap-patroni"}}},
                                 {"podSelector": {"matchLabels": {"cluster-name": "hcapadmin-patroni"}}}]
        assert by_port[27017] == [{"podSelector": {"matchLabels": {"name": "hcap-mongodb"}}}]
        (redis_peer,) = by_port[6379]
        assert selects(redis_peer["podSelector"], labels["hcapadmin-redis"])
        assert not selects(redis_peer["podSelector"], labels["hcapadmin-web"])


# --- the Role: exactly the API calls the OpenShift driver makes -------------------------------
def _rule_set(rules) -> set[tuple]:
    out = set()
    for r in rules:
        groups = r.get("apiGroups", [r.get("apiGroup")])
        resources = r.get("resources", [r.get("resource")])
        names = tuple(sorted(r.get("resourceNames") or ()))
        for g in groups:
            for res in resources:
                for verb in r["verbs"]:
                    out.add((g, res, verb, names))
    return out


def rbac_rules(params: dict | None = None) -> dict:
    """deploy/openshift/rbac-rules.yaml with the template's parameters filled in."""
    params = params or PARAMS
    template = yaml.safe_load(TEMPLATE.read_text())
    values = {p["name"]: str(params.get(p["name"], p.get("value", ""))) for p in template["parameters"]}
    data = yaml.safe_load(RBAC_RULES.read_text())
    for section in data.values():
        for call in section:
            call["rule"]["resourceNames"] = [_PARAM.sub(lambda m: values[m.group(1)], n)
                                             for n in call["rule"].get("resourceNames", [])]
    return data


def test_role_grants_exactly_the_listed_calls(objects):
    data = rbac_rules()
    listed = _rule_set(c["rule"] for c in data["service_account"])
    role = named(objects, "Role", "hcapadmin")
    assert _rule_set(role["rules"]) == listed
    assert ("", "namespaces", "get", (PARAMS["NAMESPACE"],)) in listed
    assert ("", "configmaps", "get", ("hcap-patroni-leader",)) in listed
    for r in role["rules"]:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
    # The user-token calls are the cluster's to grant, never the portal's Role.
    assert not _rule_set(c["rule"] for c in data["user_token"]) & _rule_set(role["rules"])
    binding = named(objects, "RoleBinding", "hcapadmin")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hcapadmin"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hcapadmin", "namespace": PARAMS["NAMESPACE"]}]
    named(objects, "ServiceAccount", "hcapadmin")



def test_tools_namespace_role_grants_exactly_the_listed_tools_calls():
    """hcapadmin-tools.yaml's Role (in the tools namespace) grants exactly the
    ``service_account_tools`` rules, and binds them to the portal's ServiceAccount."""
    tools = process(DEPLOY / "hcapadmin-tools.yaml", {"NAMESPACE": PARAMS["NAMESPACE"],
                                                       "TOOLS_NAMESPACE": "f0a1b2-tools"})
    role = named(tools, "Role", "hcapadmin-deploys")
    assert role["metadata"]["namespace"] == "f0a1b2-tools"
    assert _rule_set(role["rules"]) == _rule_set(c["rule"] for c in rbac_rules()["service_account_tools"])
    binding = named(tools, "RoleBinding", "hcapadmin-deploys")
    assert binding["metadata"]["namespace"] == "f0a1b2-tools"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hcapadmin-deploys"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hcapadmin", "namespace": PARAMS["NAMESPACE"]}]

# Kubernetes API calls the code makes whose rules are still to be written in
# rbac-rules.yaml (a new call being built); the test fails once one is listed.
PENDING_CALLS: set[str] = set()
_K8S_METHOD = re.compile(r"^(?:read|list|watch|patch|create|delete|replace|get|connect_[a-z]+)_(?:namespaced_|namespace$|self_subject_)")


def kubernetes_calls(paths) -> set[str]:
    """The kubernetes client API methods named in ``paths`` (any variable:
    ``core.x``, ``apps.x``, ``self.core().x``, or a method passed along)."""
    import ast

    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _K8S_METHOD.match(node.attr):
                found.add(node.attr)
    return found


def test_rbac_rules_name_every_kubernetes_call_of_the_portal():
    """Each kubernetes client method the portal's code (ops/ and hcapadmin/)
    names is listed in rbac-rules.yaml, and nothing else is (a new call
    without a rule would be refused in the cluster)."""
    paths = [p for d in ("ops", "hcapadmin") for p in (ROOT / d).rglob("*.py")]
    called = kubernetes_calls(paths)
    assert {"read_namespace", "list_namespaced_pod", "connect_get_namespaced_pod_exec"} <= called, \
        "the pattern still finds the driver's calls"
    entries = [c["call"] for section in ("service_account", "service_account_tools", "service_account_default")
               for c in rbac_rules()[section]]
    # Kubernetes client methods are listed as "<Class>Api.<method>"; the deploy
    # module's raw requests (ops/deploys.py) as "deploys.<function>".
    listed = {call.split()[0].split(".")[-1] for call in entries if re.match(r"[A-Za-z0-9]+Api\.", call)}
    assert not PENDING_CALLS & listed, f"listed now; drop from PENDING_CALLS: {sorted(PENDING_CALLS & listed)}"
    missing, unused = sorted(called - PENDING_CALLS - listed), sorted(listed - called)
    assert not missing and not unused, f"called but not in rbac-rules.yaml: {missing}; listed, never called: {unused}"


def test_rbac_rules_deploy_entries_name_functions_that_exist():
    """The ``deploys.<function>`` entries of rbac-rules.yaml name functions
    (or methods) defined in ops/deploys.py or hcapadmin/deploys/, so a renamed
    caller cannot leave a rule behind it describes wrongly."""
    import ast

    defined = set()
    for path in [ROOT / "ops" / "deploys.py", *(ROOT / "hcapadmin" / "deploys").glob("*.py")]:
        defined |= {node.name for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    named = set()
    for section in ("service_account", "service_account_tools"):
        for call in rbac_rules()[section]:
            named |= {m.group(1) for m in re.finditer(r"\b(?:deploys|service)\.([a-z_]+)", call["call"])}
    assert named, "the deploy entries are still found"
    assert not named - defined, f"rbac-rules.yaml names functions that do not exist: {sorted(named - defined)}"
    auth_source = (ROOT / "hcapadmin" / "accounts" / "openshift.py").read_text()
    paths = set(re.findall(r'self\._call\("(?:GET|POST)", "([^"]+)"', auth_source))
    assert paths == {c["request"].split()[1] for c in rbac_rules()["user_token"]}


# --- settings: check --deploy with the ConfigMap and dummy secrets ----------------------------
def test_configmap_settings_pass_check_deploy(objects, tmp_path):
    cm = named(objects, "ConfigMap", "hcapadmin-config")["data"]
    web = named(objects, "Deployment", "hcapadmin-web")["spec"]["template"]["spec"]["containers"][0]
    dummies = {
        "SECRET_KEY": "dummy-" + "Zq8#x9!vB2@nM4$rT6&yU1*" * 3,
        "HCAPADMIN_AUDIT_KEY": "2026-11:" + "d" * 64,
        "HCAPADMIN_TOKEN_KEY": "dummy-token-key-" + "t" * 40,
        "DATABASE_URL": "postgres://hcapadmin:dummy@hcapadmin-patroni:5432/hcapadmin",
        "REDIS_URL": "redis://:dummy@hcapadmin-redis:6379/0",
        "MONGO_URL": "mongodb://reader:dummy@hcap-mongodb:27017/logs",
        "HCAPADMIN_MANAGED_DATABASE_URL": "postgres://reader:dummy@hcap-patroni:5432/hcap",
    }
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("HCAPADMIN_") and k not in dummies and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    environ.update(cm)
    for var in web["env"]:
        name = var["name"][:-5]
        path = tmp_path / name
        path.write_text(dummies[name] + "\n")
        environ[var["name"]] = str(path)  # as mounted at /var/run/secrets/hcapadmin/<name>
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


# --- docs/deploy.md: the OpenShift permissions each portal role expects -------------------------
def role_table() -> str:
    """The table docs/deploy.md shows, from settings.ROLE_ACCESS_CHECKS and
    settings.ROLE_GROUPS (their defaults) and accounts/principal.py's PERMISSIONS."""
    from django.conf import settings

    from hcapadmin.accounts.principal import PERMISSIONS, ROLES

    lines = ["| Portal role | Default group | Portal permissions | OpenShift access review (HCAPADMIN_ROLE_ACCESS_REVIEW) |",
             "|---|---|---|---|"]
    for role in ROLES:
        perms = ", ".join(f"`{p}`" for p, roles in PERMISSIONS.items() if role in roles)
        checks = []
        for check in settings.ROLE_ACCESS_CHECKS[role]:
            resource = check["resource"] + (f"/{check['subresource']}" if check.get("subresource") else "")
            group = check.get("group") or "core"
            name = f" `{check['name']}`" if check.get("name") else ""
            checks.append(f"`{check['verb']}` `{resource}` ({group}){name} in the namespace")
        groups = ", ".join(f"`{g}`" for g in settings.ROLE_GROUPS[role])
        lines.append(f"| {role} | {groups} | {perms} | {'; '.join(checks)} |")
    return "\n".join(lines)


def test_deploy_doc_role_table_matches_the_settings():
    from django.conf import settings

    # the defaults the table shows (the harness sets neither)
    assert settings.OPENSHIFT_SERVER_NAME == "hcap-server" and settings.ROLE_GROUPS["admin"] == ["hcap-admins"]
    text = DEPLOY_DOC.read_text()
    match = re.search(r"<!-- role-table:start -->\n(.*?)\n<!-- role-table:end -->", text, flags=re.S)
    assert match, "docs/deploy.md lost its role table markers"
    expected = role_table()
    assert match.group(1).strip() == expected, "replace the table in docs/deploy.md with:\n" + expected
    # the other server kind, which the text under the table describes
    from hcapadmin.accounts.access import role_access_checks

    admin = role_access_checks("Deployment", "hcap-server")["admin"][0]
    assert f"`{admin['verb']}` `{admin['resource']}/{admin['subresource']}` ({admin['group']})" in text


def test_deploy_doc_names_every_template_parameter():
    text = DEPLOY_DOC.read_text()
    for path in (TEMPLATE, MIGRATE_TEMPLATE):
        for param in yaml.safe_load(path.read_text())["parameters"]:
            assert f"`{param['name']}`" in text, f"docs/deploy.md does not explain {param['name']}"
