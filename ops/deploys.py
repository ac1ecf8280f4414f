"""Deploying HCAP's OpenShift Templates the way its Makefile does, but shown
before anything changes.

HCAP deploys with ``oc process -f <template> -p NAME=value | oc apply -f -``
(``oc create`` for ``db-prep``, so generated passwords are never replaced).
This module does the same through the API, in two halves:

* ``preview``: each template is processed by OpenShift itself
  (``POST .../processedtemplates``; parameter values travel as data in the
  Template's ``parameters``, never spliced into YAML text), then every
  resulting object is compared with the live one through a server-side dry
  run (server-side apply, field manager ``hcapadmin``, ``dryRun=All``).  The
  result is a list of plan items: created, changed (with a field-level
  diff), unchanged, kept (create-only objects that already exist) or deleted,
  with warnings and each live object's ``resourceVersion``.
* ``apply``: first re-reads every object and refuses the whole plan when any
  ``resourceVersion`` moved since the preview (``Conflict``: make a new
  preview), then creates, applies and deletes, with the previewed
  ``resourceVersion`` as the server's own precondition, so a change in
  between is refused by the API server too.

Build objects (BuildConfig, ImageStream) go to the tools namespace, the rest
to the target namespace.  Secret values never appear in a plan: a Secret's
diff says which keys change, never to what, and plans keep Secret objects
without their data (the job processes the templates again for them).

Plain Python: the caller hands in a kubernetes ``ApiClient`` (the OpenShift
driver's, with the portal's service account).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import yaml

from ops.errors import Conflict, Forbidden, Invalid, NotFound, OpsError, Timeout, Unavailable

FIELD_MANAGER = "hcapadmin"
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
PARAM_VALUE_MAX = 4096
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
REDACTED = "(secret value, not shown)"

# kind -> (plural, namespaced); the apiVersion comes from the object itself.
RESOURCES = {
    "Secret": "secrets", "ConfigMap": "configmaps", "Service": "services", "ServiceAccount": "serviceaccounts",
    "PersistentVolumeClaim": "persistentvolumeclaims", "StatefulSet": "statefulsets", "Deployment": "deployments",
    "DeploymentConfig": "deploymentconfigs", "BuildConfig": "buildconfigs", "ImageStream": "imagestreams",
    "Role": "roles", "RoleBinding": "rolebindings", "CronJob": "cronjobs", "NetworkPolicy": "networkpolicies",
    "Route": "routes", "PodDisruptionBudget": "poddisruptionbudgets", "Endpoints": "endpoints",
}
BUILD_KINDS = ("BuildConfig", "ImageStream")  # go to the tools namespace

# Fields that say nothing about what the object is: never part of a diff.
IGNORED = (
    "metadata.managedFields", "metadata.resourceVersion", "metadata.generation", "metadata.uid",
    "metadata.creationTimestamp", "metadata.selfLink", "metadata.namespace", "status",
    "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
)

# Actions of a plan item.
# REFUSED: the server's dry run refused the object (an immutable field, say);
# a plan holding one cannot be confirmed.
CREATE, CHANGE, UNCHANGED, KEEP, DELETE, REFUSED = "create", "change", "unchanged", "keep", "delete", "refused"


# -- what a deploy is --------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateUse:
    file: str  # in the templates folder
    create_only: bool = False  # `oc create`: an existing object is kept as it is
    fixed: tuple = ()  # (parameter, setting) pairs the portal sets itself: "tools_namespace"


@dataclass(frozen=True)
class DeployKind:
    name: str
    title: str
    templates: tuple
    image_puller: bool = False  # grant system:image-puller in tools to the target's hcap-patroni SA
    destructive: bool = False


KINDS = {
    "db-prep": DeployKind("db-prep", "Database prep (secrets and configuration)",
                          (TemplateUse("patroni.prep.yml", create_only=True),), image_puller=True),
    "db-create": DeployKind("db-create", "Database create (Patroni build and StatefulSet)",
                            (TemplateUse("patroni.bc.yml"),
                             TemplateUse("patroni.dc.yml", fixed=(("IMAGE_NAMESPACE", "tools_namespace"),)))),
}


def deploy_kind(name: str) -> DeployKind:
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise Invalid(f"unknown deploy kind {name!r}: one of {', '.join(KINDS)}") from None


# -- templates --------------------------------------------------------------------------------
@dataclass
class Parameter:
    name: str
    display_name: str = ""
    description: str = ""
    value: str = ""  # the template's default
    required: bool = False
    generated: bool = False  # OpenShift generates it (a password): never shown, never asked for
    fixed: str = ""  # set by the portal (e.g. the tools namespace), not editable
    templates: list = field(default_factory=list)


def load_template(folder: str | Path, file: str) -> dict:
    """One OpenShift Template from the templates folder (YAML or JSON)."""
    if not folder:
        raise Unavailable("No templates folder is configured (HCAPADMIN_TEMPLATES_DIR): HCAP keeps its templates "
                          "in its repository's openshift/ folder.")
    path = Path(folder) / file
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"template {file} is not in the templates folder {folder}") from None
    except OSError as exc:
        raise Unavailable(f"template {file} cannot be read: {exc.strerror}") from None
    try:
        template = yaml.safe_load(text)
    except yaml.YAMLError:
        raise Invalid(f"template {file} is not valid YAML") from None
    if not isinstance(template, dict) or template.get("kind") != "Template":
        raise Invalid(f"{file} is not an OpenShift Template (kind: Template)")
    if not isinstance(template.get("objects", []), list) or not isinstance(template.get("parameters", []), list):
        raise Invalid(f"template {file}: objects and parameters must be lists")
    return template


def parameters(kind: DeployKind, folder, settings: dict) -> list[Parameter]:
    """The parameters of every template of ``kind``, merged by name, in
    the order they first appear; ``settings`` fills the fixed ones."""
    merged: dict[str, Parameter] = {}
    for use in kind.templates:
        fixed = dict(use.fixed)
        for raw in load_template(folder, use.file).get("parameters", []):
            if not isinstance(raw, dict) or not PARAM_NAME.match(str(raw.get("name", ""))):
                raise Invalid(f"template {use.file}: a parameter has no valid name")
            p = merged.get(raw["name"]) or Parameter(raw["name"])
            p.display_name = p.display_name or str(raw.get("displayName", ""))
            p.description = p.description or str(raw.get("description", ""))
            p.value = p.value or str(raw.get("value", "") if raw.get("value") is not None else "")
            p.required = p.required or bool(raw.get("required"))
            p.generated = p.generated or raw.get("generate") == "expression"
            if raw["name"] in fixed:
                p.fixed = str(settings.get(fixed[raw["name"]]) or "")
            p.templates.append(use.file)
            merged[p.name] = p
    return list(merged.values())


def check_values(params: list[Parameter], values) -> dict[str, str]:
    """The values a person gave, checked: known, editable parameters only,
    text without NUL and at most PARAM_VALUE_MAX characters.  Returns only
    what differs from nothing (an empty value means the template's own)."""
    if not isinstance(values, dict):
        raise Invalid("parameters must be an object of NAME: value")
    known = {p.name: p for p in params}
    checked = {}
    for name, value in values.items():
        p = known.get(name)
        if p is None:
            raise Invalid(f"unknown parameter {str(name)[:80]!r}: the templates declare "
                          f"{', '.join(sorted(known)) or 'none'}")
        if p.generated:
            raise Invalid(f"{name} is generated by OpenShift when the object is created; it cannot be set here")
        if p.fixed:
            raise Invalid(f"{name} is set by the portal ({p.fixed}); it cannot be changed here")
        if not isinstance(value, str):
            raise Invalid(f"{name}: the value must be text")
        if len(value) > PARAM_VALUE_MAX:
            raise Invalid(f"{name}: at most {PARAM_VALUE_MAX} characters")
        if "\x00" in value:
            raise Invalid(f"{name}: the value contains a NUL character")
        if value != "":
            checked[name] = value
    for p in params:
        if p.required and not p.generated and not p.fixed and not (checked.get(p.name) or p.value):
            raise Invalid(f"{p.name} is required")
    return checked


# -- the API ------------------------------------------------------------------------------------
class Kube:
    """JSON requests to the API server through a kubernetes ``ApiClient``
    (its host, CA and service account token)."""

    def __init__(self, api_client, timeout: float = 30):
        self.api_client = api_client
        self.timeout = timeout

    def request(self, method: str, path: str, *, body=None, query: dict | None = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            _method, url, headers, body_out, _post = self.api_client.param_serialize(
                method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api_client.call_api(method, url, header_params=headers, body=body_out,
                                                _request_timeout=self.timeout)
            raw = response.read()
        except OpsError:
            raise
        except Exception as exc:  # urllib3 / ssl errors
            raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {"message": raw[-65536:].decode("utf-8", "replace")}
        return response.status, answer if isinstance(answer, dict) else {"items": answer}


def _message(answer: dict) -> str:
    return str(answer.get("message") or answer.get("reason") or "no message")[:500]


def _refuse(status: int, answer: dict, what: str):
    if status in (401, 403):
        raise Forbidden(f"OpenShift refused {what} ({status}): {_message(answer)}")
    if status == 404:
        raise NotFound(f"{what}: not found ({_message(answer)})")
    if status == 409:
        raise Conflict(f"{what}: {_message(answer)}")
    if status in (400, 422):
        raise Invalid(f"{what}: OpenShift refused the object: {_message(answer)}")
    raise Unavailable(f"{what}: OpenShift answered {status}: {_message(answer)}")


def object_path(obj: dict, namespace: str, name: str | None = None) -> str:
    kind = obj.get("kind")
    plural = RESOURCES.get(kind)
    if plural is None:
        raise Invalid(f"the templates make a {kind!r}, which the portal does not deploy "
                      f"(it deploys {', '.join(sorted(RESOURCES))})")
    api_version = str(obj.get("apiVersion") or "")
    if not re.match(r"^([a-z0-9.-]+/)?v[0-9a-z]+$", api_version):
        raise Invalid(f"{kind}: bad apiVersion {api_version!r}")
    if name is not None and (len(name) > 253 or not OBJECT_NAME.match(name)):
        raise Invalid(f"{kind} name {name[:80]!r} is not a valid object name (lower case letters, digits, '-' and '.')")
    if not NAMESPACE_NAME.match(namespace or ""):
        raise Invalid(f"{namespace[:80]!r} is not a valid namespace name")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return path + (f"/{quote(name, safe='')}" if name else "")


def process(kube: Kube, namespace: str, template: dict, values: dict[str, str]) -> list[dict]:
    """OpenShift's own ``oc process``: the Template with each value set on
    its parameter, processed server-side; returns the objects."""
    body = json.loads(json.dumps(template))
    body.setdefault("apiVersion", "template.openshift.io/v1")
    body["metadata"] = {"name": str((template.get("metadata") or {}).get("name") or "template")}
    for param in body.get("parameters", []):
        if param.get("name") in values:
            param["value"] = values[param["name"]]
            param.pop("generate", None)
    status, answer = kube.request(
        "POST", f"/apis/template.openshift.io/v1/namespaces/{quote(namespace, safe='')}/processedtemplates",
        body=body)
    if status not in (200, 201):
        _refuse(status, answer, f"processing template {body['metadata']['name']}")
    objects = answer.get("objects") or []
    if not all(isinstance(o, dict) and o.get("kind") and (o.get("metadata") or {}).get("name") for o in objects):
        raise Invalid(f"template {body['metadata']['name']}: every object needs a kind and a metadata.name")
    return objects


# -- diff ---------------------------------------------------------------------------------------
def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        for item in value:  # containers, ports, env, volumes: by name, not position
            _flatten(item, f"{prefix}[{item['name']}]", out)
    else:
        out[prefix] = value


def _ignored(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in IGNORED)


def diff(live: dict | None, proposed: dict | None) -> list[dict]:
    """Field-level differences between two objects: ``[{path, before,
    after}]`` (``None`` when absent), ignoring bookkeeping (managed fields,
    status, resourceVersion, ...).  Secret values are replaced by a marker."""
    before, after = {}, {}
    _flatten(live or {}, "", before)
    _flatten(proposed or {}, "", after)
    secret = (proposed or live or {}).get("kind") == "Secret"
    changes = []
    for path in sorted(set(before) | set(after)):
        if _ignored(path):
            continue
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if secret and (path.startswith("data.") or path.startswith("stringData.")):
            old = REDACTED if old is not None else None
            new = REDACTED if new is not None else None
        changes.append({"path": path, "before": old, "after": new})
    return changes


def redact(obj: dict) -> dict:
    """``obj`` without Secret values (the keys stay, to be listed)."""
    if obj.get("kind") != "Secret":
        return obj
    copy = json.loads(json.dumps(obj))
    for key in ("data", "stringData"):
        if isinstance(copy.get(key), dict):
            copy[key] = {k: REDACTED for k in copy[key]}
    return copy


# -- preview ------------------------------------------------------------------------------------
def _clean(obj: dict, namespace: str) -> dict:
    """The object as it is sent: its namespace set, no server bookkeeping."""
    body = json.loads(json.dumps(obj))
    meta = body.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink"):
        meta.pop(key, None)
    meta["namespace"] = namespace
    body.pop("status", None)
    return body


def _conflicts(answer: dict) -> list[str]:
    causes = (answer.get("details") or {}).get("causes") or []
    return [str(c.get("message") or c.get("field"))[:300] for c in causes] or [_message(answer)]


def image_puller_binding(target: str, tools: str, service_account: str = "hcap-patroni") -> dict:
    """The seed's ``oc policy add-role-to-user system:image-puller
    system:serviceaccount:<target>:hcap-patroni -n <tools>``, as an object."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{target}-{service_account}-image-puller"[:253], "namespace": tools},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:image-puller"},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": target}]}


def plan_object(kube: Kube, obj: dict, namespace: str, *, create_only: bool = False) -> dict:
    """One plan item for ``obj`` in ``namespace`` (see the module docstring)."""
    name = obj["metadata"]["name"]
    body = _clean(obj, namespace)
    kind = body["kind"]
    item = {"kind": kind, "api_version": body.get("apiVersion"), "name": name, "namespace": namespace,
            "action": CREATE, "resource_version": None, "diff": [], "warnings": [], "conflicts": [],
            "force": False, "create_only": create_only, "object": redact(body)}
    path = object_path(body, namespace, name)
    if create_only:
        # `oc create`: a dry-run create says whether it exists (409 AlreadyExists)
        # without reading it, so the portal never needs to read Secrets it only creates.
        exists, answer = _dry_run_create(kube, body, namespace)
        if exists:
            item["action"] = KEEP
            item["warnings"].append(f"{kind} {name} exists and is kept as it is (created once, never overwritten"
                                    + ("; its generated passwords stay)" if kind == "Secret" else ")"))
            return item
        item["diff"] = diff(None, answer)
        return item
    status, live = kube.request("GET", path)
    if status == 404:
        live = None
    elif status != 200:
        _refuse(status, live, f"reading {kind} {name} in {namespace}")
    if live is not None:
        item["resource_version"] = live["metadata"].get("resourceVersion")
    query = {"dryRun": "All", "fieldManager": FIELD_MANAGER}
    status, answer = kube.request("PATCH", path, body=body, query=query, content_type="application/apply-patch+yaml")
    if status == 409:
        item["conflicts"] = _conflicts(answer)
        item["force"] = True
        status, answer = kube.request("PATCH", path, body=body, query=dict(query, force="true"),
                                      content_type="application/apply-patch+yaml")
        item["warnings"].append(f"{kind} {name}: the deploy takes over fields another tool last set: "
                                + "; ".join(item["conflicts"]))
    if status in (400, 422) and live is not None:
        item["action"] = REFUSED
        item["warnings"].append(f"{kind} {name} cannot be changed this way: {_message(answer)}")
        return item
    if status not in (200, 201):
        _refuse(status, answer, f"dry run of {kind} {name}")
    item["diff"] = diff(live, answer)
    if live is None:
        item["action"] = CREATE
    elif item["diff"]:
        item["action"] = CHANGE
        if kind == "Secret":
            item["warnings"].append(f"Secret {name} would be changed: the credentials it holds would be replaced "
                                    "and the pods using them need a restart")
    else:
        item["action"] = UNCHANGED
    return item


def plan_delete(kube: Kube, obj: dict, namespace: str) -> dict | None:
    """A delete item for an object that exists, or None when it is already gone."""
    name = obj["metadata"]["name"]
    path = object_path(obj, namespace, name)
    status, live = kube.request("GET", path)
    if status == 404:
        return None
    if status != 200:
        _refuse(status, live, f"reading {obj['kind']} {name} in {namespace}")
    item = {"kind": obj["kind"], "api_version": obj["apiVersion"], "name": name, "namespace": namespace,
            "action": DELETE, "resource_version": live["metadata"].get("resourceVersion"),
            "diff": [], "warnings": [], "conflicts": [], "force": False, "create_only": False,
            "object": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": name}}}
    if obj["kind"] == "PersistentVolumeClaim":
        size = ((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "?")
        item["warnings"].append(f"PersistentVolumeClaim {name} ({size}) would be deleted, and the database files "
                                "on its volume with it")
    return item


def preview(kube: Kube, kind: DeployKind, folder, values: dict[str, str], *, target: str, tools: str) -> dict:
    """Process the templates of ``kind`` with ``values`` and dry-run every
    object.  Returns ``{"items": [...], "warnings": [...]}``."""
    settings = {"tools_namespace": tools}
    items = []
    for use in kind.templates:
        template = load_template(folder, use.file)
        given = dict(values)
        for param, setting in use.fixed:
            given[param] = settings[setting]
        declared = {p.get("name") for p in template.get("parameters", [])}
        given = {k: v for k, v in given.items() if k in declared}
        for obj in process(kube, target, template, given):
            namespace = tools if obj.get("kind") in BUILD_KINDS else target
            item = plan_object(kube, obj, namespace, create_only=use.create_only)
            item["template"] = use.file
            items.append(item)
    if kind.image_puller:
        item = plan_object(kube, image_puller_binding(target, tools), tools)
        item["template"] = "(image-puller grant)"
        items.append(item)
    warnings = [w for item in items for w in item["warnings"]]
    return {"items": items, "warnings": warnings}


def summary(items: list[dict]) -> dict:
    counts = {a: 0 for a in (CREATE, CHANGE, UNCHANGED, KEEP, DELETE, REFUSED)}
    for item in items:
        counts[item["action"]] += 1
    return counts


# -- apply ---------------------------------------------------------------------------------------
def _dry_run_create(kube: Kube, body: dict, namespace: str) -> tuple[bool, dict]:
    """(whether the object already exists, the server's dry-run answer)."""
    status, answer = kube.request("POST", object_path(body, namespace), body=body,
                                  query={"dryRun": "All", "fieldManager": FIELD_MANAGER})
    if status == 409 and (answer or {}).get("reason") == "AlreadyExists":
        return True, answer
    if status not in (200, 201):
        _refuse(status, answer, f"dry run of creating {body['kind']} {body['metadata']['name']}")
    return False, answer


def check_unchanged(kube: Kube, items: list[dict]) -> None:
    """Refuse (``Conflict``) when any object's resourceVersion moved since
    the preview, or an object to create now exists (a create-only object to
    keep: no longer exists)."""
    for item in items:
        if item.get("create_only"):
            probe = _clean(item["object"], item["namespace"])
            for key in ("data", "stringData"):  # the plan holds no Secret values; empty ones do to ask
                if isinstance(probe.get(key), dict):
                    probe[key] = dict.fromkeys(probe[key], "")
            exists, _ = _dry_run_create(kube, probe, item["namespace"])
            if exists != (item["action"] == KEEP):
                what = "was created" if exists else "was deleted"
                raise Conflict(f"{item['kind']} {item['name']} in {item['namespace']} {what} since the preview; "
                               "nothing was applied. Make a new preview.")
            continue
        path = object_path(item["object"], item["namespace"], item["name"])
        status, live = kube.request("GET", path)
        if status == 404:
            current = None
        elif status == 200:
            current = live["metadata"].get("resourceVersion")
        else:
            _refuse(status, live, f"reading {item['kind']} {item['name']}")
        if current != item["resource_version"]:
            what = "was created" if item["resource_version"] is None else (
                "was deleted" if current is None else "changed")
            raise Conflict(f"{item['kind']} {item['name']} in {item['namespace']} {what} since the preview "
                           f"(resourceVersion {item['resource_version'] or 'none'} -> {current or 'none'}); "
                           "nothing was applied. Make a new preview.")


def apply(kube: Kube, items: list[dict], *, secrets: dict | None = None, log=print, check=None) -> dict:
    """Apply a confirmed plan.  ``secrets`` maps (namespace, name) to the
    full Secret objects (plans keep them without values).  Deletes come
    first (the order of ``items``), every change carries the previewed
    resourceVersion as a precondition."""
    refused = [f"{i['kind']} {i['name']}" for i in items if i["action"] == REFUSED]
    if refused:
        raise Conflict(f"The preview showed that OpenShift refuses {', '.join(refused)}; nothing was applied.")
    check_unchanged(kube, items)
    done = []
    for item in items:
        if check:
            check()
        kind, name, namespace = item["kind"], item["name"], item["namespace"]
        obj = item["object"]
        if kind == "Secret" and item["action"] in (CREATE, CHANGE):
            obj = (secrets or {}).get((namespace, name))
            if obj is None:
                raise Conflict(f"Secret {name}: the templates no longer make it; make a new preview")
            obj = _clean(obj, namespace)
        path = object_path(obj, namespace, name)
        if item["action"] in (UNCHANGED, KEEP):
            continue
        if item["action"] == DELETE:
            status, answer = kube.request("DELETE", path, body={
                "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                "preconditions": {"resourceVersion": item["resource_version"]}})
            if status == 404:
                log(f"{kind} {name}: already gone")
                continue
            if status not in (200, 202):
                _refuse(status, answer, f"deleting {kind} {name}")
            log(f"Deleted {kind} {name} in {namespace}")
        elif item["create_only"]:
            status, answer = kube.request("POST", object_path(obj, namespace), body=obj,
                                          query={"fieldManager": FIELD_MANAGER})
            if status == 409:
                raise Conflict(f"{kind} {name} was created by someone else since the preview; make a new preview")
            if status not in (200, 201):
                _refuse(status, answer, f"creating {kind} {name}")
            log(f"Created {kind} {name} in {namespace}")
        else:
            body = json.loads(json.dumps(obj))
            if item["resource_version"]:
                body["metadata"]["resourceVersion"] = item["resource_version"]
            query = {"fieldManager": FIELD_MANAGER}
            if item["force"]:
                query["force"] = "true"
            status, answer = kube.request("PATCH", path, body=body, query=query,
                                          content_type="application/apply-patch+yaml")
            if status == 409:
                raise Conflict(f"{kind} {name} changed while the deploy ran; what was applied before it is listed in "
                               "the job log. Make a new preview.")
            if status not in (200, 201):
                _refuse(status, answer, f"applying {kind} {name}")
            log(f"{'Created' if item['action'] == CREATE else 'Applied'} {kind} {name} in {namespace}")
        done.append({"kind": kind, "name": name, "namespace": namespace, "action": item["action"]})
    return {"applied": done}


def wait_for(what: str, done, *, timeout: float, check=None, poll: float = 1.0):
    """Poll ``done()`` until true; ``Timeout`` past ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        result = done()
        if result:
            return result
        if check:
            check()
        if time.monotonic() > give_up:
            raise Timeout(f"{what} did not happen within {timeout:g}s")
        time.sleep(poll)


# -- server rollout ------------------------------------------------------------------------------
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def rollout_plan(kube: Kube, namespace: str, name: str) -> dict:
    """What rolling out ``name`` would do: the DeploymentConfig's next
    revision (``instantiate``), else a Deployment's restart."""
    dc_path = f"/apis/apps.openshift.io/v1/namespaces/{quote(namespace, safe='')}/deploymentconfigs/{quote(name, safe='')}"
    status, dc = kube.request("GET", dc_path)
    if status == 200:
        revision = int((dc.get("status") or {}).get("latestVersion") or 0)
        containers = (((dc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        return {"kind": "DeploymentConfig", "api_version": "apps.openshift.io/v1", "name": name, "namespace": namespace,
                "action": "rollout", "resource_version": dc["metadata"].get("resourceVersion"),
                "revision": revision, "next_revision": revision + 1,
                "replicas": int((dc.get("spec") or {}).get("replicas") or 0),
                "images": [c.get("image") for c in containers], "diff": [], "warnings": [], "conflicts": [],
                "object": {"apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig", "metadata": {"name": name}}}
    if status not in (404,):
        _refuse(status, dc, f"reading DeploymentConfig {name}")
    d_path = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/deployments/{quote(name, safe='')}"
    status, dep = kube.request("GET", d_path)
    if status != 200:
        _refuse(status, dep, f"reading Deployment {name}")
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    revision = int(((dep.get("metadata") or {}).get("annotations") or {}).get(
        "deployment.kubernetes.io/revision") or 0)
    return {"kind": "Deployment", "api_version": "apps/v1", "name": name, "namespace": namespace, "action": "rollout",
            "resource_version": dep["metadata"].get("resourceVersion"), "revision": revision,
            "next_revision": revision + 1, "replicas": int((dep.get("spec") or {}).get("replicas") or 0),
            "images": [c.get("image") for c in containers], "diff": [], "warnings": [], "conflicts": [],
            "selector": ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}}}


def start_rollout(kube: Kube, item: dict, stamp: str) -> dict:
    """Start the rollout the plan item describes; returns what to wait for:
    ``{"selector": "...", "count": n}``."""
    check_unchanged(kube, [item])
    namespace, name = item["namespace"], item["name"]
    if item["kind"] == "DeploymentConfig":
        path = object_path(item["object"], namespace, name) + "/instantiate"
        status, answer = kube.request("POST", path, body={
            "apiVersion": "apps.openshift.io/v1", "kind": "DeploymentRequest", "name": name, "latest": True,
            "force": True})
        if status not in (200, 201):
            _refuse(status, answer, f"instantiating DeploymentConfig {name}")
        revision = int((answer.get("status") or {}).get("latestVersion") or item["next_revision"])
        return {"selector": f"deploymentconfig={name},deployment={name}-{revision}", "count": item["replicas"],
                "revision": revision}
    path = object_path(item["object"], namespace, name)
    status, answer = kube.request(
        "PATCH", path, query={"fieldManager": FIELD_MANAGER}, content_type="application/strategic-merge-patch+json",
        body={"metadata": {"resourceVersion": item["resource_version"]},
              "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
    if status == 409:
        raise Conflict(f"Deployment {name} changed since the preview; make a new preview")
    if status not in (200, 201):
        _refuse(status, answer, f"restarting Deployment {name}")
    selector = ",".join(f"{k}={v}" for k, v in sorted(item.get("selector", {}).items()))
    return {"selector": selector, "count": item["replicas"], "annotation": stamp,
            "revision": item["next_revision"]}


def _pods(kube: Kube, namespace: str, selector: str) -> list[dict]:
    status, answer = kube.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods",
                                  query={"labelSelector": selector})
    if status != 200:
        _refuse(status, answer, "listing pods")
    return answer.get("items") or []


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ready_pods(kube: Kube, namespace: str, wait: dict) -> list[str]:
    """Names of the rollout's new pods that are Ready."""
    names = []
    for pod in _pods(kube, namespace, wait["selector"]):
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if "annotation" in wait and annotations.get(RESTARTED_AT) != wait["annotation"]:
            continue
        if _ready(pod):
            names.append(pod["metadata"]["name"])
    return sorted(names)


def failure_report(kube: Kube, namespace: str, wait: dict, log_lines: int = 20) -> list[str]:
    """The new pods' events and the last lines of their logs, for a failed rollout."""
    lines = []
    try:
        pods = _pods(kube, namespace, wait["selector"])
    except OpsError as exc:
        return [f"(pods cannot be listed: {exc})"]
    if not pods:
        lines.append(f"No pod matching {wait['selector']} was created.")
    for pod in pods:
        name = pod["metadata"]["name"]
        lines.append(f"Pod {name}: {(pod.get('status') or {}).get('phase', 'unknown')}, "
                     f"{'Ready' if _ready(pod) else 'not Ready'}")
        status, events = kube.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                                      query={"fieldSelector": f"involvedObject.name={name}"})
        for event in (events.get("items") or [])[-10:] if status == 200 else []:
            lines.append(f"  event {event.get('type', '')} {event.get('reason', '')}: {event.get('message', '')}")
        if status != 200:
            lines.append(f"  (events cannot be read: {status})")
        status, log = kube.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
                                          f"{quote(name, safe='')}/log", query={"tailLines": str(log_lines)})
        if status == 200:
            lines.extend("  log: " + line for line in str(log.get("message", "")).splitlines()[-log_lines:])
        else:
            lines.append(f"  (its log cannot be read: {_message(log)[:200]})")
    return lines


# -- rolling back the server ------------------------------------------------------------------------
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"


def _deployment_revision(kube: Kube, namespace: str, name: str, revision: int, dep: dict) -> dict:
    """The ReplicaSet that holds revision ``revision`` of Deployment ``name``
    (what the Deployment controller keeps of each revision): owned by the
    Deployment (ownerReferences uid), listed by its selector, its
    ``deployment.kubernetes.io/revision`` annotation the revision."""
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    status, listing = kube.request("GET", f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/replicasets",
                                   query={"labelSelector": selector} if selector else None)
    if status != 200:
        _refuse(status, listing, f"listing the ReplicaSets of Deployment {name}")
    uid = (dep.get("metadata") or {}).get("uid")
    for rs in listing.get("items") or []:
        meta = rs.get("metadata") or {}
        if not any(o.get("uid") == uid and o.get("kind") == "Deployment" for o in meta.get("ownerReferences") or []):
            continue
        if str((meta.get("annotations") or {}).get(REVISION) or "") == str(revision):
            return rs
    raise Invalid(f"revision {revision} of Deployment {name} has no ReplicaSet any more (the Deployment keeps "
                  f"only its last revisions, spec.revisionHistoryLimit): nothing to roll back to")


def rollback_plan(kube: Kube, namespace: str, name: str, revision: int) -> dict:
    """Rolling the server back to ``revision``: its pod template becomes
    the one of that revision, then a new revision starts.  A
    DeploymentConfig's revision is its ReplicationController
    (``<name>-<N>``, what OpenShift keeps of every revision); a
    Deployment's is the ReplicaSet it owns with that revision annotation
    (as ``kubectl rollout undo`` finds it)."""
    item = rollout_plan(kube, namespace, name)
    if not 1 <= revision < item["next_revision"]:
        raise Invalid(f"revision must be an earlier revision of {name} (1 to {item['revision']})")
    status, live = kube.request("GET", object_path(item["object"], namespace, name))
    if status != 200:
        _refuse(status, live, f"reading {item['kind']} {name}")
    if item["kind"] == "Deployment":
        rs = _deployment_revision(kube, namespace, name, revision, live)
        template = json.loads(json.dumps((rs.get("spec") or {}).get("template") or {}))
        pod_hash = ((template.get("metadata") or {}).get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
        item["revision_hash"] = pod_hash or (rs["metadata"].get("labels") or {}).get(POD_TEMPLATE_HASH)
        item["resource_version"] = live["metadata"].get("resourceVersion")
        ignored = ()
    else:
        status, rc = kube.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/replicationcontrollers/"
                                         f"{quote(f'{name}-{revision}', safe='')}")
        if status != 200:
            _refuse(status, rc, f"reading revision {revision} of {name} (ReplicationController {name}-{revision})")
        template = json.loads(json.dumps((rc.get("spec") or {}).get("template") or {}))
        labels = (template.get("metadata") or {}).get("labels") or {}
        for key in ("deployment", "deploymentconfig"):  # set per revision by OpenShift
            labels.pop(key, None)
        ignored = ("spec.template.metadata.labels.deployment",)
    current = (live.get("spec") or {}).get("template") or {}
    item.update({"action": "rollback", "to_revision": revision, "template": template,
                 "diff": [d for d in diff({"spec": {"template": current}}, {"spec": {"template": template}})
                          if not any(d["path"].startswith(p) for p in ignored)]})
    return item


def start_rollback(kube: Kube, item: dict, stamp: str) -> dict:
    """Put the earlier revision's pod template back (with the previewed
    resourceVersion as precondition).  A DeploymentConfig then
    instantiates a new revision; a Deployment's controller brings that
    revision's ReplicaSet back up, whose pods are waited for."""
    check_unchanged(kube, [item])
    path = object_path(item["object"], item["namespace"], item["name"])
    if item["kind"] == "Deployment":
        # The whole template is replaced (a merge patch would keep the failed
        # revision's extra annotations, e.g. its restartedAt); the
        # resourceVersion in the patched object is the server's precondition.
        status, answer = kube.request("PATCH", path, query={"fieldManager": FIELD_MANAGER},
                                      content_type="application/json-patch+json",
                                      body=[{"op": "replace", "path": "/metadata/resourceVersion",
                                             "value": item["resource_version"]},
                                            {"op": "replace", "path": "/spec/template", "value": item["template"]}])
    else:
        status, answer = kube.request("PATCH", path, query={"fieldManager": FIELD_MANAGER},
                                      content_type="application/merge-patch+json",
                                      body={"metadata": {"resourceVersion": item["resource_version"]},
                                            "spec": {"template": item["template"]}})
    if status == 409:
        raise Conflict(f"{item['kind']} {item['name']} changed since the preview; make a new preview")
    if status not in (200, 201):
        _refuse(status, answer, f"rolling back {item['kind']} {item['name']}")
    if item["kind"] == "Deployment":
        labels = dict(item.get("selector") or {})
        if item.get("revision_hash"):
            labels[POD_TEMPLATE_HASH] = item["revision_hash"]
        return {"selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())), "count": item["replicas"],
                "revision": item["next_revision"]}
    item = dict(item, resource_version=answer["metadata"].get("resourceVersion"))
    return start_rollout(kube, item, stamp)
