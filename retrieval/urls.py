from __future__ import annotations

from django.urls import path

from retrieval import views

urlpatterns = [
    path("", views.home, name="home"),
    path("library/", views.library, name="library"),
    path("search/", views.search, name="search"),
    path("methods/", views.methods, name="methods"),
    path("queries/<int:pk>/", views.query_detail, name="query_detail"),
    path("queries/<int:pk>/delete/", views.query_delete, name="query_delete"),
]
