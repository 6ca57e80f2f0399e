"""Checks that only mean something on PostgreSQL (run by `make test-services`)."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection

from retrieval.models import Case
from tests.conftest import real_metadata_rows, write_ham_folder

pytestmark = [pytest.mark.services, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run `make test-services`")


def test_migrations_applied_and_nothing_left_to_migrate():
    from io import StringIO

    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_group WHERE name IN ('clinician', 'reader', 'study admin')")
        assert cursor.fetchone()[0] == 3


def test_case_import_on_postgres(tmp_path, media_root):
    rows = real_metadata_rows(25)
    write_ham_folder(tmp_path / "ham", rows)
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    call_command("split_library", verbosity=0)
    assert Case.objects.count() == 25
    assert Case.objects.exclude(split="none").count() == 25
    with pytest.raises(IntegrityError):
        Case.objects.create(collection="ham10000", image="x.jpg", sha256="0" * 64, width=1, height=1,
                            image_id=rows[0]["image_id"], lesion_id="L", dx="nv", dx_type="histo")
