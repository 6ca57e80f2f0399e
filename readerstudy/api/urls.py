"""Endpoints of the reader-study API; included under /api/v1/ with the namespace "v1".

Readers use /studies/ (their own assignments only); study administrators /studies/manage/.
"""
from __future__ import annotations

from django.urls import path

from readerstudy.api import views

urlpatterns = [
    # Readers
    path("studies/", views.StudyListView.as_view(), name="study-list"),
    path("studies/<int:study_id>/", views.StudyDetailView.as_view(), name="study-detail"),
    path("studies/<int:study_id>/tasks/<int:task>/next/", views.TaskNextView.as_view(), name="study-task-next"),
    path("studies/<int:study_id>/tasks/<int:task>/cases/<int:position>/", views.TaskCaseView.as_view(),
         name="study-case"),
    path("studies/<int:study_id>/tasks/<int:task>/answers/", views.AnswerCreateView.as_view(), name="study-answers"),
    # Study administrators and staff
    path("studies/manage/", views.ManagedStudyListView.as_view(), name="managed-study-list"),
    path("studies/manage/<int:study_id>/", views.ManagedStudyDetailView.as_view(), name="managed-study-detail"),
    path("studies/manage/<int:study_id>/open/", views.ManagedStudyOpenView.as_view(), name="managed-study-open"),
    path("studies/manage/<int:study_id>/close/", views.ManagedStudyCloseView.as_view(), name="managed-study-close"),
    path("studies/manage/<int:study_id>/assign/", views.ManagedStudyAssignView.as_view(),
         name="managed-study-assign"),
    path("studies/manage/<int:study_id>/progress/", views.ManagedStudyProgressView.as_view(),
         name="managed-study-progress"),
    path("studies/manage/<int:study_id>/report/", views.ManagedStudyReportView.as_view(),
         name="managed-study-report"),
    path("studies/manage/<int:study_id>/export/", views.ManagedStudyExportView.as_view(),
         name="managed-study-export"),
]
