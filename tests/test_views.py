"""Pages: sign-in required, the library overview, protected media, health."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from tests.conftest import real_metadata_rows, write_ham_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(tmp_path, media_root):
    write_ham_folder(tmp_path / "ham", real_metadata_rows(30))
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    call_command("split_library", verbosity=0)


def test_anonymous_users_are_sent_to_sign_in(client, library):
    for url in ("/", "/library/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_clinician_sees_the_library_overview(client, clinician, library):
    client.force_login(clinician)
    response = client.get("/", follow=True)
    page = response.content.decode()
    assert response.status_code == 200
    assert "30 diagnosed images" in page
    assert "Benign keratosis" in page and "Training" in page
    assert 'src="/media/cases/' in page


def test_empty_library_explains_how_to_fill_it(client, clinician):
    client.force_login(clinician)
    response = client.get("/")
    assert response.status_code == 200 and "import_ham10000" in response.content.decode()


def test_media_requires_sign_in_and_stays_inside_media_root(client, clinician, library, media_root, tmp_path):
    from retrieval.models import Case

    case = Case.objects.first()
    url = f"/media/{case.image.name}"
    assert client.get(url).status_code == 302
    client.force_login(clinician)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == (media_root / case.image.name).read_bytes()
    (tmp_path / "secret.txt").write_text("not for you")
    assert client.get("/media/../secret.txt").status_code == 404
    assert client.get("/media/%2e%2e/secret.txt").status_code == 404


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_sign_in_page_and_login(client, clinician):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "dr_clinician", "password": "pw-dr_clinician"})
    assert response.status_code == 302 and response["Location"] == "/"
    bad = client.post("/accounts/login/", {"username": "dr_clinician", "password": "wrong"})
    assert "didn't match" in bad.content.decode()


def test_roles_exist_as_groups(db):
    from django.contrib.auth.models import Group

    from lesionsearch.roles import ROLES

    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)


def test_setup_demo_refuses_in_production(settings):
    from django.core.management import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG off"):
        call_command("setup_demo", verbosity=0)


def test_setup_demo_creates_one_user_per_role_and_is_idempotent(django_user_model, settings):
    from lesionsearch.roles import CLINICIAN, READER, STUDY_ADMIN, has_role

    settings.DEBUG = True

    call_command("setup_demo", verbosity=0)
    call_command("setup_demo", verbosity=0)
    users = {u.username: u for u in django_user_model.objects.all()}
    assert has_role(users["clinician"], CLINICIAN) and not has_role(users["clinician"], READER)
    assert has_role(users["studyadmin"], STUDY_ADMIN) and users["studyadmin"].is_staff
    assert users["admin"].is_superuser and django_user_model.objects.count() == 4
