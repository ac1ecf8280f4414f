from django.urls import path

from hcapadmin.core import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", views.dashboard, name="dashboard"),
]
