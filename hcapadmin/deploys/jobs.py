"""The deploy job kinds.  Each runs a confirmed preview (its id is the
job's only parameter) and nothing else:

* ``deploy.apply`` (db-prep, db-create): refuse when a live object changed
  since the preview (resourceVersion), else apply the plan.
* ``deploy.rollout``: start the server's next revision and wait until its new
  pods are Ready within HCAPADMIN_ROLLOUT_TIMEOUT; past it, the failure
  carries the pods' events and last log lines, and the deploy's page offers
  a roll back to the revision it started from (``rollback`` previews).
* ``deploy.patroni_redeploy`` (a runbook, approved by another person):
  delete the Patroni objects, run db-create, wait for a healthy cluster,
  then point at a restore request prefilled with the newest verified backup.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from hcapadmin.audit.models import record
from hcapadmin.deploys import service
from hcapadmin.deploys.models import Preview
from hcapadmin.jobs.registry import job_kind
from hcapadmin.jobs.runbook import Step, runbook_kind
from ops import deploys
from ops.errors import Invalid, OpsError, Timeout


def _preview(job_pk: int, params) -> Preview:
    try:
        preview = Preview.objects.get(pk=int(params.get("preview")))
    except (Preview.DoesNotExist, TypeError, ValueError):
        raise Invalid(f"no deploy preview {params.get('preview')!r}") from None
    if preview.job_id != job_pk or not preview.confirmed_at:
        raise Invalid(f"deploy preview #{preview.pk} is not confirmed for this job; nothing was applied")
    if preview.destructive and not preview.approved_at:
        raise Invalid(f"deploy preview #{preview.pk} needs another person's approval; nothing was applied")
    return preview


def _secrets(client, preview: Preview, kind: str) -> dict:
    """The Secrets the templates make, with their values (plans never hold them)."""
    if not any(i["kind"] == "Secret" and i["action"] in (deploys.CREATE, deploys.CHANGE) for i in preview.items):
        return {}
    found = {}
    for use in deploys.deploy_kind(kind).templates:
        template = deploys.load_template(settings.DEPLOY_TEMPLATES_DIR, use.file)
        declared = {p.get("name") for p in template.get("parameters", [])}
        values = {k: v for k, v in preview.values.items() if k in declared}
        for param, setting in use.fixed:
            values[param] = {"tools_namespace": preview.tools_namespace}[setting]
        for obj in deploys.process(client, preview.target_namespace, template, values):
            if obj["kind"] == "Secret":
                found[(preview.target_namespace, obj["metadata"]["name"])] = obj
    return found


def _finished(preview: Preview, ctx_job, outcome: str, **details) -> None:
    record(f"deploy.{'applied' if outcome == 'success' else 'failed'}", actor="system",
           target=preview.target_namespace, outcome=outcome,
           details=preview.details(job=ctx_job.pk, **details))


@job_kind("deploy.apply", title="Apply a deploy", mutating=True, timeout=1800,
          advice="Some objects of the plan may have been applied; make a new preview to see what is left.")
def run_apply(ctx, params) -> dict:
    preview = _preview(ctx.job.pk, params)
    try:
        client = service.kube()
        with ctx.step("Check that nothing changed since the preview"):
            deploys.check_unchanged(client, preview.items)
            ctx.log(f"{len(preview.items)} object(s) as previewed")
        with ctx.step(f"Apply {preview.kind}"):
            secrets = _secrets(client, preview, preview.kind)
            result = deploys.apply(client, preview.items, secrets=secrets, log=ctx.log, check=ctx.check_cancelled)
    except OpsError as exc:
        _finished(preview, ctx.job, "failure", error=str(exc)[:500])
        raise
    _finished(preview, ctx.job, "success", applied=result["applied"])
    return {"preview": preview.pk, **result}


def _migrations(ctx, when: str) -> dict:
    """The migrations the server will apply when it starts (``before``), or
    has applied (``after``): the same report as the Migrations page."""
    from migrations_ui import state

    try:
        report = state.report()
        problem = None if report.complete else (report.source_error or report.database_error)
    except OpsError as exc:
        problem = str(exc)
    if problem:
        ctx.log(f"Migrations {when}: cannot be read ({problem})")
        return {"error": str(problem)[:500]}
    pending = [i.name for i in report.to_apply]
    applied = [i.name for i in report.by_status("applied")]
    ctx.log(f"Migrations {when}: {len(pending)} pending, {len(applied)} applied"
            + (f"; pending: {', '.join(pending[:20])}" if pending else ""))
    return {"pending": pending, "applied": applied}


@job_kind("deploy.rollout", title="Roll out the server", mutating=True, timeout=6 * 3600, cancellable=True,
          advice="The new revision may still be rolling out in OpenShift; look at the server's pods.")
def run_rollout(ctx, params) -> dict:
    preview = _preview(ctx.job.pk, params)
    item = preview.items[0]
    client = service.kube()
    try:
        migrations_before = _migrations(ctx, "before")
        with ctx.step(f"Start revision {item['next_revision']} of {item['kind']} {item['name']}"):
            start = deploys.start_rollback if preview.kind == "rollback" else deploys.start_rollout
            wait = start(client, item, timezone.now().isoformat())
            ctx.log(f"Started; images {', '.join(i for i in item.get('images') or [] if i)}")
        timeout = settings.DEPLOY_ROLLOUT_TIMEOUT
        with ctx.step(f"Wait until {wait['count']} new pod(s) are Ready ({wait['selector']})"):
            ctx.log(f"Waiting up to {timeout}s for {wait['selector']}")

            def ready():
                names = deploys.ready_pods(client, preview.target_namespace, wait)
                return (names,) if len(names) >= wait["count"] else None

            try:
                (pods,) = deploys.wait_for("the new pods Ready", ready, timeout=timeout, check=ctx.check_cancelled)
            except Timeout:
                for line in deploys.failure_report(client, preview.target_namespace, wait):
                    ctx.log(line)
                raise Timeout(f"Revision {wait['revision']} of {item['name']} did not become Ready within {timeout}s "
                              f"(its pods' events and last log lines are in the log). Roll back to revision "
                              f"{item['revision']} from this deploy's page (a preview of the change first), or "
                              f"roll out again once fixed.") from None
    except OpsError as exc:
        _finished(preview, ctx.job, "failure", error=str(exc)[:500], rollback_to=item["revision"])
        raise
    migrations_after = _migrations(ctx, "after")
    newly = sorted(set(migrations_after.get("applied") or []) - set(migrations_before.get("applied") or []))
    _finished(preview, ctx.job, "success", revision=wait["revision"], pods=pods, migrations_applied=newly)
    return {"preview": preview.pk, "revision": wait["revision"], "previous_revision": item["revision"],
            "pods": pods, "images": item.get("images"),
            "migrations_pending_before": migrations_before.get("pending"),
            "migrations_applied": newly if "error" not in migrations_after else None,
            "migrations_pending_after": migrations_after.get("pending")}


# -- the Patroni redeploy ---------------------------------------------------------------------
def _redeploy_preview(sctx, params) -> Preview:
    return _preview(sctx.job_id, params)


def delete_patroni(sctx, params):
    preview = _redeploy_preview(sctx, params)
    client = service.kube()
    deletes = [i for i in preview.items if i["action"] == deploys.DELETE]
    if sctx.runs == 1:
        deploys.check_unchanged(client, deletes)
    gone = []
    for item in deletes:
        sctx.check_cancelled()
        path = deploys.object_path(item["object"], item["namespace"], item["name"])
        status, _ = client.request("GET", path)
        if status == 404:
            continue  # deleted by an earlier run of this step
        deploys.apply(client, [item], log=sctx.log)
        gone.append(f"{item['kind']} {item['name']}")
    for item in deletes:
        path = deploys.object_path(item["object"], item["namespace"], item["name"])
        deploys.wait_for(f"{item['kind']} {item['name']} gone", lambda: client.request("GET", path)[0] == 404,
                         timeout=300, check=sctx.check_cancelled)
    return {"deleted": gone}


def create_patroni(sctx, params):
    preview = _redeploy_preview(sctx, params)
    client = service.kube()
    plan = deploys.preview(client, deploys.deploy_kind("db-create"), settings.DEPLOY_TEMPLATES_DIR, preview.values,
                           target=preview.target_namespace, tools=preview.tools_namespace)
    refused = [f"{i['kind']} {i['name']}" for i in plan["items"] if i["action"] == deploys.REFUSED]
    if refused:
        raise Invalid(f"OpenShift refuses {', '.join(refused)}: {'; '.join(plan['warnings'])[:500]}")
    result = deploys.apply(client, plan["items"], log=sctx.log, check=sctx.check_cancelled)
    return {"applied": result["applied"]}


def wait_healthy(sctx, params):
    from hcapadmin.core.platform import get_driver

    driver = get_driver()

    def healthy():
        state = driver.cluster_state()
        running = [m for m in state.members if m.state == "running"]
        return state if state.leader and running else None

    state = deploys.wait_for("a Patroni leader with running members", healthy, timeout=1800,
                             check=sctx.check_cancelled, poll=2.0)
    sctx.log(f"Leader {state.leader}; {len(state.members)} member(s)")
    return {"leader": state.leader, "members": [m.name for m in state.members]}


def restore_request(sctx, params):
    """The newest verified PostgreSQL backup, and the restore request form
    prefilled with it (a person files it, another approves it)."""
    from hcapadmin.backups import inventory

    try:
        items = inventory.catalog(errors=[])
    except OpsError as exc:
        sctx.log(f"The backup catalog cannot be read ({exc}); open a restore request from the Backups page.")
        return {"backup": None}
    verified = [i for i in items if i.entry.engine == "postgres" and not i.entry.in_progress
                and i.verification is not None and i.verification.ok]
    if not verified:
        sctx.log("No verified backup found; open a restore request from the Backups page.")
        return {"backup": None}
    name = verified[0].entry.name
    url = reverse("restore_new") + "?backup=" + name
    sctx.log(f"Next: request the restore of {name}: {url}")
    return {"backup": name, "restore_request_url": url}


runbook_kind("deploy.patroni_redeploy", title="Redeploy Patroni", steps=[
    Step("delete", "Delete the Patroni StatefulSet, Service, volume claims and ConfigMaps", run=delete_patroni,
         timeout=600, manual="Nothing to undo: the deleted objects and their volumes are gone; run db-create and "
                             "restore the newest verified backup."),
    Step("create", "Run db-create (build objects, StatefulSet, Service)", run=create_patroni, timeout=600,
         manual="Look at the StatefulSet in OpenShift; run db-create again from the Deploys page."),
    Step("healthy", "Wait for a Patroni leader and running members", run=wait_healthy, timeout=1800,
         cancellable=True, manual="Look at the Patroni pods' logs."),
    Step("restore", "Find the newest verified backup for the restore request", run=restore_request, timeout=120),
], advice="The Patroni objects may be deleted; look at the job's steps before doing anything else.")
