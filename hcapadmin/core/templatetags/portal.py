"""Template helpers for the page frame.

``{% nav_link "backups_list" "Backups" %}``: a navigation link to a named URL
(reversed, never a written path), marked ``aria-current="page"`` on that
page and every page under it (the dashboard, at ``/``, only on itself)."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, url_name: str, text: str):
    href = reverse(url_name)
    path = context["request"].path
    current = path == href if href == "/" else path.startswith(href)
    if current:
        return format_html('<a href="{}" aria-current="page">{}</a>', href, text)
    return format_html('<a href="{}">{}</a>', href, text)
