"""python manage.py logs_indexes [--apply] [--source NAME]

Reports (and with --apply creates) the indexes the log browser needs on each
configured source: ``timestamp`` descending and ``level`` + ``timestamp``."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hcapadmin.audit.models import command_actor, record
from hcapadmin.logbrowser import mongo
from ops.errors import OpsError
from ops.logs import ensure_indexes, index_status


class Command(BaseCommand):
    help = "Report (and with --apply create) the MongoDB indexes the log browser needs."

    def add_arguments(self, parser):
        parser.add_argument("--apply", action="store_true", help="create the missing indexes")
        parser.add_argument("--source", action="append", help="only this source (repeatable)")

    def handle(self, *args, **options):
        names = options["source"] or list(settings.LOG_SOURCES)
        missing_total = 0
        for name in names:
            if name not in settings.LOG_SOURCES:
                raise CommandError(f"unknown source {name!r}; configured: {', '.join(settings.LOG_SOURCES)}")
            _, coll = mongo.collection(name)
            db, cname = settings.LOG_SOURCES[name]
            try:
                if options["apply"]:
                    created = ensure_indexes(coll)
                    for index in created:
                        self.stdout.write(f"{name} ({db}.{cname}): created {index}")
                    if created:
                        record("logs.indexes_created", actor=command_actor(),
                               target=f"{db}.{cname}", details={"source": name, "indexes": created})
                rows = index_status(coll)
            except OpsError as exc:
                raise CommandError(f"{name} ({db}.{cname}): {exc}") from None
            for row in rows:
                state = "present" if row["present"] else "MISSING"
                self.stdout.write(f"{name} ({db}.{cname}): {row['name']} {state}")
                missing_total += 0 if row["present"] else 1
        if missing_total and not options["apply"]:
            self.stdout.write(f"{missing_total} index(es) missing; run with --apply to create them")
