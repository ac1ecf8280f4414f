from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hcapadmin.accounts.demo import DEMO_ROLES, ensure_demo_users
from hcapadmin.audit.models import command_actor, record


class Command(BaseCommand):
    help = "Create or reset the sandbox's demo accounts (sandbox with local accounts only)."

    def handle(self, *args, **options):
        if not (settings.SANDBOX and settings.LOCAL_ACCOUNTS):
            raise CommandError("demo accounts exist only in the sandbox (HCAPADMIN_SANDBOX and HCAPADMIN_LOCAL_ACCOUNTS)")
        ensure_demo_users(settings.DEMO_PASSWORD)
        record("sandbox.demo_accounts", actor=command_actor(), target=",".join(DEMO_ROLES),
               details={"roles": list(DEMO_ROLES)})
        self.stdout.write(f"demo accounts ready: {', '.join(DEMO_ROLES)}")
