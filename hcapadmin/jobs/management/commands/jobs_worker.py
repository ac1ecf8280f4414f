"""``python manage.py jobs_worker``: the RQ worker as production runs it.

An RQ ``SimpleWorker`` (jobs run in the worker process itself, no fork per
job: a SIGKILL of the worker takes the job with it, so nothing keeps running
unsupervised, and the Django database connection is never shared across a
fork), plus a sweeper thread that marks jobs of dead workers ``abandoned``
and runs the apps' periodic upkeep (``lifecycle.register_upkeep``: expiring
restore requests).
SIGTERM (OpenShift stopping the pod) lets the current job finish; a second
SIGTERM or SIGKILL stops at once, and the job is then found by the sweeper.
"""

from __future__ import annotations

import importlib
import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection
from rq import SimpleWorker

from hcapadmin.jobs.queue import get_queue, redis_connection
from hcapadmin.jobs.registry import all_kinds

logger = logging.getLogger("hcapadmin.jobs")


class Sweeper(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(name="jobs-sweeper", daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self):
        from hcapadmin.jobs.lifecycle import run_upkeep, sweep

        try:
            while True:
                try:
                    close_old_connections()
                    found = sweep()
                    if found:
                        logger.warning("marked abandoned: %s", ", ".join(f"#{pk}" for pk in found))
                except Exception as exc:
                    logger.warning("sweep failed: %s", exc)
                run_upkeep()
                if self.stop_event.wait(self.interval):
                    break
        finally:
            connection.close()


class Command(BaseCommand):
    help = "Run the job worker (RQ) that executes backups, verifications, migrations, restores."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
        parser.add_argument("--name", default=None, help="worker name (default: RQ's)")
        parser.add_argument("--import", dest="imports", action="append", default=[],
                            help="extra module registering job kinds (repeatable; used by tests)")
        parser.add_argument("--sweep-interval", type=float, default=None,
                            help="seconds between abandoned-job sweeps (default HCAPADMIN_JOB_SWEEP_SECONDS)")

    def handle(self, *args, **options):
        for module in options["imports"]:
            importlib.import_module(module)
        conn = redis_connection()
        queue = get_queue(conn)
        interval = options["sweep_interval"] or float(getattr(settings, "JOB_SWEEP_SECONDS", 30))
        sweeper = Sweeper(interval)
        sweeper.start()
        kinds = ", ".join(all_kinds()) or "none"
        self.stdout.write(f"jobs_worker: queue {queue.name!r}, kinds: {kinds}")
        self.stdout.flush()
        close_old_connections()
        worker = SimpleWorker([queue], connection=conn, name=options["name"])
        try:
            worker.work(burst=options["burst"], with_scheduler=False,
                        logging_level=logging.getLevelName(logging.getLogger().level) or "INFO")
        finally:
            sweeper.stop_event.set()
            sweeper.join(timeout=5)
