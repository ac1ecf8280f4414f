from django.urls import path

from migrations_ui import apply, views

urlpatterns = [
    path("migrations/", views.migration_list, name="migrations"),
    path("migrations/apply/", apply.handle, name="migrations_apply"),
    path("migrations/<str:name>/", views.migration_detail, name="migration_detail"),
    path("api/v1/migrations", views.api_migrations, name="api_migrations"),
]
