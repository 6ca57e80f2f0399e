from __future__ import annotations

from django.urls import path

from retrieval import views

urlpatterns = [
    path("", views.home, name="home"),
    path("library/", views.library, name="library"),
]
