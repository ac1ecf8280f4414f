"""Template context every page gets: the principal, and the environment
banner (the environment's name and the platform driver's own label)."""

from django.conf import settings

from hcapadmin.core.platform import get_driver


def portal(request):
    banner = get_driver().banner()
    if settings.ENVIRONMENT_NAME:
        banner = f"{settings.ENVIRONMENT_NAME} · {banner}"
    return {
        "principal": getattr(request, "principal", None),
        "environment_banner": banner,
        "is_sandbox": settings.SANDBOX,
        "local_accounts": settings.LOCAL_ACCOUNTS,
    }
