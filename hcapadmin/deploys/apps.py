from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "hcapadmin.deploys"
    label = "deploys"

    def ready(self):
        from hcapadmin.deploys import jobs  # noqa: F401  registers the deploy job kinds
