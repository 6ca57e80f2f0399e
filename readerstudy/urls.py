from __future__ import annotations

from django.urls import path

from readerstudy import views
from readerstudy.api.auth import token_or_session

app_name = "readerstudy"

urlpatterns = [
    path("", views.study_list, name="list"),
    path("<int:study_id>/", views.study_start, name="start"),
    path("<int:study_id>/task/<int:task>/", views.task_case, name="task"),
    path("<int:study_id>/task/<int:task>/image/<int:position>/", token_or_session(views.case_image),
         name="case_image"),
    path("<int:study_id>/task/2/image/<int:position>/neighbour/<int:rank>/", token_or_session(views.neighbour_image),
         name="neighbour_image"),
    path("<int:study_id>/results/", views.my_results, name="my_results"),
    path("manage/", views.manage_list, name="manage_list"),
    path("manage/<int:study_id>/", views.manage_study, name="manage"),
    path("manage/<int:study_id>/export/", views.manage_export, name="export"),
    path("manage/<int:study_id>/<str:action>/", views.manage_action, name="action"),
]
