"""Endpoints of the reader-study API; included under /api/v1/ with the namespace "v1".

Readers use /studies/ (their own assignments only); study administrators /studies/manage/.
"""
from __future__ import annotations

from django.urls import path

import lesionsearch.converters  # noqa: F401 - registers <id:...>
from readerstudy.api import views

#: The study administrator's actions on one study: /studies/manage/<id>/<action>/, named managed-study-<action>.
MANAGED_STUDY_ACTIONS = [
    ("open", views.ManagedStudyOpenView),
    ("close", views.ManagedStudyCloseView),
    ("assign", views.ManagedStudyAssignView),
    ("progress", views.ManagedStudyProgressView),
    ("report", views.ManagedStudyReportView),
    ("export", views.ManagedStudyExportView),
]

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
    *[path(f"studies/manage/<id:study_id>/{action}/", view.as_view(), name=f"managed-study-{action}")
      for action, view in MANAGED_STUDY_ACTIONS],
]
