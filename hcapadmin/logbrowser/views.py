"""Log browser pages and API.  Thin: the query string goes through one
form (``hcapadmin.logbrowser.forms.LogFilterForm``; the entry page's through
``LogEntryForm``), querying and formatting live in ops/logs.py, and errors are raised for the decorators to answer
(docs/conventions.md).  Filters live in the query string so every view can
be shared."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import Http404, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.urls import reverse
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.audit.models import record
from hcapadmin.core.api import json_error, status_for
from hcapadmin.lib.svgchart import Frame, stacked_bars
from hcapadmin.logbrowser import mongo
from hcapadmin.logbrowser.forms import LogEntryForm, LogFilterForm, sign_cursor
from ops import logs
from ops.errors import Invalid, OpsError
from ops.logs import LogQueryTimeout, LogUnavailable

UTC = timezone.utc
PRESET_CHOICES = (("15m", "Last 15 minutes"), ("1h", "Last hour"), ("24h", "Last 24 hours"),
                  ("7d", "Last 7 days"), ("all", "All time"))
HISTOGRAM_FRAME = Frame(width=960, height=120)
# Where the log page's rows go (see logs_page).  It starts with "<", which
# autoescaping turns into "&lt;" in every value a person gave, so the marker
# occurs once: where the template puts it.
RESULTS_SLOT = mark_safe("<!-- log rows -->")


class _Request:
    """A valid ``LogFilterForm``'s values, and the links that keep them."""

    def __init__(self, form: LogFilterForm):
        data = form.cleaned_data
        self.source, self.collection = data["source"], data["collection"]
        self.filter, self.limit = data["filter"], data["limit"]
        self.before, self.after, self.follow = data["before"], data["after"], data["follow"]

    def base_params(self, *, with_time=True) -> list[tuple[str, str]]:
        out = []
        if self.source != mongo.default_source():
            out.append(("source", self.source))
        out.extend(self.filter.params(with_time=with_time))
        if self.limit != settings.LOG_PAGE_SIZE:
            out.append(("limit", str(self.limit)))
        return out

    def url(self, name="logs", **extra) -> str:
        pairs = self.base_params() + [(k, v) for k, v in extra.items() if v is not None]
        return reverse(name) + ("?" + urlencode(pairs) if pairs else "")


def _form(request, *, api: bool = False) -> LogFilterForm:
    """The log form on this request's query string (the page's defaults, or
    the API's: no time bound, UTC, the API page size)."""
    if api:
        return LogFilterForm(request.GET, default_range="", tz_default="UTC", default_limit=logs.DEFAULT_LIMIT)
    return LogFilterForm(request.GET, default_range="24h", tz_default=settings.TIME_ZONE,
                         default_limit=settings.LOG_PAGE_SIZE)


def _parsed(request) -> _Request:
    """The page defaults' values; ``Invalid`` with the form's message otherwise."""
    form = _form(request)
    if not form.is_valid():
        raise Invalid(form.message())
    return _Request(form)


# --- formatting -------------------------------------------------------------------------
def _local(ts: datetime, tz) -> str:
    """``ts`` as wall-clock time in ``tz``; a stored date that zone cannot
    show (year 1 west of UTC, 9999-12-31 east of it) is shown in UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    try:
        local = ts.astimezone(tz)
    except OverflowError:
        local = ts.astimezone(UTC)
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " " + local.strftime("%Z")


def _row(doc: dict, tz) -> dict:
    item = logs.serialize(doc, settings.LOG_META_KEYS)
    ts = doc.get("timestamp")
    message = item["message"] if isinstance(item["message"], str) else ("" if item["message"] is None else str(item["message"]))
    lines = message.splitlines() or [""]
    first = lines[0]
    short = first if len(first) <= 240 else first[:240] + "…"
    level = item["level"] if isinstance(item["level"], str) else str(item["level"])
    return {
        "item": item,
        "id": item["id"],
        "local": _local(ts, tz) if isinstance(ts, datetime) else "",
        "utc": item["timestamp"] or "",
        "level": level,
        "level_class": level if level in logs.LEVELS else "other",
        "label": item["label"] or "",
        "hostname": item["hostname"] or "",
        "first_line": short,
        "message": message,
        "expandable": len(lines) > 1 or short != first or item["meta"] is not None,
        "meta_json": json.dumps(item["meta"], indent=2, ensure_ascii=False, sort_keys=True) if item["meta"] is not None else "",
    }


def _legend(buckets) -> list[dict]:
    """Every level with its total in the range: the transport stores only its
    own level and above (``info`` by default), so absent levels are common and
    are shown as such rather than as colours that appear nowhere."""
    totals: dict[str, int] = {}
    for b in buckets:
        for level, count in b.counts.items():
            totals[level] = totals.get(level, 0) + count
    extra = sorted(set(totals) - set(logs.LEVELS))
    return [{"level": lv, "css": lv, "count": totals.get(lv, 0)} for lv in logs.LEVELS] + \
        [{"level": lv, "css": "other", "count": totals[lv]} for lv in extra]


def _svg_histogram(buckets, parsed: _Request, tz) -> dict:
    # Per bucket, bottom up: the known levels most severe first, then any
    # other level (drawn as "other").
    stacks = [[(level if level in logs.LEVELS else "other", b.counts.get(level, 0))
               for level in logs.LEVELS + tuple(sorted(set(b.counts) - set(logs.LEVELS)))] for b in buckets]
    chart = stacked_bars(HISTOGRAM_FRAME, stacks)
    pairs = [p for p in parsed.base_params(with_time=False) if p[0] != "tz"]
    for bar, b in zip(chart["bars"], buckets):
        for rect in bar["rects"]:
            rect["level"] = rect["series"]
        query = pairs + [("since", logs.iso(b.start)), ("until", logs.iso(b.end)), ("tz", parsed.filter.tz)]
        bar["href"] = reverse("logs") + "?" + urlencode(query)
        bar["label"] = (f"{b.start.astimezone(tz):%Y-%m-%d %H:%M} to {b.end.astimezone(tz):%H:%M} "
                        f"{b.end.astimezone(tz):%Z}: {b.total} documents"
                        + "".join(f", {lv} {b.counts[lv]}" for lv in logs.LEVELS if b.counts.get(lv)))
    return {**chart, "legend": _legend(buckets), "total": sum(b.total for b in buckets),
            "first": buckets[0].start if buckets else None, "last": buckets[-1].end if buckets else None}


def _page_context(request, parsed: _Request, page) -> dict:
    tz = ZoneInfo(parsed.filter.tz)
    rows = [_row(d, tz) for d in page.items]
    ctx = {
        "rows": rows,
        "older_url": parsed.url(before=sign_cursor(page.older)) if page.older else None,
        "newer_url": parsed.url(after=sign_cursor(page.newer)) if page.newer else None,
        "newest_url": parsed.url() if (parsed.before or parsed.after) else None,
        "follow_url": None,
        "source_param": parsed.source if parsed.source != mongo.default_source() else "",
    }
    if page.at_newest and parsed.follow:
        after = sign_cursor(logs.position_of(page.items[0])) if page.items else None
        ctx["follow_url"] = parsed.url("logs-follow", after=after, follow="1")
    return ctx


def _form_context(request, parsed: _Request | None) -> dict:
    flt = parsed.filter if parsed else None
    tzname = flt.tz if flt else settings.TIME_ZONE
    tz = ZoneInfo(tzname)
    since_local = until_local = ""
    if flt and flt.range == "custom":
        since_local = flt.since.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S") if flt.since else ""
        until_local = flt.until.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S") if flt.until else ""
    meta_pairs = list(flt.meta) if flt else []
    return {
        "levels": logs.LEVELS,
        "presets": PRESET_CHOICES,
        "sources": mongo.sources(),
        "source": parsed.source if parsed else request.GET.get("source", ""),
        "f": flt,
        "selected_levels": list(flt.levels) if flt else [],
        "range": flt.range if flt else request.GET.get("range", "24h"),
        "since_local": since_local,
        "until_local": until_local,
        "tz": tzname,
        "meta_text": "\n".join(f"{k}={v}" for k, v in meta_pairs),
        "meta_pairs": meta_pairs,
        "since_utc": logs.iso(flt.since) if flt and flt.since else "",
        "until_utc": logs.iso(flt.until) if flt and flt.until else "",
    }


def _meta_box_redirect(request):
    """The page form has one textarea "meta" with key=value lines; turn it
    into meta.<key>=value params and redirect, so the URL stays canonical
    and shareable.  Keys are validated by LogFilterForm after the redirect."""
    query = request.GET.copy()
    lines = "\n".join(query.pop("meta")).splitlines()
    for name in [k for k in query.keys() if k.startswith("meta.")]:
        del query[name]
    for line in lines:
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise Invalid("meta: one key=value per line, e.g. req.status=500")
        key = key.strip()
        key = key[len("meta."):] if key.startswith("meta.") else key
        query.appendlist("meta." + key, value.strip())
    for name in [k for k, v in query.lists() if not any(v)]:
        del query[name]  # empty form fields
    return HttpResponseRedirect(reverse("logs") + ("?" + query.urlencode() if query else ""))


# --- pages --------------------------------------------------------------------------------
@permission_required("view_logs")
def logs_page(request):
    if "meta" in request.GET:
        return _meta_box_redirect(request)
    form = _form(request)
    if not form.is_valid():
        # The page again, with the filters as typed and the reason.
        ctx = {"title": "Logs", "error": form.message(), "missing_indexes": [], "rows": []}
        ctx.update(_form_context(request, None))
        return render(request, "logbrowser/list.html", ctx, status=400)
    parsed = _Request(form)
    ctx = {"title": "Logs", "error": None, "missing_indexes": [], "rows": []}
    ctx.update(_form_context(request, parsed))
    if request.principal.has_perm("operate"):
        try:
            ctx["missing_indexes"] = logs.missing_indexes(parsed.collection, max_time_ms=settings.LOG_MAX_TIME_MS)
        except (LogUnavailable, LogQueryTimeout):
            pass  # the rows query reports the outage
    ctx["histogram_url"] = parsed.url("logs-histogram") if parsed.filter.since else None
    ctx["can_export"] = request.principal.has_perm("operate")
    ctx["export_ndjson"] = parsed.url("logs-export", format="ndjson")
    ctx["export_csv"] = parsed.url("logs-export", format="csv")
    ctx["export_limit"] = settings.LOG_EXPORT_LIMIT
    ctx["follow_toggle_url"] = parsed.url() if parsed.follow else parsed.url(follow="1")
    ctx["following"] = parsed.follow
    ctx["follow_seconds"] = settings.LOG_FOLLOW_SECONDS
    ctx["results_slot"] = RESULTS_SLOT
    above, below = render_to_string("logbrowser/list.html", ctx, request=request).split(RESULTS_SLOT)

    def stream():
        # The part above the rows goes out before the rows are queried: the
        # browser starts the histogram's request while the rows load.
        yield above
        try:
            page = logs.fetch_page(parsed.collection, parsed.filter, before=parsed.before, after=parsed.after,
                                   limit=parsed.limit, max_time_ms=settings.LOG_MAX_TIME_MS)
            results = {**ctx, **_page_context(request, parsed, page)}
        except OpsError as exc:
            # The status line has gone out: the reason takes the rows' place.
            results = {**ctx, "rows_error": str(exc)}
        yield render_to_string("logbrowser/_results.html", results, request=request)
        yield below

    response = StreamingHttpResponse(stream(), content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@permission_required("view_logs")
def logs_histogram(request):
    try:
        parsed = _parsed(request)
        buckets = logs.histogram(parsed.collection, parsed.filter, max_time_ms=settings.LOG_MAX_TIME_MS,
                                 server=mongo.server_kind())
    except OpsError as exc:
        # The fragment says why in place of the chart (the rows above it stand).
        return render(request, "logbrowser/_histogram.html", {"error": str(exc)}, status=status_for(exc))
    hist = _svg_histogram(buckets, parsed, ZoneInfo(parsed.filter.tz))
    return render(request, "logbrowser/_histogram.html", {"hist": hist, "legend": hist["legend"],
                                                          "tz": parsed.filter.tz})


@permission_required("view_logs")
def logs_follow(request):
    form = _form(request)
    if not form.is_valid():
        return render(request, "logbrowser/_follow.html",
                      {"rows": [], "error": form.message(), "follow_url": request.get_full_path(),
                       "follow_seconds": settings.LOG_FOLLOW_SECONDS}, status=400)
    parsed = _Request(form)
    try:
        docs = logs.fetch_newer(parsed.collection, parsed.filter, parsed.after, max_time_ms=settings.LOG_MAX_TIME_MS)
    except OpsError as exc:
        # 200 so htmx swaps the message in and polling continues on transient outages.
        return render(request, "logbrowser/_follow.html",
                      {"rows": [], "error": str(exc), "follow_url": request.get_full_path(),
                       "follow_seconds": settings.LOG_FOLLOW_SECONDS})
    tz = ZoneInfo(parsed.filter.tz)
    newest = logs.position_of(docs[0]) if docs else parsed.after
    after = sign_cursor(newest) if newest else None
    ctx = {"rows": [_row(d, tz) for d in docs], "follow_url": parsed.url("logs-follow", after=after, follow="1"),
           "follow_seconds": settings.LOG_FOLLOW_SECONDS, "tz": parsed.filter.tz,
           "source_param": parsed.source if parsed.source != mongo.default_source() else ""}
    return render(request, "logbrowser/_follow.html", ctx)


@permission_required("view_logs")
def log_detail(request, doc_id: str):
    form = LogEntryForm(request.GET, tz_default=settings.TIME_ZONE)
    if not form.is_valid():
        raise Invalid(form.message())
    source, coll, tz = form.cleaned_data["source"], form.cleaned_data["collection"], form.cleaned_data["tz"]
    doc = logs.find_document(coll, doc_id, max_time_ms=settings.LOG_MAX_TIME_MS)
    if doc is None:
        raise Http404("no such log entry")
    item = logs.serialize(doc, settings.LOG_META_KEYS)
    whole = logs.jsonable(doc)
    whole["_id"] = item["id"]
    pretty = json.dumps(whole, indent=2, ensure_ascii=False, sort_keys=False)
    formatter = HtmlFormatter(cssclass="highlight")
    ctx = {"title": "Log entry", "item": item, "row": _row(doc, ZoneInfo(tz.key)), "source": source,
           "json_html": highlight(pretty, JsonLexer(), formatter), "json_text": pretty,
           "pygments_css": formatter.get_style_defs(".highlight"), "tz": tz.key}
    ts = doc.get("timestamp")
    if isinstance(ts, datetime):
        minute = ts.replace(second=0, microsecond=0)
        pairs = [("source", source)] if source != mongo.default_source() else []
        if logs.TIME_MIN <= minute < logs.TIME_MAX:  # a range the filters accept
            pairs += [("since", logs.iso(minute)), ("until", logs.iso(minute + timedelta(minutes=1))), ("tz", tz.key)]
            ctx["minute_url"] = reverse("logs") + "?" + urlencode(pairs)
    return render(request, "logbrowser/detail.html", ctx)


@permission_required("operate")
def logs_export(request):
    fmt = request.GET.get("format", "ndjson")
    details = {"format": fmt}
    try:
        parsed = _parsed(request)
        details.update({"source": parsed.source, "filter": parsed.filter.describe(),
                        "limit": settings.LOG_EXPORT_LIMIT})
        chunks = logs.export_chunks(parsed.collection, parsed.filter, fmt=fmt, limit=settings.LOG_EXPORT_LIMIT,
                                    max_time_ms=settings.LOG_EXPORT_MAX_TIME_MS)
        first = next(chunks, "")
    except OpsError as exc:
        # Audited, then answered by the decorator with the error's status.
        record("logs.export", request=request, target=request.GET.get("source") or mongo.default_source(),
               outcome="failure" if status_for(exc) < 500 else "error", details={**details, "error": str(exc)})
        raise
    record("logs.export", request=request, target=parsed.source, outcome="success", details=details)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    content_type = "application/x-ndjson; charset=utf-8" if fmt == "ndjson" else "text/csv; charset=utf-8"
    response = StreamingHttpResponse(itertools.chain([first], chunks), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="logs-{parsed.source}-{stamp}.{fmt}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


# --- API -------------------------------------------------------------------------------------
@api_endpoint("view_logs", methods=("GET",))
def api_logs(request):
    form = _form(request, api=True)
    if not form.is_valid():
        return json_error(form.message(), 400)
    parsed = _Request(form)
    page = logs.fetch_page(parsed.collection, parsed.filter, before=parsed.before, after=parsed.after,
                           limit=parsed.limit, max_time_ms=settings.LOG_MAX_TIME_MS)
    return JsonResponse({
        "items": [logs.serialize(d, settings.LOG_META_KEYS) for d in page.items],
        "next": sign_cursor(page.older) if page.older else None,
        "newer": sign_cursor(page.newer) if page.newer else None,
    })
