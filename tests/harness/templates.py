"""OpenShift's Template processing for the deploy tests, and the tools
namespace beside an HCAP namespace on the real API server.

``POST /apis/template.openshift.io/v1/namespaces/{ns}/processedtemplates`` is
OpenShift's own API (kube-apiserver does not serve it).  The stand-in answers
it as OpenShift does: the caller must be allowed to ``create
processedtemplates`` there (``StandIn.authorize``: the real server says who
the token is, and a SubjectAccessReview whether they may), each parameter
takes its given ``value``, else a value generated from its ``from``
expression (``generate: expression``), else its default; a required
parameter left empty is a 422.  ``${NAME}`` is replaced inside strings and
``${{NAME}}`` stands for a whole value, in the parsed objects: values are
data, never text spliced into YAML.

``install_deploy_apis`` also serves BuildConfig and ImageStream (OpenShift's
build and image APIs) as CustomResourceDefinitions, makes the tools namespace
with the portal's Role there, and the ``system:image-puller`` ClusterRole.
"""

from __future__ import annotations

import json
import random
import re
import string
import time

from devtools.kube import ADMIN

PROCESS = r"/apis/template.openshift.io/v1/namespaces/(?P<ns>[^/]+)/processedtemplates"
_PARAM = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_WHOLE = re.compile(r"^\$\{\{([A-Za-z0-9_]+)\}\}$")
_EXPRESSION = re.compile(r"^\[([^\]]+)\]\{(\d+)\}$")

CRDS = (("build.openshift.io", "buildconfigs", "BuildConfig", "buildconfig"),
        ("image.openshift.io", "imagestreams", "ImageStream", "imagestream"))


def _generate(expression: str) -> str:
    """OpenShift's expression generator for the ``[a-zA-Z0-9]{32}`` shape."""
    m = _EXPRESSION.match(expression or "")
    if not m:
        return "".join(random.choice(string.ascii_letters) for _ in range(16))
    spec, count = m.group(1), int(m.group(2))
    chars = []
    for a, b in re.findall(r"(.)-(.)", spec):
        chars.extend(chr(c) for c in range(ord(a), ord(b) + 1))
    rng = random.SystemRandom()
    return "".join(rng.choice(chars or string.ascii_letters) for _ in range(count))


def _substitute(value, values: dict):
    if isinstance(value, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole and whole.group(1) in values:
            try:
                return json.loads(values[whole.group(1)])
            except ValueError:
                return values[whole.group(1)]
        return _PARAM.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    return value


def process_template(template: dict) -> tuple[int, dict]:
    values = {}
    params = []
    for param in template.get("parameters") or []:
        param = dict(param)
        name = param.get("name")
        if param.get("value") not in (None, ""):
            values[name] = str(param["value"])
        elif param.get("generate") == "expression":
            values[name] = param["value"] = _generate(param.get("from", ""))
        elif param.get("required"):
            return 422, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid",
                         "message": f'Template.template.openshift.io "{template["metadata"]["name"]}" is invalid: '
                                    f"template.parameters[{name}]: Required value: template.parameters[{name}]: "
                                    "parameter is required"}
        else:
            values[name] = ""
        params.append(param)
    processed = dict(template, parameters=params,
                     objects=[_substitute(obj, values) for obj in template.get("objects") or []])
    return 201, processed


def install_processedtemplates(real, calls: list | None = None) -> None:
    """Answer ``processedtemplates`` on the stand-in (see the module docstring);
    each request's Template is appended to ``calls`` when given."""
    from tests.harness.openshift import status_body

    def handler(req):
        refused = real.standin.authorize(req, namespace=req.match["ns"], verb="create", group="template.openshift.io",
                                         resource="processedtemplates")
        if refused is not None:
            return refused
        try:
            template = json.loads(req.body)
        except ValueError:
            return 400, status_body(400, "the body is not JSON", "BadRequest")
        if calls is not None:
            calls.append(template)
        return process_template(template)

    real.standin.route("POST", PROCESS, handler)


def install_build_crds(kube, timeout: float = 120) -> None:
    for group, plural, kind, singular in CRDS:
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.{group}"},
               "spec": {"group": group, "scope": "Namespaced",
                        "names": {"plural": plural, "singular": singular, "kind": kind, "listKind": kind + "List"},
                        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                            "type": "object", "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
                            "subresources": {"status": {}}}]}}
        kube.admin("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, expect=(201, 409))
    deadline = time.monotonic() + timeout  # failure guard only
    for group, plural, _kind, _singular in CRDS:
        while True:
            status, answer = kube.request("GET", f"/apis/{group}/v1", token=kube.token(ADMIN))
            if status == 200 and any(r.get("name") == plural for r in answer.get("resources", [])):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{plural}.{group} not served after {timeout:g}s")
            time.sleep(0.1)


def tools_namespace(kube, namespace: str) -> str:
    """Create ``<namespace>-tools`` with the portal's Role for build objects
    and the image-puller grant (the ``service_account_tools`` rules of
    deploy/openshift/rbac-rules.yaml), and the ``system:image-puller``
    ClusterRole."""
    from tests.harness.kubeapi import PORTAL_SA_NAMESPACE, bind, portal_role_rules

    tools = f"{namespace}-tools"
    kube.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tools}})
    kube.admin("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:image-puller"},
        "rules": [{"apiGroups": ["image.openshift.io"], "resources": ["imagestreams/layers"], "verbs": ["get"]}]},
        expect=(201, 409))
    rules = portal_role_rules(tools, section="service_account_tools")
    kube.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{tools}/roles",
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "hcapadmin-deploy"},
                "rules": rules})
    bind(kube, tools, "hcapadmin-deploy", "hcapadmin-deploy",
         [{"kind": "ServiceAccount", "name": "hcapadmin", "namespace": PORTAL_SA_NAMESPACE}])
    return tools
