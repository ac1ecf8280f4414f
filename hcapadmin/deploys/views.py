"""Deploy pages and API: the list of deploy kinds and previews, the parameter
form, the preview (created, changed, kept, deleted, with warnings) with its
confirm and approve forms, and ``POST /api/v1/deploys/preview``, ``POST
/api/v1/deploys`` (naming a preview), ``GET /api/v1/deploys/<id>``.  Rules
live in hcapadmin.deploys.service and the Preview model; errors are raised
and the decorators answer with their status (docs/conventions.md)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.core.api import form_error, partial
from hcapadmin.deploys import schemas, service
from hcapadmin.deploys.forms import ConfirmForm, ParametersForm
from hcapadmin.deploys.models import Preview
from ops.errors import Invalid, NotFound

ACTION_ORDER = ("delete", "recreate", "create", "change", "refused", "keep", "unchanged", "rollout")


def _get(pk) -> Preview:
    try:
        return Preview.objects.select_related("job").get(pk=pk)
    except Preview.DoesNotExist:
        raise Http404("no such deploy") from None


@never_cache
@permission_required("view")
def deploy_list(request):
    return render(request, "deploys/list.html", {
        "title": "Deploys", "on_openshift": service.on_openshift(), "advice": service.SANDBOX_ADVICE,
        "kinds": [(k, service.TITLES[k], service.DESCRIPTIONS[k]) for k in service.TITLES if k != "rollback"],
        "previews": Preview.objects.select_related("job")[:25],
        "namespace": service.target_namespace(), "tools": service.tools_namespace(),
        "may_operate": request.principal.has_perm("operate"),
    })


@never_cache
@require_http_methods(["GET", "POST"])
@permission_required("operate")
def deploy_new(request, kind: str):
    if kind not in service.TITLES:
        raise Http404("no such deploy kind")
    context = {"title": service.TITLES[kind], "kind": kind, "description": service.DESCRIPTIONS[kind],
               "on_openshift": service.on_openshift(), "advice": service.SANDBOX_ADVICE,
               "namespace": service.target_namespace(), "tools": service.tools_namespace()}
    if not context["on_openshift"]:
        if request.method == "POST":
            raise service.NotOnOpenShift(service.SANDBOX_ADVICE)
        return render(request, "deploys/new.html", context)
    params, error = partial(service.template_parameters, "db-create" if kind == "patroni-redeploy" else kind)
    for p in params or []:
        # Prefilled with what the last confirmed deploy of this kind used, else the template's default.
        p.value = service.current_values(kind).get(p.name, p.value)
    context.update({"params_error": error, "params": params or []})
    form = ParametersForm(params or [], request.POST if request.method == "POST" else None)
    context["form"] = form
    if request.method == "GET" or error:
        return render(request, "deploys/new.html", context, status=200 if request.method == "GET" else 503)
    if not form.is_valid():
        form.add_error(None, form_error(form))
        return render(request, "deploys/new.html", context, status=400)
    try:
        preview = service.create_preview(request, kind, form.values())
    except Invalid as exc:
        form.add_error(None, str(exc))
        return render(request, "deploys/new.html", context, status=400)
    return HttpResponseRedirect(reverse("deploy_detail", args=[preview.pk]))


def _detail_context(request, preview: Preview) -> dict:
    from hcapadmin.jobs.views import _detail_context as job_context

    principal = request.principal
    items = sorted(preview.items, key=lambda i: ACTION_ORDER.index(i["action"]) if i["action"] in ACTION_ORDER
                   else len(ACTION_ORDER))
    context = {
        "title": f"Deploy #{preview.pk}: {service.TITLES[preview.kind]}", "preview": preview, "items": items,
        "description": service.DESCRIPTIONS[preview.kind], "warnings": preview.plan.get("warnings", []),
        "may_confirm": (not preview.confirmed_at and not preview.refused and principal.has_perm("operate")),
        "may_approve": (preview.destructive and preview.confirmed_at and not preview.approved_at
                        and principal.has_perm("approve")
                        and principal.name not in (preview.created_by, preview.confirmed_by)),
        "confirm_form": ConfirmForm(),
        "may_roll_back": (preview.kind == "rollout" and preview.job_id and preview.job.status == "failed"
                          and principal.has_perm("operate")),
    }
    if preview.job_id:
        context.update({k: v for k, v in job_context(request, preview.job).items() if k != "title"})
    return context


@never_cache
@permission_required("view")
def deploy_detail(request, pk: int):
    preview = _get(pk)
    return render(request, "deploys/detail.html", _detail_context(request, preview))


def _check_typed(request, preview: Preview) -> None:
    form = ConfirmForm(request.POST)
    if not form.is_valid() or form.cleaned_data["confirm"] != preview.target_namespace:
        raise Invalid(f"Type the namespace name ({preview.target_namespace}) to confirm this deploy.")


@require_POST
@permission_required("operate")
def deploy_confirm(request, pk: int):
    preview = _get(pk)
    _check_typed(request, preview)
    job = preview.confirm(request=request)
    if job is None:
        messages.success(request, "Confirmed. Another person with the approver role must approve it before it runs.")
        return HttpResponseRedirect(reverse("deploy_detail", args=[preview.pk]))
    messages.success(request, f"Confirmed. The deploy runs as job #{job.pk}.")
    return HttpResponseRedirect(reverse("deploy_detail", args=[preview.pk]))


@require_POST
@permission_required("approve")
def deploy_approve(request, pk: int):
    preview = _get(pk)
    _check_typed(request, preview)
    job = preview.approve(request=request)
    messages.success(request, f"Approved. The deploy runs as job #{job.pk}.")
    return HttpResponseRedirect(reverse("deploy_detail", args=[preview.pk]))


@require_POST
@permission_required("operate")
def deploy_rollback(request, pk: int):
    """Preview rolling the server back to the revision a rollout started from."""
    rollout = _get(pk)
    if rollout.kind != "rollout" or not rollout.items:
        raise Invalid("Only a server rollout can be rolled back.")
    preview = service.create_preview(request, "rollback", {"revision": str(rollout.items[0]["revision"])})
    return HttpResponseRedirect(reverse("deploy_detail", args=[preview.pk]))


# --- API -------------------------------------------------------------------------------------
def _api_get(pk) -> Preview:
    try:
        return Preview.objects.select_related("job").get(pk=pk)
    except Preview.DoesNotExist:
        raise NotFound("no such deploy") from None


@api_endpoint("operate", methods=("POST",), body=schemas.PreviewBody)
def api_deploy_preview(request, body: schemas.PreviewBody):
    """Make a preview -> 201 with what would change; nothing is applied."""
    preview = service.create_preview(request, body.kind, body.parameters)
    return JsonResponse(service.as_api(preview), status=201)


@api_endpoint("operate", methods=("POST",), body=schemas.DeployBody)
def api_deploys(request, body: schemas.DeployBody):
    """Confirm a preview (one's own or another admin's) -> 202 with its job
    (none yet for a deploy that waits for an approval)."""
    preview = _api_get(body.preview)
    preview.confirm(request=request)
    return JsonResponse(service.as_api(preview), status=202)


@api_endpoint("approve", methods=("POST",), body=schemas.ApproveBody)
def api_deploy_approve(request, pk: int, body: schemas.ApproveBody):
    """Another person's sign-off of a confirmed destructive deploy (the
    Patroni redeploy), with the target namespace typed -> 202 with its job."""
    preview = _api_get(pk)
    if body.confirm != preview.target_namespace:
        raise Invalid(f"Type the namespace name ({preview.target_namespace}) to approve this deploy.")
    preview.approve(request=request)
    return JsonResponse(service.as_api(preview), status=202)


@never_cache
@api_endpoint("view", methods=("GET",))
def api_deploy(request, pk: int):
    return JsonResponse(service.as_api(_api_get(pk)))
