"""The restore request's own job kind: ``restore.discard_previous`` drops
the ``<db>_pre_restore_<stamp>`` database a succeeded restore kept.

The restore itself is the platform's runbook kind (``restore.local`` in
hcapadmin.restores.runbook; the kind is chosen by
hcapadmin.restores.workflow.restore_kind), submitted when a request's last
approval arrives.
"""

from __future__ import annotations

from hcapadmin.jobs.registry import job_kind
from hcapadmin.restores.models import RestoreRequest
from ops.errors import Invalid


def _request(params) -> RestoreRequest:
    pk = params.get("request")
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise Invalid("restore job without a request id")
    try:
        return RestoreRequest.objects.get(pk=pk)
    except RestoreRequest.DoesNotExist:
        raise Invalid(f"restore request #{pk} does not exist") from None


@job_kind("restore.discard_previous", title="Discard the pre-restore database", mutating=True, timeout=3600)
def run_discard_previous(ctx, params) -> dict:
    from django.db import transaction

    from hcapadmin.audit.models import record
    from hcapadmin.core.platform import get_driver
    from ops import restore as ops_restore

    req = _request(params)
    name = params.get("database")
    if not req.previous_database or name != req.previous_database:
        raise Invalid(f"{name!r} is not the kept pre-restore database of request #{req.pk}")
    with ctx.step(f"Drop {name}"):
        result = ops_restore.discard_previous(get_driver().maintenance_conninfo(), name,
                                              target=req.target, log=ctx.log)
    with transaction.atomic():
        RestoreRequest.objects.filter(pk=req.pk).update(previous_discarded=True)
        record("restore.previous_discarded", actor="system", target=req.target,
               details=req.details(database=name, job=ctx.job.pk, dropped=bool(result.get("dropped"))))
    return {"request": req.pk, **result}
