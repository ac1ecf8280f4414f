from django import template

register = template.Library()


@register.filter
def duration(seconds):
    """12.3 -> "12 s", 75 -> "1 min 15 s", 7300 -> "2 h 1 min"."""
    if seconds is None or seconds == "":
        return "—"
    try:
        total = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "—"
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


STATUS_CLASS = {"succeeded": "ok", "failed": "bad", "abandoned": "bad", "needs_attention": "bad", "cancelled": "warn",
                "running": "", "queued": ""}


@register.filter
def status_class(status):
    return STATUS_CLASS.get(status, "")


@register.filter
def age(item_or_seconds):
    seconds = getattr(item_or_seconds, "age_seconds", item_or_seconds)
    return duration(seconds)


@register.filter
def isotime(value, fmt="%H:%M:%S"):
    """An ISO timestamp string (as stored in job steps) in the portal's time zone."""
    from datetime import datetime, timezone as dt_timezone

    from django.utils import timezone

    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return ""
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt_timezone.utc)
    return timezone.localtime(parsed).strftime(fmt)
