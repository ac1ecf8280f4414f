from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "hcapadmin.backups"
    label = "backups"
