from django.apps import AppConfig


class RestoresConfig(AppConfig):
    name = "hcapadmin.restores"
    label = "restores"

    def ready(self):
        from hcapadmin.restores import jobs  # noqa: F401  registers the restore job kinds
