"""manage.py audit_verify: check the whole audit chain.

Exit 0 and the number of events when intact; exit 1 and the first bad
event's id when not.  Streams in chunks (constant memory)."""

import time

from django.core.management.base import BaseCommand, CommandError

from hcapadmin.audit.verify import save_full_result, verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain end to end."

    def add_arguments(self, parser):
        parser.add_argument("--chunk", type=int, default=5000, help="events read per query (default 5000)")
        parser.add_argument("--no-save", action="store_true", help="do not update the review page's checkpoint")

    def handle(self, *args, chunk, no_save, **options):
        if chunk < 1 or chunk > 100_000:
            raise CommandError("--chunk: expected 1..100000")
        started = time.monotonic()
        result = verify_chain(chunk=chunk)
        elapsed = time.monotonic() - started
        if not no_save:
            save_full_result(result)
        if not result.ok:
            raise CommandError(
                f"audit chain BROKEN at event id {result.bad_id}: {result.reason} "
                f"({result.count} events before it verified)", returncode=1)
        rate = result.count / elapsed if elapsed > 0 else 0.0
        self.stdout.write(f"audit chain intact: {result.count} events verified "
                          f"(last id {result.last_id}) in {elapsed:.2f}s, {rate:,.0f} events/s")
