"""Endpoints of the retrieval API; included under /api/v1/ with the namespace "v1"."""
from __future__ import annotations

from django.urls import path

import lesionsearch.converters  # noqa: F401 - registers <id:...>
from retrieval.api import views

urlpatterns = [
    path("queries/", views.QueryListCreateView.as_view(), name="query-list"),
    path("queries/<id:query_id>/", views.QueryDetailView.as_view(), name="query-detail"),
    path("queries/<id:query_id>/report.pdf", views.QueryReportView.as_view(), name="query-report"),
    path("methods/", views.MethodListView.as_view(), name="method-list"),
    path("cases/", views.CaseListView.as_view(), name="case-list"),
    path("cases/<id:case_id>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<id:case_id>/withdrawal/", views.CaseWithdrawalView.as_view(), name="case-withdrawal"),
    path("index/", views.IndexStatusView.as_view(), name="index-status"),
    path("index/rebuild/", views.IndexRebuildView.as_view(), name="index-rebuild"),
]
