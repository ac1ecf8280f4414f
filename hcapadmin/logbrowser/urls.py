from django.urls import path

from hcapadmin.logbrowser import views

urlpatterns = [
    path("logs/", views.logs_page, name="logs"),
    path("logs/histogram", views.logs_histogram, name="logs-histogram"),
    path("logs/follow", views.logs_follow, name="logs-follow"),
    path("logs/export", views.logs_export, name="logs-export"),
    path("logs/entry/<str:doc_id>/", views.log_detail, name="log-detail"),
    path("api/v1/logs", views.api_logs, name="api-logs"),
]
