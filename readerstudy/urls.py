from __future__ import annotations

from django.urls import path

import lesionsearch.converters  # noqa: F401 - registers <id:...>
from readerstudy import views
from readerstudy.api.auth import token_or_session

app_name = "readerstudy"

urlpatterns = [
    path("", views.study_list, name="list"),
    path("<id:study_id>/", views.study_start, name="start"),
    path("<id:study_id>/task/<id:task>/", views.task_case, name="task"),
    path("<id:study_id>/task/<id:task>/image/<id:position>/", token_or_session(views.case_image),
         name="case_image"),
    path("<id:study_id>/task/2/image/<id:position>/neighbour/<id:rank>/", token_or_session(views.neighbour_image),
         name="neighbour_image"),
    path("<id:study_id>/task/2/case/<id:position>/views/", views.case_views, name="case_views"),
    path("<id:study_id>/results/", views.my_results, name="my_results"),
    path("manage/", views.manage_list, name="manage_list"),
    path("manage/<id:study_id>/", views.manage_study, name="manage"),
    path("manage/<id:study_id>/export/", views.manage_export, name="export"),
    path("manage/<id:study_id>/figure/<str:name>", views.manage_figure, name="figure"),
    path("manage/<id:study_id>/<str:action>/", views.manage_action, name="action"),
]
