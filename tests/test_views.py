"""Pages: sign-in required, the library overview, protected media, health."""
from __future__ import annotations

import re

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


def test_library_examples_are_the_first_library_cases_of_each_class_in_one_query(tmp_path, media_root,
                                                                               django_assert_num_queries):
    from retrieval.classes import CODES
    from retrieval.models import Case
    from retrieval.selectors import case_examples

    rows = real_metadata_rows()
    picked = [row for code in CODES for row in [r for r in rows if r["dx"] == code][:6]]  # 6 of every class
    write_ham_folder(tmp_path / "ham", picked)
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    call_command("split_library", verbosity=0)
    with django_assert_num_queries(1):
        examples = case_examples(collection="ham10000", per_class=2)
    assert set(examples) == set(CODES)
    for code in CODES:
        expected = list(Case.objects.filter(collection="ham10000", dx=code).exclude(split="test")
                        .order_by("image_id")[:2])
        assert len(expected) == 2 and examples[code] == expected


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


def test_media_accepts_an_api_token_and_refuses_a_bad_one(client, clinician, library):
    from rest_framework.authtoken.models import Token

    from retrieval.models import Case

    url = f"/media/{Case.objects.first().image.name}"
    key = Token.objects.create(user=clinician).key
    response = client.get(url, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert "Authorization" in response["Vary"]
    bad = client.get(url, HTTP_AUTHORIZATION="Token wrong-key")
    assert bad.status_code == 401 and bad["WWW-Authenticate"] == "Token"
    assert bad.json()["error"]["code"] == "authentication_failed"
    clinician.is_active = False
    clinician.save()
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_query_files_are_served_only_to_their_owner_and_staff(client, django_user_model, clinician, reader,
                                                             study_admin, media_root):
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from lesionsearch.roles import CLINICIAN
    from retrieval.models import Query

    colleague = django_user_model.objects.create_user(username="dr_colleague", password="pw")
    colleague.groups.add(Group.objects.get(name=CLINICIAN))
    folder = media_root / "queries" / str(clinician.id)
    folder.mkdir(parents=True)
    (folder / "upload.jpg").write_bytes(b"the upload")
    (folder / "upload-saliency.png").write_bytes(b"its overlay")
    (folder / "orphan.jpg").write_bytes(b"no query holds this")
    Query.objects.create(user=clinician, image=f"queries/{clinician.id}/upload.jpg",
                         saliency=f"queries/{clinician.id}/upload-saliency.png", sha256="0" * 64, width=1, height=1)
    files = [f"/media/queries/{clinician.id}/upload.jpg", f"/media/queries/{clinician.id}/upload-saliency.png"]

    def fetch(url, user=None, token=False):
        client.logout()
        if user is not None and token:
            return client.get(url, HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        if user is not None:
            client.force_login(user)
        return client.get(url)

    for url in files:
        assert fetch(url).status_code == 302  # anonymous: sign in first
        assert fetch(url, clinician).status_code == 200
        assert fetch(url, clinician, token=True).status_code == 200
        assert fetch(url, study_admin).status_code == 200  # staff
        for other in (colleague, reader):
            assert fetch(url, other).status_code == 404
            assert fetch(url, other, token=True).status_code == 404
    # A path that reaches the file another way is still the same file.
    detour = f"/media/cases/../queries/{clinician.id}/upload.jpg"
    assert fetch(detour, clinician).status_code == 200 and fetch(detour, colleague).status_code == 404
    orphan = f"/media/queries/{clinician.id}/orphan.jpg"
    assert fetch(orphan, clinician).status_code == 404 and fetch(orphan, study_admin).status_code == 200


def test_the_library_state_changes_with_every_write_of_a_case_and_not_with_reads(library):
    from retrieval.models import Case
    from retrieval.selectors import library_state
    from retrieval.services import case_restore, case_withdraw, library_split

    seen = [library_state()]

    def changed() -> bool:
        seen.append(library_state())
        return seen[-1] != seen[-2]

    list(Case.objects.all())
    assert not changed()
    case = Case.objects.order_by("id").first()
    case.localization = "scalp"
    case.save()
    assert changed()
    case_withdraw(case=case, reason="misdiagnosed")
    assert changed()
    case_restore(case=case)
    assert changed()  # back in the library, but not the state before the withdrawal: updated_at moved on
    library_split(collection="ham10000", seed=7, train=0.5, val=0.25, test=0.25)  # QuerySet.update
    assert changed()
    Case.objects.order_by("-id").first().delete()  # the highest id: the count tells
    assert changed()
    assert len(set(seen)) == len(seen) - 1  # every write gave a state never seen before


def test_the_library_page_is_rendered_once_per_library_state(client, clinician, library):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from retrieval.models import Case

    client.force_login(clinician)
    with CaptureQueriesContext(connection) as first:
        response = client.get("/library/")
    page = response.content.decode()
    with CaptureQueriesContext(connection) as second:
        again = client.get("/library/")
    def tokenless(html: str) -> str:  # the sign-out form's CSRF token differs from response to response
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)

    assert tokenless(again.content.decode()) == tokenless(page)
    case_tables = [q["sql"] for q in second.captured_queries if '"retrieval_case"' in q["sql"]]
    # the second request reads only the collections and the three state counters, not the cases
    assert len(second.captured_queries) <= len(first.captured_queries) - 3
    assert not any("GROUP BY" in sql or "ROW_NUMBER" in sql for sql in case_tables)
    assert "30 diagnosed images" in page

    case = Case.objects.filter(dx="bkl").exclude(split="test").order_by("image_id").first()
    assert f'case {case.image_id}"' in page and "Benign keratosis" in page
    case.dx = "nv"  # corrected in the admin: the table and the examples follow at once
    case.save()
    after = client.get("/library/").content.decode()
    assert after != page
    bkl_row = after.split("bkl <span")[1].split("</tr>")[0]
    old_bkl_row = page.split("bkl <span")[1].split("</tr>")[0]
    assert int(bkl_row.rsplit("<td>", 1)[1].split("<")[0]) == int(old_bkl_row.rsplit("<td>", 1)[1].split("<")[0]) - 1
    case.delete()
    assert "29 diagnosed images" in client.get("/library/").content.decode()
