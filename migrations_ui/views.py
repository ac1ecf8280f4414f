"""Migrations pages and API.  Reading and predicting live in ops/migrations/; the
POST that applies is migrations_ui/apply.py."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.core.api import json_error
from hcapadmin.core.platform import get_driver
from migrations_ui import rendering, state
from migrations_ui.rendering import render_rows
from ops.errors import OpsError
from ops.migrations.report import (APPLIED, MISSING, OUT_OF_ORDER, PENDING, STATUS_LABELS, Report,
                                   find_item)
from ops.migrations.ordering import valid_name
from ops.migrations.sources import up_down_lines

PER_PAGE = 100
STATUS_FILTERS = ("all", APPLIED, PENDING, MISSING, OUT_OF_ORDER)


def _page_context(request, report: Report) -> dict:
    status = request.GET.get("status", "all")
    if status not in STATUS_FILTERS:
        raise ValueError("status must be one of " + ", ".join(STATUS_FILTERS))
    items = report.items if status == "all" else report.by_status(status)
    paginator = Paginator(items, PER_PAGE, allow_empty_first_page=True)
    raw_page = request.GET.get("page")
    if raw_page is None:
        number = paginator.num_pages  # newest migrations (and usually the pending ones) last
    else:
        if not raw_page.isdigit() or not (1 <= int(raw_page) <= paginator.num_pages):
            raise ValueError(f"page must be a number from 1 to {paginator.num_pages}")
        number = int(raw_page)
    attention = report.attention
    page_obj = paginator.page(number)
    return {
        "title": "Migrations",
        "report": report,
        "counts": report.counts,
        "page_obj": page_obj,
        "page_rows": rendering.fragment(report, ("rows", status, number), lambda: render_rows(page_obj.object_list)),
        "attention_rows": rendering.fragment(report, ("attention",), lambda: render_rows(attention[:200])),
        "status": status,
        "status_filters": [(s, "all" if s == "all" else STATUS_LABELS[s]) for s in STATUS_FILTERS],
        "attention": attention[:200],
        "attention_more": max(0, len(attention) - 200),
        "table": state.table(),
        "to_apply": report.to_apply,
        "can_apply": report.complete and not report.will_refuse and not report.load_error and bool(report.to_apply),
        "may_operate": request.principal.has_perm("operate"),
    }


@never_cache
@permission_required("view")
def migration_list(request):
    report = state.report()
    try:
        context = _page_context(request, report)
    except ValueError as exc:
        # A whole page (title, language, navigation), not bare text: people follow these links.
        return render(request, "400.html", {"title": "Bad request", "reason": str(exc)}, status=400)
    return render(request, "migrations_ui/list.html", context)


@never_cache
@permission_required("view")
def migration_detail(request, name: str):
    if not valid_name(name):
        return render(request, "400.html", {"reason": "not a migration name"}, status=400)
    report = state.report()
    item = find_item(report, name)
    if item is None:
        if report.source_error or report.database_error:
            return render(request, "migrations_ui/detail.html",
                          {"title": name, "name": name, "report": report, "item": None}, status=503)
        raise Http404(f"no migration {name}")
    context = {"title": f"Migration {item.name}", "name": item.name, "report": report, "item": item}
    if item.file:
        try:
            source_text = get_driver().read_migration(item.file, report.files)
        except OpsError as exc:
            context["read_error"] = str(exc)
        else:
            marks = up_down_lines(source_text)
            html, css = rendering.highlight(item.file, source_text, marked_lines=[marks["up"], marks["down"]])
            context.update({"source_html": html, "source_css": css, "marks": marks,
                            "lines": len(source_text.splitlines())})
    return render(request, "migrations_ui/detail.html", context)


@never_cache
@api_endpoint("view", methods=("GET",))
def api_migrations(request):
    unknown = set(request.GET) - {"status"}
    if unknown:
        return json_error(f"unknown parameter(s): {', '.join(sorted(unknown))}", 400)
    wanted = request.GET.get("status")
    keys = (APPLIED, PENDING, MISSING, OUT_OF_ORDER)
    if wanted is not None and wanted not in keys:
        return json_error("status must be one of " + ", ".join(keys), 400)
    report = state.report()
    if not report.complete:
        errors = [e for e in (report.source_error, report.database_error) if e]
        return JsonResponse({"error": "; ".join(errors), "source_error": report.source_error,
                             "database_error": report.database_error}, status=503)
    body = {key: [i.as_api() for i in report.by_status(key)] for key in keys if wanted in (None, key)}
    body.update({"summary": report.summary, "refusal": report.refusal, "load_error": report.load_error,
                 "table_exists": report.table_exists, "warnings": report.warnings})
    return JsonResponse(body)

