"""Endpoints of the reader-study API; included under /api/v1/ with the namespace "v1".

Readers use /studies/ (their own assignments only); study administrators /studies/manage/.
"""
from __future__ import annotations

from django.urls import path

import lesionsearch.converters  # noqa: F401 - registers <id:...>
from readerstudy.api import views

urlpatterns = [
    # Readers
    path("studies/", views.StudyListView.as_view(), name="study-list"),
    path("studies/<id:study_id>/", views.StudyDetailView.as_view(), name="study-detail"),
    path("studies/<id:study_id>/tasks/<id:task>/next/", views.TaskNextView.as_view(), name="study-task-next"),
    path("studies/<id:study_id>/tasks/<id:task>/cases/<id:position>/", views.TaskCaseView.as_view(),
         name="study-case"),
    path("studies/<id:study_id>/tasks/<id:task>/cases/<id:position>/views/", views.CaseViewsCreateView.as_view(),
         name="study-case-views"),
    path("studies/<id:study_id>/tasks/<id:task>/answers/", views.AnswerCreateView.as_view(), name="study-answers"),
    # Study administrators and staff
    path("studies/manage/", views.ManagedStudyListView.as_view(), name="managed-study-list"),
    path("studies/manage/<id:study_id>/", views.ManagedStudyDetailView.as_view(), name="managed-study-detail"),
    path("studies/manage/<id:study_id>/open/", views.ManagedStudyOpenView.as_view(), name="managed-study-open"),
    path("studies/manage/<id:study_id>/close/", views.ManagedStudyCloseView.as_view(), name="managed-study-close"),
    path("studies/manage/<id:study_id>/assign/", views.ManagedStudyAssignView.as_view(),
         name="managed-study-assign"),
    path("studies/manage/<id:study_id>/progress/", views.ManagedStudyProgressView.as_view(),
         name="managed-study-progress"),
    path("studies/manage/<id:study_id>/report/", views.ManagedStudyReportView.as_view(),
         name="managed-study-report"),
    path("studies/manage/<id:study_id>/export/", views.ManagedStudyExportView.as_view(),
         name="managed-study-export"),
]
