"""Log browser pages and API.  Thin: parsing, querying and
formatting live in ops/logs.py; this module maps errors to statuses and
renders.  Filters live in the query string so every view can be shared."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.audit.models import record
from hcapadmin.core.api import json_error
from hcapadmin.logbrowser import mongo
from ops import logs
from ops.logs import LogFilterError, LogQueryTimeout, LogUnavailable

UTC = timezone.utc
PRESET_CHOICES = (("15m", "Last 15 minutes"), ("1h", "Last hour"), ("24h", "Last 24 hours"),
                  ("7d", "Last 7 days"), ("all", "All time"))


def _key() -> bytes:
    return ("hcapadmin.logbrowser.cursor:" + settings.SECRET_KEY).encode("utf-8")


def _status(exc: Exception) -> int:
    if isinstance(exc, LogFilterError):
        return 400
    if isinstance(exc, LogQueryTimeout):
        return 504
    return 503


class _Request:
    """Everything parsed from one request's query string."""

    def __init__(self, request, *, default_range: str, tz_default: str, default_limit: int):
        params = request.GET
        self.source, self.collection = mongo.collection(params.get("source") or None)
        self.filter = logs.parse_filter(params, tz_default=tz_default, default_range=default_range,
                                        meta_keys=settings.LOG_META_KEYS)
        self.limit = logs.parse_limit(params.get("limit"), default=default_limit)
        before, after = params.get("before"), params.get("after")
        if before and after:
            raise LogFilterError("give before or after, not both")
        self.before = logs.decode_cursor(before, _key()) if before else None
        self.after = logs.decode_cursor(after, _key()) if after else None
        self.follow = params.get("follow") == "1"

    def base_params(self, *, with_time=True) -> list[tuple[str, str]]:
        out = []
        if self.source != mongo.default_source():
            out.append(("source", self.source))
        out.extend(self.filter.params(with_time=with_time))
        if self.limit != settings.LOG_PAGE_SIZE:
            out.append(("limit", str(self.limit)))
        return out

    def url(self, path="/logs/", **extra) -> str:
        pairs = self.base_params() + [(k, v) for k, v in extra.items() if v is not None]
        return path + ("?" + urlencode(pairs) if pairs else "")


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
    width, height = 960, 120
    top = max((b.total for b in buckets), default=0)
    n = max(len(buckets), 1)
    slot = width / n
    bars = []
    for i, b in enumerate(buckets):
        x = i * slot
        y = height
        rects = []
        for level in logs.LEVELS + tuple(sorted(set(b.counts) - set(logs.LEVELS))):
            count = b.counts.get(level, 0)
            if not count or not top:
                continue
            h = max(count / top * height, 1)
            y -= h
            rects.append({"level": level if level in logs.LEVELS else "other", "x": round(x + 1, 2), "y": round(y, 2),
                          "w": round(max(slot - 2, 1), 2), "h": round(h, 2)})
        pairs = [p for p in parsed.base_params(with_time=False) if p[0] != "tz"]
        pairs += [("since", logs.iso(b.start)), ("until", logs.iso(b.end)), ("tz", parsed.filter.tz)]
        label = (f"{b.start.astimezone(tz):%Y-%m-%d %H:%M} to {b.end.astimezone(tz):%H:%M} {b.end.astimezone(tz):%Z}: "
                 f"{b.total} documents" + "".join(f", {lv} {b.counts[lv]}" for lv in logs.LEVELS if b.counts.get(lv)))
        bars.append({"x": round(x, 2), "w": round(slot, 2), "rects": rects, "href": "/logs/?" + urlencode(pairs),
                     "label": label, "total": b.total})
    return {"width": width, "height": height, "bars": bars, "max": top, "legend": _legend(buckets),
            "total": sum(b.total for b in buckets), "first": buckets[0].start if buckets else None,
            "last": buckets[-1].end if buckets else None}


def _page_context(request, parsed: _Request, page) -> dict:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(parsed.filter.tz)
    rows = [_row(d, tz) for d in page.items]
    ctx = {
        "rows": rows,
        "older_url": parsed.url(before=logs.encode_cursor(page.older, _key())) if page.older else None,
        "newer_url": parsed.url(after=logs.encode_cursor(page.newer, _key())) if page.newer else None,
        "newest_url": parsed.url() if (parsed.before or parsed.after) else None,
        "follow_url": None,
        "source_param": parsed.source if parsed.source != mongo.default_source() else "",
    }
    if page.at_newest and parsed.follow:
        after = logs.encode_cursor(logs.position_of(page.items[0]), _key()) if page.items else None
        ctx["follow_url"] = parsed.url("/logs/follow", after=after, follow="1")
    return ctx


def _form_context(request, parsed: _Request | None) -> dict:
    flt = parsed.filter if parsed else None
    tzname = flt.tz if flt else settings.TIME_ZONE
    from zoneinfo import ZoneInfo

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
    and shareable.  Keys are validated by parse_filter after the redirect."""
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
            raise LogFilterError("meta: one key=value per line, e.g. req.status=500")
        key = key.strip()
        key = key[len("meta."):] if key.startswith("meta.") else key
        query.appendlist("meta." + key, value.strip())
    for name in [k for k, v in query.lists() if not any(v)]:
        del query[name]  # empty form fields
    return HttpResponseRedirect("/logs/" + ("?" + query.urlencode() if query else ""))


# --- pages --------------------------------------------------------------------------------
@permission_required("view_logs")
def logs_page(request):
    ctx = {"title": "Logs", "error": None, "missing_indexes": [], "rows": []}
    parsed = None
    status = 200
    try:
        if "meta" in request.GET:
            return _meta_box_redirect(request)
        parsed = _Request(request, default_range="24h", tz_default=settings.TIME_ZONE,
                          default_limit=settings.LOG_PAGE_SIZE)
        ctx.update(_form_context(request, parsed))
        if request.principal.has_perm("operate"):
            try:
                ctx["missing_indexes"] = logs.missing_indexes(parsed.collection, max_time_ms=settings.LOG_MAX_TIME_MS)
            except (LogUnavailable, LogQueryTimeout):
                pass  # the page query below reports the outage
        page = logs.fetch_page(parsed.collection, parsed.filter, before=parsed.before, after=parsed.after,
                               limit=parsed.limit, max_time_ms=settings.LOG_MAX_TIME_MS)
        ctx.update(_page_context(request, parsed, page))
        ctx["histogram_url"] = parsed.url("/logs/histogram") if parsed.filter.since else None
        ctx["can_export"] = request.principal.has_perm("operate")
        ctx["export_ndjson"] = parsed.url("/logs/export", format="ndjson")
        ctx["export_csv"] = parsed.url("/logs/export", format="csv")
        ctx["export_limit"] = settings.LOG_EXPORT_LIMIT
        ctx["follow_toggle_url"] = parsed.url() if parsed.follow else parsed.url(follow="1")
        ctx["following"] = parsed.follow
        ctx["follow_seconds"] = settings.LOG_FOLLOW_SECONDS
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        status = _status(exc)
        ctx["error"] = str(exc)
        if "levels" not in ctx:
            ctx.update(_form_context(request, parsed))
    return render(request, "logbrowser/list.html", ctx, status=status)


@permission_required("view_logs")
def logs_histogram(request):
    from zoneinfo import ZoneInfo

    try:
        parsed = _Request(request, default_range="24h", tz_default=settings.TIME_ZONE,
                          default_limit=settings.LOG_PAGE_SIZE)
        buckets = logs.histogram(parsed.collection, parsed.filter, max_time_ms=settings.LOG_MAX_TIME_MS,
                                 server=mongo.server_kind())
        hist = _svg_histogram(buckets, parsed, ZoneInfo(parsed.filter.tz))
        ctx = {"hist": hist, "legend": hist["legend"], "tz": parsed.filter.tz}
        return render(request, "logbrowser/_histogram.html", ctx)
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        return render(request, "logbrowser/_histogram.html", {"error": str(exc)}, status=_status(exc))


@permission_required("view_logs")
def logs_follow(request):
    from zoneinfo import ZoneInfo

    try:
        parsed = _Request(request, default_range="24h", tz_default=settings.TIME_ZONE,
                          default_limit=settings.LOG_PAGE_SIZE)
        docs = logs.fetch_newer(parsed.collection, parsed.filter, parsed.after, max_time_ms=settings.LOG_MAX_TIME_MS)
        tz = ZoneInfo(parsed.filter.tz)
        newest = logs.position_of(docs[0]) if docs else parsed.after
        after = logs.encode_cursor(newest, _key()) if newest else None
        ctx = {"rows": [_row(d, tz) for d in docs], "follow_url": parsed.url("/logs/follow", after=after, follow="1"),
               "follow_seconds": settings.LOG_FOLLOW_SECONDS, "tz": parsed.filter.tz,
               "source_param": parsed.source if parsed.source != mongo.default_source() else ""}
        return render(request, "logbrowser/_follow.html", ctx)
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        # 200 so htmx swaps the message in and polling continues on transient outages.
        ctx = {"rows": [], "error": str(exc), "follow_url": request.get_full_path(),
               "follow_seconds": settings.LOG_FOLLOW_SECONDS}
        return render(request, "logbrowser/_follow.html", ctx, status=400 if isinstance(exc, LogFilterError) else 200)


@permission_required("view_logs")
def log_detail(request, doc_id: str):
    from zoneinfo import ZoneInfo

    try:
        source, coll = mongo.collection(request.GET.get("source") or None)
        tz = logs.parse_timezone(request.GET.get("tz"), settings.TIME_ZONE)
        doc = logs.find_document(coll, doc_id, max_time_ms=settings.LOG_MAX_TIME_MS)
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        return render(request, "logbrowser/detail.html", {"title": "Log entry", "error": str(exc)},
                      status=_status(exc))
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
            ctx["minute_url"] = "/logs/?" + urlencode(pairs)
    return render(request, "logbrowser/detail.html", ctx)


@permission_required("operate")
def logs_export(request):
    fmt = request.GET.get("format", "ndjson")
    details = {"format": fmt}
    try:
        parsed = _Request(request, default_range="24h", tz_default=settings.TIME_ZONE,
                          default_limit=settings.LOG_PAGE_SIZE)
        details.update({"source": parsed.source, "filter": parsed.filter.describe(),
                        "limit": settings.LOG_EXPORT_LIMIT})
        chunks = logs.export_chunks(parsed.collection, parsed.filter, fmt=fmt, limit=settings.LOG_EXPORT_LIMIT,
                                    max_time_ms=settings.LOG_EXPORT_MAX_TIME_MS)
        first = next(chunks, "")
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        status = _status(exc)
        record("logs.export", request=request, target=request.GET.get("source") or mongo.default_source(),
               outcome="failure" if status == 400 else "error", details={**details, "error": str(exc)})
        ctx = {"title": "Logs export", "error": str(exc)}
        ctx.update(_form_context(request, None))
        return render(request, "logbrowser/list.html", ctx, status=status)
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
    try:
        parsed = _Request(request, default_range="", tz_default="UTC", default_limit=logs.DEFAULT_LIMIT)
        page = logs.fetch_page(parsed.collection, parsed.filter, before=parsed.before, after=parsed.after,
                               limit=parsed.limit, max_time_ms=settings.LOG_MAX_TIME_MS)
    except (LogFilterError, LogQueryTimeout, LogUnavailable) as exc:
        return json_error(str(exc), _status(exc))
    return JsonResponse({
        "items": [logs.serialize(d, settings.LOG_META_KEYS) for d in page.items],
        "next": logs.encode_cursor(page.older, _key()) if page.older else None,
        "newer": logs.encode_cursor(page.newer, _key()) if page.newer else None,
    })
