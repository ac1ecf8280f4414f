from django.urls import path

from hcapadmin.backups import views

urlpatterns = [
    path("backups/", views.backup_list, name="backups_list"),
    path("backups/run/", views.backup_run, name="backup_run"),
    path("backups/verify/", views.backup_verify, name="backup_verify"),
    path("api/v1/backups", views.api_backups, name="api_backups"),
    # Same URL and view, POST (operate): named separately so tests/access_table.py checks both methods.
    path("api/v1/backups", views.api_backups, name="api_backups_create"),
    path("api/v1/backups/verify", views.api_backup_verify, name="api_backup_verify"),
]
