from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "hcapadmin.backups"
    label = "backups"

    def ready(self):
        from hcapadmin.backups import jobs  # noqa: F401  registers the backup job kinds
