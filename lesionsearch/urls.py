from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from lesionsearch import views
from lesionsearch.auth import LoginView
from lesionsearch.ops import views as ops_views
from retrieval.api.exceptions import api_not_found
from retrieval.api.views import OfflineRedocView

# Version 1 of the REST API. The namespace is the version (REST_FRAMEWORK's NamespaceVersioning);
# other apps' API endpoints join this list. The schema covers every endpoint of the namespace.
api_v1 = [
    path("", include("retrieval.api.urls")),
    path("", include("readerstudy.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc/", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("", include("retrieval.urls")),
    path("studies/", include("readerstudy.urls")),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "v1"), namespace="v1")),
    re_path(r"^api/", api_not_found),  # a JSON 404 for every other path under /api/
    path("healthz", views.healthz, name="healthz"),
    path("ops/", ops_views.ops_page, name="ops"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    re_path(r"^media/(?P<path>.+)$", views.protected_media, name="media"),
]

handler400 = "lesionsearch.views.bad_request"
