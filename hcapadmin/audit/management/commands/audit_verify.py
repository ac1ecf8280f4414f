"""manage.py audit_verify: check the whole audit chain.

Exit 0 and the number of events when intact; exit 1 and the first bad
event's id (or how many events a shortened chain lost) when not.  Streams
in chunks (constant memory).  Every run also prints and logs the head event
id and hash: a log kept outside the database can later prove how long the
chain was, which nothing inside the database can."""

import logging
import time

from django.core.management.base import BaseCommand, CommandError

from hcapadmin.audit.verify import head, save_full_result, verify_full

logger = logging.getLogger("hcapadmin.audit")


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain end to end."

    def add_arguments(self, parser):
        parser.add_argument("--chunk", type=int, default=5000, help="events read per query (default 5000)")
        parser.add_argument("--no-save", action="store_true", help="do not update the review page's checkpoint")

    def handle(self, *args, chunk, no_save, **options):
        if chunk < 1 or chunk > 100_000:
            raise CommandError("--chunk: expected 1..100000")
        started = time.monotonic()
        result = verify_full(chunk=chunk)
        elapsed = time.monotonic() - started
        if not no_save:
            save_full_result(result)
        top = head()
        head_line = (f"audit head: event id {top[0]} hash {top[1]}" if top else "audit head: no events")
        self.stdout.write(head_line)
        logger.info("%s (chain %s)", head_line, "intact" if result.ok else "BROKEN")
        if result.unkeyed:
            note = (f"note: {result.unkeyed} events were written before the chain was keyed (key id 'unkeyed', "
                    "plain SHA-256): anyone able to write the table could have rewritten them")
            self.stdout.write(note)
            logger.warning("audit: %s", note)
        if not result.ok:
            where = f"at event id {result.bad_id}" if result.bad_id is not None else "(checkpoint)"
            message = (f"audit chain BROKEN {where}: {result.reason} "
                       f"({result.count} events before it verified)")
            logger.error("%s", message)
            raise CommandError(message, returncode=1)
        rate = result.count / elapsed if elapsed > 0 else 0.0
        self.stdout.write(f"audit chain intact: {result.count} events verified "
                          f"(last id {result.last_id}) in {elapsed:.2f}s, {rate:,.0f} events/s")
