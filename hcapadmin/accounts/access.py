"""The OpenShift access each portal role must also hold in HCAP's namespace
(HCAPADMIN_ROLE_ACCESS_REVIEW): one SelfSubjectAccessReview per check, all
of a role's checks must pass.

One function, read by settings.ROLE_ACCESS_CHECKS and by the role table in
docs/deploy.md (tests/test_deploy_manifests.py compares the two), so the
documentation and the code cannot say different things.  Plain Python: the
settings module imports it.
"""

from __future__ import annotations

# The workload kinds HCAP's server can run as, and the scale subresource an
# admin must be allowed to patch for each (what restarting it means).
SERVER_KINDS = {
    "DeploymentConfig": {"group": "apps.openshift.io", "resource": "deploymentconfigs"},
    "Deployment": {"group": "apps", "resource": "deployments"},
}


def role_access_checks(server_kind: str, server_name: str) -> dict[str, list[dict]]:
    """{role: [SelfSubjectAccessReview resourceAttributes without the
    namespace]}: admins may scale the server (its kind decides the API),
    everyone else may look at its pods."""
    if server_kind not in SERVER_KINDS:
        raise ValueError(f"unknown server kind {server_kind!r}: expected one of {', '.join(SERVER_KINDS)}")
    look = [{"verb": "get", "resource": "pods"}]
    return {
        "admin": [{"verb": "patch", **SERVER_KINDS[server_kind], "subresource": "scale", "name": server_name}],
        "viewer": list(look),
        "approver": list(look),
        "auditor": list(look),
    }
