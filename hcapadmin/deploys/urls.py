from django.urls import path

from hcapadmin.deploys import views

urlpatterns = [
    path("deploys/", views.deploy_list, name="deploys"),
    path("deploys/new/<slug:kind>/", views.deploy_new, name="deploy_new"),
    path("deploys/<int:pk>/", views.deploy_detail, name="deploy_detail"),
    path("deploys/<int:pk>/confirm/", views.deploy_confirm, name="deploy_confirm"),
    path("deploys/<int:pk>/approve/", views.deploy_approve, name="deploy_approve"),
    path("deploys/<int:pk>/rollback/", views.deploy_rollback, name="deploy_rollback"),
    path("api/v1/deploys/preview", views.api_deploy_preview, name="api_deploy_preview"),
    path("api/v1/deploys", views.api_deploys, name="api_deploys"),
    path("api/v1/deploys/<int:pk>", views.api_deploy, name="api_deploy"),
    path("api/v1/deploys/<int:pk>/approve", views.api_deploy_approve, name="api_deploy_approve"),
]
