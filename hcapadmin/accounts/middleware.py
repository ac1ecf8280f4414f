from __future__ import annotations

from django.conf import settings

from hcapadmin.accounts.principal import Principal, roles_for_groups


def principal_from_local_user(user) -> Principal | None:
    if not settings.LOCAL_ACCOUNTS or not user.is_authenticated or not user.is_active:
        return None
    groups = tuple(sorted(user.groups.values_list("name", flat=True)))
    return Principal(name=user.get_username(), groups=groups, roles=roles_for_groups(groups), source="local")


class PrincipalMiddleware:
    """Sets ``request.principal`` (a Principal or None)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.principal = principal_from_local_user(request.user)
        return self.get_response(request)
