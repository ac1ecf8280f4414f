from django.apps import AppConfig


class RestoresConfig(AppConfig):
    name = "hcapadmin.restores"
    label = "restores"

    def ready(self):
        from hcapadmin.jobs.lifecycle import register_upkeep
        from hcapadmin.restores import jobs, runbook, runbook_openshift, workflow  # noqa: F401  register the job kinds

        register_upkeep(workflow.upkeep)  # the worker's sweep expires due requests
