from __future__ import annotations

from django.urls import path

import lesionsearch.converters  # noqa: F401 - registers <id:...>
from retrieval import views

urlpatterns = [
    path("", views.home, name="home"),
    path("library/", views.library, name="library"),
    path("search/", views.search, name="search"),
    path("methods/", views.methods, name="methods"),
    path("queries/<id:pk>/", views.query_detail, name="query_detail"),
    path("queries/<id:pk>/delete/", views.query_delete, name="query_delete"),
    path("queries/<id:pk>/report.pdf", views.query_report, name="query_report"),
]
