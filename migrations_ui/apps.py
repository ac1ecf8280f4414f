from django.apps import AppConfig


class MigrationsUiConfig(AppConfig):
    name = "migrations_ui"
    label = "migrations_ui"

    def ready(self):
        from migrations_ui import jobs  # noqa: F401  registers the "migrations.apply" job kind
