"""Audit review (permission ``audit``): list with filters and keyset
pagination, event detail, streamed CSV/JSON export, and GET /api/v1/audit.
The page, the exports and the API read the query string through one form,
``hcapadmin.audit.forms.AuditFiltersForm``."""

from __future__ import annotations

import csv
import json
from urllib.parse import urlencode

from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.audit import query
from hcapadmin.audit.forms import AuditFiltersForm
from hcapadmin.audit.models import OUTCOMES, AuditEvent, record
from hcapadmin.audit.verify import badge_status
from hcapadmin.core.api import json_error
from ops.csvsafe import cell

CSV_COLUMNS = ["id", "created_at", "actor", "actor_groups", "source_ip", "user_agent", "action", "target",
               "outcome", "details", "prev_hash", "hash"]


def _link(raw: dict, **extra) -> str:
    params = {**raw, **{k: v for k, v in extra.items() if v is not None}}
    return "?" + urlencode(params) if params else "?"


def _refused_page(request, form: AuditFiltersForm, **context):
    """The review page, with the form's message, as a 400."""
    return render(request, "audit/list.html", {"title": "Audit trail", "error": form.message(), "outcomes": OUTCOMES,
                                               "params": request.GET, "events": [], **context}, status=400)


@require_GET
@permission_required("audit")
def audit_list(request):
    form = AuditFiltersForm(request.GET, paging="page")
    if not form.is_valid():
        return _refused_page(request, form, badge=badge_status())
    filters = form.filters()
    events, next_cursor = query.page(filters, form.cursor, query.PAGE_SIZE)
    return render(request, "audit/list.html", {
        "title": "Audit trail", "outcomes": OUTCOMES, "params": request.GET, "badge": badge_status(),
        "events": events,
        "filtered": bool(filters.raw),
        "is_first": form.cursor is None,
        "first_link": _link(filters.raw),
        "next_link": _link(filters.raw, before=query.sign_cursor(next_cursor)) if next_cursor else None,
        "export_query": urlencode(filters.raw),
    })


@require_GET
@permission_required("audit")
def audit_detail(request, pk: int):
    if not 1 <= pk <= query.MAX_ID:  # beyond bigint: PostgreSQL would refuse the query
        raise Http404("no such audit event")
    event = AuditEvent.objects.filter(pk=pk).first()
    if event is None:
        raise Http404("no such audit event")
    previous = AuditEvent.objects.filter(id__lt=pk).order_by("-id").values_list("id", flat=True).first()
    following = AuditEvent.objects.filter(id__gt=pk).order_by("id").values_list("id", flat=True).first()
    return render(request, "audit/detail.html", {
        "title": f"Audit event {event.pk}",
        "event": event,
        "details_json": json.dumps(event.details, indent=2, sort_keys=True, ensure_ascii=False),
        "previous_id": previous,
        "next_id": following,
    })


class _Echo:
    def write(self, value):
        return value


def _export(request, fmt: str):
    form = AuditFiltersForm(request.GET)  # an export takes no cursor and no limit
    if not form.is_valid():
        return _refused_page(request, form)
    filters = form.filters()
    upto = query.newest_id()  # the export is of the events before its own audit event
    record("audit.export", request=request, target="audit", details={"format": fmt, "filters": filters.as_details()})
    if fmt == "csv":
        writer = csv.writer(_Echo())

        def rows():
            yield writer.writerow(CSV_COLUMNS)
            for event in query.iter_filtered(filters, upto):
                d = query.event_dict(event)
                yield writer.writerow([cell(d[c]) for c in CSV_COLUMNS])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    else:
        def items():
            yield "[\n"
            first = True
            for event in query.iter_filtered(filters, upto):
                yield ("" if first else ",\n") + json.dumps(query.event_dict(event), ensure_ascii=False)
                first = False
            yield "\n]\n"

        response = StreamingHttpResponse(items(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-export.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@permission_required("audit")
def audit_export_csv(request):
    return _export(request, "csv")


@require_GET
@permission_required("audit")
def audit_export_json(request):
    return _export(request, "json")


@api_endpoint("audit", methods=("GET",))
def api_audit(request):
    form = AuditFiltersForm(request.GET, paging="api")
    if not form.is_valid():
        return json_error(form.message(), 400)
    events, next_cursor = query.page(form.filters(), form.cursor, form.page_size)
    return JsonResponse({"items": [query.event_dict(e) for e in events],
                         "next": query.sign_cursor(next_cursor) if next_cursor else None})
