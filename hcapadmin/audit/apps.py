from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "hcapadmin.audit"
    label = "audit"
