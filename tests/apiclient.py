"""Helpers for tests of the REST API: a token-signed client, an upload, a query submission and
the one error shape every error response has."""
from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import jpeg_bytes

QUERIES = "/api/v1/queries/"


def api(user=None) -> APIClient:
    """A client that signs in with the user's API token (anonymous without a user)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def upload(data: bytes | None = None, name: str = "lesion.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes(7) if data is None else data, content_type="image/jpeg")


def submit(client: APIClient, data: bytes | None = None, **fields):
    return client.post(QUERIES, {"image": upload(data), **fields}, format="multipart")


def error_of(response, status: int) -> dict:
    """The error body, after checking the status and the one error shape."""
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["status"] == status and isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"].strip()
    assert set(error) <= {"status", "code", "message", "fields"}
    return error
