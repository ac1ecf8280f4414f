from django.urls import path

from hcapadmin.jobs import views

urlpatterns = [
    path("jobs/", views.job_list, name="jobs_list"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/live/", views.job_live, name="job_live"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="job_resume"),
    path("jobs/<int:pk>/rollback/", views.job_rollback, name="job_rollback"),
    path("api/v1/jobs/<int:pk>", views.api_job, name="api_job"),
]
