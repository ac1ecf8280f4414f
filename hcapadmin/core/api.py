"""Small helpers shared by every /api/v1/ endpoint."""

from __future__ import annotations

from django.http import JsonResponse


def json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)
