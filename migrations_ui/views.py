"""Migrations pages and API.  Reading and predicting live in ops/migrations/; the
POST that applies is migrations_ui/apply.py.  The query string goes through
``migrations_ui.forms.MigrationFiltersForm``; errors are raised for the
decorators to answer (docs/conventions.md)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.core.api import error_page, json_error
from hcapadmin.core.platform import get_driver
from migrations_ui import rendering, state
from migrations_ui.forms import STATUS_FILTERS, STATUS_KEYS, MigrationFiltersForm
from migrations_ui.rendering import render_rows
from ops.errors import Invalid, OpsError
from ops.migrations.report import STATUS_LABELS, Report, find_item
from ops.migrations.ordering import valid_name
from ops.migrations.sources import up_down_lines

PER_PAGE = 100


def _page_context(request, report: Report, status: str = "all", number: int | None = None) -> dict:
    """The list page for ``status`` at page ``number`` (None: the last, where
    the newest and usually the pending migrations are); Invalid for a page
    past the end."""
    items = report.items if status == "all" else report.by_status(status)
    paginator = Paginator(items, PER_PAGE, allow_empty_first_page=True)
    if number is None:
        number = paginator.num_pages
    elif not 1 <= number <= paginator.num_pages:
        raise Invalid(f"page must be a number from 1 to {paginator.num_pages}")
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
    form = MigrationFiltersForm(request.GET)
    if not form.is_valid():
        return error_page(request, 400, form.message())
    report = state.report()
    context = _page_context(request, report, form.cleaned_data["status"], form.cleaned_data["page"])
    return render(request, "migrations_ui/list.html", context)


@never_cache
@permission_required("view")
def migration_detail(request, name: str):
    if not valid_name(name):
        raise Invalid("not a migration name")
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
        except OpsError as exc:  # the page still shows the item, with the reason the file is missing
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
    form = MigrationFiltersForm(request.GET, api=True)
    if not form.is_valid():
        return json_error(form.message(), 400)
    wanted, keys = form.cleaned_data["status"], STATUS_KEYS
    report = state.report()
    if not report.complete:
        errors = [e for e in (report.source_error, report.database_error) if e]
        return JsonResponse({"error": "; ".join(errors), "source_error": report.source_error,
                             "database_error": report.database_error}, status=503)
    body = {key: [i.as_api() for i in report.by_status(key)] for key in keys if wanted in (None, key)}
    body.update({"summary": report.summary, "refusal": report.refusal, "load_error": report.load_error,
                 "table_exists": report.table_exists, "warnings": report.warnings})
    return JsonResponse(body)

