"""At most one mutating job per target database at a time.

The lock is a Redis key ``hcapadmin:joblock:<target>`` holding the owning job's
id, set with ``SET NX EX <ttl>``.  The worker's heartbeat refreshes the TTL
while the job runs; if the worker dies (SIGKILL, OOM, node lost) nobody
refreshes it and the key expires after ``JOB_LOCK_TTL_SECONDS``, so a crash
cannot wedge a database forever.  Refresh and release are compare-and-set
(Lua), so a worker never extends or deletes a lock another job now owns.

Why Redis rather than a PostgreSQL advisory lock on a dedicated connection:
the lock lives beside the queue the workers already depend on, it works the
same whichever database the job targets (the portal database, the managed one,
or none at all on OpenShift), and its expiry is explicit and visible (TTL)
instead of depending on when the server notices a dead TCP connection.
"""

from __future__ import annotations

from django.conf import settings

_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lock_key(target: str) -> str:
    return f"hcapadmin:joblock:{target}"


def owner_value(job_pk: int) -> str:
    return f"job:{job_pk}"


def ttl() -> int:
    return int(getattr(settings, "JOB_LOCK_TTL_SECONDS", 60))


def try_acquire(conn, target: str, job_pk: int) -> bool:
    return bool(conn.set(lock_key(target), owner_value(job_pk), nx=True, ex=ttl()))


def refresh(conn, target: str, job_pk: int) -> bool:
    return bool(conn.eval(_REFRESH, 1, lock_key(target), owner_value(job_pk), ttl()))


def release(conn, target: str, job_pk: int) -> bool:
    return bool(conn.eval(_RELEASE, 1, lock_key(target), owner_value(job_pk)))


def holds(conn, target: str, job_pk: int) -> bool:
    """True while job ``job_pk`` owns the lock on ``target``."""
    value = conn.get(lock_key(target))
    return value is not None and value.decode() == owner_value(job_pk)


def holder(conn, target: str) -> int | None:
    value = conn.get(lock_key(target))
    if not value:
        return None
    try:
        return int(value.decode().split(":", 1)[1])
    except (IndexError, ValueError):
        return None
