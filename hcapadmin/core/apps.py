from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "hcapadmin.core"
    label = "core"
