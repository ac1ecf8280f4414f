from django.conf import settings


def portal(request):
    from hcapadmin.core.platform import driver_config

    if settings.PLATFORM == "openshift":
        cfg = driver_config()
        banner = f"OpenShift · {cfg['api_url']} · namespace {cfg['namespace']}"
    else:
        banner = "Local platform"
    if settings.ENVIRONMENT_NAME:
        banner = f"{settings.ENVIRONMENT_NAME} · {banner}"
    return {
        "principal": getattr(request, "principal", None),
        "environment_banner": banner,
        "is_sandbox": settings.SANDBOX,
        "local_accounts": settings.LOCAL_ACCOUNTS,
    }
