"""Demo accounts for the sandbox (local accounts only)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

DEMO_ROLES = ("admin", "approver", "auditor", "viewer")


def ensure_demo_users(password: str) -> list:
    """Create or reset the four demo users; each is in the first group that
    maps to its role in HCAPADMIN_GROUPS_<ROLE>."""
    User = get_user_model()
    users = []
    for role in DEMO_ROLES:
        group_name = settings.ROLE_GROUPS[role][0]
        group, _ = Group.objects.get_or_create(name=group_name)
        user, _ = User.objects.get_or_create(username=role)
        user.set_password(password)
        user.is_active = True
        user.save()
        user.groups.set([group])
        users.append(user)
    return users
