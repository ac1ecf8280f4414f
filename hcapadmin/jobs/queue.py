"""The Redis connection and the RQ queue jobs travel on.

The connection is built from ``settings.REDIS_URL`` each time it is asked for
(cheap: redis-py connects lazily), so a test can point REDIS_URL elsewhere.
"""

from __future__ import annotations

import redis
from django.conf import settings
from rq import Queue

QUEUE_NAME = "default"


def redis_connection() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30
    )


def get_queue(connection: redis.Redis | None = None) -> Queue:
    """django-rq's queue named JOB_QUEUE (configured in RQ_QUEUES), on our connection.
    commit_mode "auto": hcapadmin.jobs.lifecycle already enqueues on commit, and
    must see a Redis failure right there to mark the job failed."""
    import django_rq

    return django_rq.get_queue(getattr(settings, "JOB_QUEUE", QUEUE_NAME), connection=connection or redis_connection(),
                               commit_mode="auto")
