from django.urls import path

from migrations_ui import views

urlpatterns = [
    path("migrations/", views.migration_list, name="migrations"),
    path("migrations/apply/", views.apply, name="migrations_apply"),
    path("migrations/<str:name>/", views.migration_detail, name="migration_detail"),
    path("api/v1/migrations", views.api_migrations, name="api_migrations"),
]
