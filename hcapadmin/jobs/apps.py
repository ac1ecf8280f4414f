from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "hcapadmin.jobs"
    label = "jobs"
