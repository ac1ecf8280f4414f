from django.urls import path

from hcapadmin.restores import views

urlpatterns = [
    path("restores/", views.restore_list, name="restores"),
    path("restores/new/", views.restore_new, name="restore_new"),
    path("restores/<int:pk>/", views.restore_detail, name="restore_detail"),
    path("restores/<int:pk>/approve/", views.restore_approve, name="restore_approve"),
    path("restores/<int:pk>/reject/", views.restore_reject, name="restore_reject"),
    path("restores/<int:pk>/cancel/", views.restore_cancel, name="restore_cancel"),
    path("restores/<int:pk>/discard-previous/", views.restore_discard, name="restore_discard"),
    path("api/v1/restores", views.api_restores, name="api_restores"),
    # Same URL and view, POST (operate): named separately so tests/access_table.py checks both methods.
    path("api/v1/restores", views.api_restores, name="api_restores_create"),
    path("api/v1/restores/<int:pk>", views.api_restore, name="api_restore"),
    path("api/v1/restores/<int:pk>/approve", views.api_restore_approve, name="api_restore_approve"),
    path("api/v1/restores/<int:pk>/reject", views.api_restore_reject, name="api_restore_reject"),
    path("api/v1/restores/<int:pk>/cancel", views.api_restore_cancel, name="api_restore_cancel"),
    path("api/v1/restores/<int:pk>/discard-previous", views.api_restore_discard, name="api_restore_discard"),
]
