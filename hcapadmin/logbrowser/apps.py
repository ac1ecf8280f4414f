from django.apps import AppConfig


class LogbrowserConfig(AppConfig):
    name = "hcapadmin.logbrowser"
    label = "logbrowser"
