"""Root URLs.  Each app's urls.py holds its pages and its /api/v1/ endpoints
under full paths, so one file per feature lists everything it serves."""

from django.urls import include, path

urlpatterns = [
    path("", include("hcapadmin.core.urls")),
    path("", include("hcapadmin.accounts.urls")),
    path("", include("hcapadmin.audit.urls")),
    path("", include("hcapadmin.jobs.urls")),
    path("", include("hcapadmin.backups.urls")),
    path("", include("hcapadmin.logbrowser.urls")),
    path("", include("hcapadmin.restores.urls")),
    path("", include("hcapadmin.deploys.urls")),
    path("", include("migrations_ui.urls")),
]

handler400 = "hcapadmin.core.views.bad_request"
handler403 = "hcapadmin.core.views.forbidden"
handler404 = "hcapadmin.core.views.not_found"
handler500 = "hcapadmin.core.views.server_error"
