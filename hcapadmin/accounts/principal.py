"""Who is making a request, and what they may do.

A ``Principal`` is built at login (from a local Django account in the
sandbox, or from OpenShift's review of a token) and attached to every request
as ``request.principal`` by ``PrincipalMiddleware``.  Views never look at
``request.user`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

ROLES = ("viewer", "admin", "approver", "auditor")

# What each permission needs.  One place for the whole policy: views name a
# permission, never a role.
PERMISSIONS: dict[str, frozenset[str]] = {
    # read-only pages: dashboard, backups, jobs, migrations
    "view": frozenset({"viewer", "admin", "approver", "auditor"}),
    # the log output may carry personal data from the HCAP server
    "view_logs": frozenset({"viewer", "admin"}),
    # take backups, verify, apply migrations, cancel jobs, export logs
    "operate": frozenset({"admin"}),
    # sign off restore requests
    "approve": frozenset({"approver"}),
    # audit review and export
    "audit": frozenset({"auditor"}),
}


def roles_for_groups(groups) -> frozenset[str]:
    groups = set(groups)
    return frozenset(role for role, mapped in settings.ROLE_GROUPS.items() if groups.intersection(mapped))


@dataclass(frozen=True)
class Principal:
    name: str
    groups: tuple[str, ...] = ()
    roles: frozenset[str] = field(default_factory=frozenset)
    source: str = "local"  # "local" or "openshift"

    def has_perm(self, permission: str) -> bool:
        return bool(self.roles & PERMISSIONS[permission])

    @property
    def role_list(self) -> list[str]:
        return [r for r in ROLES if r in self.roles]

    def as_actor(self) -> dict:
        return {"name": self.name, "groups": list(self.groups), "source": self.source}
