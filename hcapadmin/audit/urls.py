from django.urls import path

from hcapadmin.audit import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/<int:pk>/", views.audit_detail, name="audit_detail"),
    path("audit/export.csv", views.audit_export_csv, name="audit_export_csv"),
    path("audit/export.json", views.audit_export_json, name="audit_export_json"),
    path("api/v1/audit", views.api_audit, name="api_audit"),
]
