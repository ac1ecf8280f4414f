"""python manage.py logs_indexes [--apply] [--source NAME]

Reports (and with --apply creates) the indexes the log browser needs on each
configured source: ``timestamp`` descending and ``level`` + ``timestamp``.
It also says which of the metadata fields (``HCAPADMIN_LOG_META_KEYS``) the
documents use: metadata filters are checked on the documents the time/level
index selects, once per configured field, so a field no document uses is
worth dropping from the setting."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hcapadmin.audit.models import command_actor, record
from hcapadmin.logbrowser import mongo
from ops.errors import OpsError
from ops.logs import ensure_indexes, index_status, meta_key_usage


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
                usage = meta_key_usage(coll, settings.LOG_META_KEYS)
            except OpsError as exc:
                raise CommandError(f"{name} ({db}.{cname}): {exc}") from None
            for row in rows:
                state = "present" if row["present"] else "MISSING"
                self.stdout.write(f"{name} ({db}.{cname}): {row['name']} {state}")
                missing_total += 0 if row["present"] else 1
            for field, used in usage.items():
                self.stdout.write(f"{name} ({db}.{cname}): metadata field {field!r} "
                                  + ("in use" if used else "not in any document"))
            used = [field for field, in_use in usage.items() if in_use]
            if used and len(used) < len(usage):
                self.stdout.write(f"{name}: metadata filters would check one field less per document with "
                                  f"HCAPADMIN_LOG_META_KEYS={','.join(used)}")
        if missing_total and not options["apply"]:
            self.stdout.write(f"{missing_total} index(es) missing; run with --apply to create them")
