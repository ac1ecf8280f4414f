"""What the deploy pages, the API and the jobs share: where to deploy (the
settings), the kubernetes client (the OpenShift driver's, with the portal's
service account), building a preview and showing it.

Deploys exist on the OpenShift platform only.  With another driver (the
sandbox, this machine) ``kube()`` raises ``NotOnOpenShift`` (a 409 with how
to point the portal at a cluster), and the pages say what a deploy would do.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import transaction

from hcapadmin.audit.models import record
from hcapadmin.core.platform import get_driver
from hcapadmin.deploys.models import Preview
from ops import deploys
from ops.errors import Conflict, Invalid

SANDBOX_ADVICE = ("Deploys run against OpenShift: set HCAPADMIN_PLATFORM=openshift with HCAPADMIN_OPENSHIFT_API_URL, "
                  "HCAPADMIN_OPENSHIFT_NAMESPACE and the portal's service account (HCAPADMIN_OPENSHIFT_TOKEN, or "
                  "the token mounted in its pod), and HCAPADMIN_TEMPLATES_DIR to HCAP's openshift/ templates.")

# What each kind does, in the words the pages use.
DESCRIPTIONS = {
    "db-prep": "Processes patroni.prep.yml and creates its Secret and configuration in the target namespace. An "
               "existing Secret is never overwritten (its generated passwords stay). Grants system:image-puller "
               "in the tools namespace to the hcap-patroni service account.",
    "db-create": "Processes patroni.bc.yml into the tools namespace (BuildConfig, ImageStream) and patroni.dc.yml "
                 "(the StatefulSet, its Service and service account) into the target namespace, by server-side "
                 "apply with field manager hcapadmin.",
    "rollout": "Starts a new revision of the server (DeploymentConfig instantiate, or a Deployment restart) and "
               "waits until its new pods are Ready. The server applies pending migrations when it starts.",
    "rollback": "Puts an earlier revision's pod template back on the server (a DeploymentConfig's from that "
                "revision's ReplicationController, a Deployment's from that revision's ReplicaSet) and rolls it "
                "out, waiting until its pods are Ready.",
    "patroni-redeploy": "Deletes the Patroni StatefulSet, its Service, its volume claims (the database files) and "
                        "both Patroni ConfigMaps, runs db-create, waits for a healthy cluster, then opens a restore "
                        "request with the newest verified backup. Needs another person's approval.",
}
TITLES = {"db-prep": "Database prep", "db-create": "Database create", "rollout": "Roll out the server",
          "rollback": "Roll back the server",
          "patroni-redeploy": "Redeploy Patroni"}


class NotOnOpenShift(Conflict):
    """The configured platform has no OpenShift API to deploy to."""


def kube() -> deploys.Kube:
    driver = get_driver()
    api_client = getattr(driver, "api_client", None)
    if api_client is None:
        raise NotOnOpenShift(f"This portal runs on the {driver.name} platform, where there is nothing to deploy. "
                             + SANDBOX_ADVICE)
    return deploys.Kube(api_client)


def on_openshift() -> bool:
    return getattr(get_driver(), "api_client", None) is not None


def target_namespace() -> str:
    return getattr(get_driver(), "namespace", None) or settings.OPENSHIFT_NAMESPACE or ""


def tools_namespace() -> str:
    if settings.DEPLOY_TOOLS_NAMESPACE:
        return settings.DEPLOY_TOOLS_NAMESPACE
    prefix = target_namespace().rsplit("-", 1)[0]
    return f"{prefix}-tools" if prefix else ""


def template_parameters(kind: str) -> list[deploys.Parameter]:
    if kind not in deploys.KINDS:
        return []
    return deploys.parameters(deploys.deploy_kind(kind), settings.DEPLOY_TEMPLATES_DIR,
                              {"tools_namespace": tools_namespace()})


def current_values(kind: str) -> dict:
    """The parameter values of the last confirmed deploy of ``kind`` in the
    target namespace (what is deployed now, as far as the portal knows)."""
    last = (Preview.objects.filter(kind=kind, target_namespace=target_namespace(), confirmed_at__isnull=False)
            .order_by("-confirmed_at").values_list("values", flat=True).first())
    return dict(last or {})


def check_kind(kind) -> str:
    if kind not in TITLES:
        raise Invalid(f"unknown deploy kind {str(kind)[:40]!r}: one of {', '.join(TITLES)}")
    return kind


def redeploy_deletes(client: deploys.Kube, namespace: str) -> list[dict]:
    """The Patroni redeploy's deletes: the StatefulSet, its Service, its
    PVCs (listed by the cluster's label) and both Patroni ConfigMaps."""
    name = settings.OPENSHIFT_PATRONI_NAME
    objects = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}},
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}]
    status, claims = client.request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
                                    query={"labelSelector": f"cluster-name={name}"})
    if status != 200:
        deploys._refuse(status, claims, "listing the Patroni volume claims")
    for claim in claims.get("items") or []:
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim["metadata"]["name"]}})
    for cm in (f"{name}-config", settings.OPENSHIFT_PATRONI_LEADER_CONFIGMAP):
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm}})
    items = []
    for obj in objects:
        item = deploys.plan_delete(client, obj, namespace)
        if item is not None:
            item["template"] = "(redeploy)"
            items.append(item)
    return items


def build_plan(kind: str, values: dict) -> tuple[dict, dict]:
    """(plan, checked values) for ``kind`` with the given parameter values."""
    client = kube()
    target, tools = target_namespace(), tools_namespace()
    if kind == "rollout":
        if values:
            raise Invalid("a rollout takes no parameters")
        item = deploys.rollout_plan(client, target, settings.OPENSHIFT_SERVER_NAME)
        return {"items": [item], "warnings": []}, {}
    if kind == "rollback":
        revision = values.get("revision") if isinstance(values, dict) else None
        if set(values) != {"revision"} or not isinstance(revision, str) or not re.fullmatch(r"[0-9]{1,9}", revision):
            raise Invalid('a roll back takes one parameter: {"revision": "<earlier revision number>"}')
        item = deploys.rollback_plan(client, target, settings.OPENSHIFT_SERVER_NAME, int(revision))
        return {"items": [item], "warnings": [f"The server goes back to revision {revision}'s pod template."]}, \
            {"revision": revision}
    template_kind = "db-create" if kind == "patroni-redeploy" else kind
    params = template_parameters(template_kind)
    checked = deploys.check_values(params, values)
    plan = {"items": [], "warnings": []}
    if kind == "patroni-redeploy":
        deletes = redeploy_deletes(client, target)
        plan["items"].extend(deletes)
        # db-create runs after the deletes: what it creates is shown as created.
        for use in deploys.KINDS["db-create"].templates:
            template = deploys.load_template(settings.DEPLOY_TEMPLATES_DIR, use.file)
            given = dict(checked)
            for param, setting in use.fixed:
                given[param] = {"tools_namespace": tools}[setting]
            declared = {p.get("name") for p in template.get("parameters", [])}
            for obj in deploys.process(client, target, template, {k: v for k, v in given.items() if k in declared}):
                namespace = tools if obj.get("kind") in deploys.BUILD_KINDS else target
                plan["items"].append({"kind": obj["kind"], "name": obj["metadata"]["name"], "namespace": namespace,
                                      "action": "recreate", "template": use.file, "diff": [], "warnings": [],
                                      "resource_version": None, "conflicts": [], "object": deploys.redact(obj)})
        plan["warnings"] = [w for i in deletes for w in i["warnings"]]
        plan["warnings"].append("The database is empty after this until the restore request that follows is "
                                "approved and has run.")
        return plan, checked
    plan = deploys.preview(client, deploys.deploy_kind(kind), settings.DEPLOY_TEMPLATES_DIR, checked,
                           target=target, tools=tools)
    return plan, checked


def create_preview(request, kind: str, values: dict) -> Preview:
    kind = check_kind(kind)
    plan, checked = build_plan(kind, values)
    principal = request.principal
    summary = {}
    for item in plan["items"]:
        summary[item["action"]] = summary.get(item["action"], 0) + 1
    with transaction.atomic():
        preview = Preview.objects.create(
            kind=kind, values=checked, target_namespace=target_namespace(), tools_namespace=tools_namespace(),
            plan=plan, summary=summary, destructive=kind == "patroni-redeploy", created_by=principal.name,
            created_groups=list(principal.groups))
        record("deploy.previewed", request=request, target=preview.target_namespace,
               details=preview.details(values=checked, warnings=plan["warnings"][:20]))
    return preview


def as_api(preview: Preview) -> dict:
    job = preview.job
    return {
        "id": preview.pk, "kind": preview.kind, "status": preview.status, "namespace": preview.target_namespace,
        "tools_namespace": preview.tools_namespace, "parameters": preview.values, "summary": preview.summary,
        "warnings": preview.plan.get("warnings", []), "destructive": preview.destructive,
        "items": [{k: i.get(k) for k in ("kind", "name", "namespace", "action", "resource_version", "diff",
                                          "warnings", "template")} for i in preview.items],
        "created_by": preview.created_by, "created_at": preview.created_at.isoformat(),
        "confirmed_by": preview.confirmed_by or None,
        "confirmed_at": preview.confirmed_at.isoformat() if preview.confirmed_at else None,
        "approved_by": preview.approved_by or None,
        "job": None if job is None else {"id": job.pk, "status": job.status, "error": job.error,
                                         "result": job.result},
    }
