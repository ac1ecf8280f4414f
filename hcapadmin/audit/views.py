"""Audit review (permission ``audit``): list with filters and keyset
pagination, event detail, streamed CSV/JSON export, and GET /api/v1/audit."""

from __future__ import annotations

import csv
import json
from urllib.parse import urlencode

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.audit import query
from hcapadmin.audit.models import OUTCOMES, AuditEvent, record
from hcapadmin.audit.verify import badge_status
from hcapadmin.core.api import json_error

CSV_COLUMNS = ["id", "created_at", "actor", "actor_groups", "source_ip", "user_agent", "action", "target",
               "outcome", "details", "prev_hash", "hash"]


def _link(raw: dict, **extra) -> str:
    params = {**raw, **{k: v for k, v in extra.items() if v is not None}}
    return "?" + urlencode(params) if params else "?"


@require_GET
@permission_required("audit")
def audit_list(request):
    context = {"title": "Audit trail", "outcomes": OUTCOMES, "params": request.GET, "events": [],
               "badge": badge_status()}
    try:
        filters = query.parse_filters(request.GET)
        before = query.parse_before(request.GET)
    except query.FilterError as exc:
        context["error"] = str(exc)
        return render(request, "audit/list.html", context, status=400)
    events, next_cursor = query.page(filters, before, query.PAGE_SIZE)
    context.update({
        "events": events,
        "filtered": bool(filters.raw),
        "is_first": before is None,
        "first_link": _link(filters.raw),
        "next_link": _link(filters.raw, before=next_cursor) if next_cursor else None,
        "export_query": urlencode(filters.raw),
    })
    return render(request, "audit/list.html", context)


@require_GET
@permission_required("audit")
def audit_detail(request, pk: int):
    if not 1 <= pk <= query.MAX_ID:  # beyond bigint: PostgreSQL would refuse the query
        raise Http404("no such audit event")
    try:
        event = AuditEvent.objects.get(pk=pk)
    except AuditEvent.DoesNotExist:
        raise Http404("no such audit event") from None
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


def _csv_safe(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    # Spreadsheet formula injection: a cell must not start with = + - @.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _export(request, fmt: str):
    try:
        filters = query.parse_filters(request.GET)
    except query.FilterError as exc:
        return render(request, "audit/list.html", {"title": "Audit trail", "error": str(exc), "outcomes": OUTCOMES,
                                                   "params": request.GET, "events": []}, status=400)
    upto = query.newest_id()  # the export is of the events before its own audit event
    record("audit.export", request=request, target="audit", details={"format": fmt, "filters": filters.as_details()})
    if fmt == "csv":
        writer = csv.writer(_Echo())

        def rows():
            yield writer.writerow(CSV_COLUMNS)
            for event in query.iter_filtered(filters, upto):
                d = query.event_dict(event)
                yield writer.writerow([_csv_safe(d[c]) if d[c] is not None else "" for c in CSV_COLUMNS])

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
    try:
        filters = query.parse_filters(request.GET)
        before = query.parse_before(request.GET)
        limit = query.parse_limit(request.GET)
    except query.FilterError as exc:
        return json_error(str(exc), 400)
    events, next_cursor = query.page(filters, before, limit)
    from django.http import JsonResponse

    return JsonResponse({"items": [query.event_dict(e) for e in events],
                         "next": str(next_cursor) if next_cursor else None})
