"""A case withdrawn from the library (a diagnosis found wrong, consent withdrawn) disappears from
every search at once, on every backend (exact, FAISS, Qdrant's local mode) and for every method,
later index builds (full and incremental) leave it out, past results say it was withdrawn, and
restoring it brings it back. Through the API, the command and the admin, each audited."""
from __future__ import annotations

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from lesionsearch.audit.models import AuditEvent
from retrieval import loaders, runtime, selectors
from retrieval.models import Case, IndexVersion, Query
from retrieval.services.queries import query_run
from tests.apiclient import api, submit
from tests.conftest import build_index_here

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True, is_superuser=True)


def _library_case() -> Case:
    """A case the index holds (not the test split), sent as its own query: rank 1 on every backend."""
    return Case.objects.exclude(split="test").order_by("id")[3]


def _image(case: Case) -> bytes:
    with case.image.open("rb") as handle:
        return handle.read()


def _query(user, case: Case, *, method: str = "secbir", k: int = 6) -> Query:
    response = submit(api(user), _image(case), k=k, method=method)
    assert response.status_code == 202, response.content
    query = Query.objects.get(pk=response.json()["id"])
    assert query_run(query_id=query.id, worker="w") is True
    query.refresh_from_db()
    assert query.status == "done", query.message
    return query


def _neighbours(query: Query) -> list[int]:
    return list(query.neighbours.order_by("rank").values_list("case_id", flat=True))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["exact", "faiss-hnsw", "qdrant"])
def test_a_withdrawn_case_leaves_every_search_at_once_and_comes_back_when_restored(
        ready_index, clinician, staff, client, settings, backend):
    settings.SEARCH_BACKEND = backend
    if backend == "qdrant":
        settings.QDRANT_PATH = ":memory:"
    runtime.forget()
    case = _library_case()
    before = _query(clinician, case)
    assert _neighbours(before)[0] == case.id  # its own image: the nearest case
    assert runtime.loaded_index(ready_index).backend.kind == backend

    response = api(staff).post(f"/api/v1/cases/{case.id}/withdrawal/", {"reason": "diagnosis revised on review"},
                               format="json")
    assert response.status_code == 200, response.content
    assert response.json()["withdrawn_reason"] == "diagnosis revised on review" and response.json()["withdrawn_at"]
    # The next search, in the same worker process (nothing reloaded): six neighbours, none of them the case.
    after = _query(clinician, case)
    assert case.id not in _neighbours(after) and len(_neighbours(after)) == 6
    assert _neighbours(after) == _neighbours(before)[1:] + _neighbours(after)[5:]  # the rest move up one rank
    # A filtered search leaves it out too.
    site_filtered = submit(api(clinician), _image(case), k=6, filters='{"sites": ["%s"]}' % case.localization)
    filtered = Query.objects.get(pk=site_filtered.json()["id"])
    assert query_run(query_id=filtered.id, worker="w") and case.id not in _neighbours(filtered)

    # The earlier result still shows what it showed, and says the case was withdrawn since.
    shown = api(clinician).get(f"/api/v1/queries/{before.id}/").json()["neighbours"]
    assert shown[0]["case_id"] == case.id and shown[0]["withdrawn"]["reason"] == "diagnosis revised on review"
    assert all(n["withdrawn"] is None for n in shown[1:])
    client.force_login(clinician)
    page = client.get(f"/queries/{before.id}/").content.decode()
    # Six cards and the JS <template> carry the note; it is shown on rank 1 only, with the reason.
    assert page.count("Withdrawn from the library since this search") == 7
    assert page.count('data-slot="withdrawn" role="note" hidden') == 6
    assert ('data-slot="withdrawn" role="note">Withdrawn from the library since this search: '
            '<span data-slot="withdrawn-reason">diagnosis revised on review</span>') in page

    assert api(staff).delete(f"/api/v1/cases/{case.id}/withdrawal/").status_code == 200
    assert _neighbours(_query(clinician, case)) == _neighbours(before)
    actions = list(AuditEvent.objects.filter(object_id=str(case.id), object_type="retrieval.case")
                   .order_by("time", "id").values_list("action", "actor"))
    assert actions == [("case.withdraw", "staff"), ("case.restore", "staff")]
    runtime.forget()


@pytest.mark.slow
def test_a_withdrawn_case_leaves_the_other_methods_searches(ready_index, clinician, staff):
    runtime.forget()
    case = _library_case()
    methods = [name for name in ready_index.methods if name != "secbir"]
    assert methods  # the tiny index serves the measures that need no trained embedding
    before = {name: _neighbours(_query(clinician, case, method=name)) for name in methods}
    assert all(case.id in found for found in before.values())
    call_command("withdraw_cases", case.image_id, "--reason", "consent withdrawn", verbosity=0)
    for name in methods:
        found = _neighbours(_query(clinician, case, method=name))
        assert case.id not in found and len(found) == 6, name
        assert [c for c in before[name] if c != case.id] == found[:len(before[name]) - 1], name
    runtime.forget()


@pytest.mark.slow
def test_full_and_incremental_builds_leave_withdrawn_cases_out(ready_index, tiny_models, settings):
    from retrieval.services import case_withdraw

    withdrawn = list(Case.objects.exclude(split="test").order_by("id")[:3])
    for case in withdrawn:
        case_withdraw(case=case, reason="test")
    ids = {case.id for case in withdrawn}
    assert ids <= set(np.load(loaders.index_path(ready_index) / loaders.CASE_IDS_FILE).tolist())
    incremental = build_index_here(model_version=tiny_models["4ch"], incremental=True)
    assert incremental.status == "done", incremental.message
    rows = np.load(loaders.index_path(incremental) / loaders.CASE_IDS_FILE).tolist()
    assert not ids & set(rows) and len(rows) == ready_index.size - 3 == incremental.size
    full = build_index_here(model_version=tiny_models["4ch"])
    assert full.status == "done" and full.total == ready_index.total - 3
    assert not ids & set(np.load(loaders.index_path(full) / loaders.CASE_IDS_FILE).tolist())
    assert IndexVersion.objects.get(active=True) == full
    runtime.forget()


def test_the_command_checks_everything_before_it_changes_anything(ready_index):
    cases = list(Case.objects.exclude(split="test").order_by("id")[:2])
    with pytest.raises(CommandError, match="--reason"):
        call_command("withdraw_cases", cases[0].image_id)
    with pytest.raises(CommandError, match="No case NO_SUCH_IMAGE in collection 'synthetic'; nothing was changed"):
        call_command("withdraw_cases", cases[0].image_id, "NO_SUCH_IMAGE", "--reason", "x")
    assert not Case.objects.withdrawn().exists()
    call_command("withdraw_cases", *(c.image_id for c in cases), "--reason", "  wrong   label ", verbosity=0)
    assert list(Case.objects.withdrawn().values_list("withdrawn_reason", flat=True)) == ["wrong label"] * 2
    with pytest.raises(CommandError, match="already withdrawn"):
        call_command("withdraw_cases", cases[0].image_id, "--reason", "again")
    call_command("withdraw_cases", cases[0].image_id, "--restore", verbosity=0)
    assert list(Case.objects.withdrawn()) == [cases[1]]
    with pytest.raises(CommandError, match="is not withdrawn"):
        call_command("withdraw_cases", cases[0].image_id, "--restore")
    assert AuditEvent.objects.filter(action="case.withdraw").count() == 2
    assert AuditEvent.objects.filter(action="case.restore").count() == 1


def test_the_api_refuses_what_it_should_and_lists_by_withdrawal(ready_index, staff, clinician):
    case, other = Case.objects.exclude(split="test").order_by("id")[:2]
    url = f"/api/v1/cases/{case.id}/withdrawal/"
    assert api(clinician).post(url, {"reason": "x"}, format="json").status_code == 403
    assert api(staff).post(url, {}, format="json").status_code == 400
    assert api(staff).post(url, {"reason": "   "}, format="json").status_code == 400
    assert api(staff).post("/api/v1/cases/999999/withdrawal/", {"reason": "x"}, format="json").status_code == 404
    assert api(staff).delete(url).status_code == 409  # not withdrawn
    assert api(staff).post(url, {"reason": "duplicate of another case"}, format="json").status_code == 200
    conflict = api(staff).post(url, {"reason": "again"}, format="json")
    assert conflict.status_code == 409 and "already withdrawn" in conflict.json()["error"]["message"]
    listed = api(clinician).get("/api/v1/cases/?withdrawn=true").json()
    assert [row["id"] for row in listed["results"]] == [case.id]
    kept = api(clinician).get("/api/v1/cases/?withdrawn=false").json()
    assert kept["count"] == Case.objects.count() - 1 and case.id not in [row["id"] for row in kept["results"]]
    assert api(clinician).get("/api/v1/cases/").json()["count"] == Case.objects.count()  # unset: both
    assert api(clinician).get(f"/api/v1/cases/{other.id}/").json()["withdrawn_at"] is None


def test_the_admin_action_withdraws_with_the_reason_and_restores(ready_index, staff, client):
    case = _library_case()
    client.force_login(staff)
    changelist = "/admin/retrieval/case/"
    response = client.post(changelist, {"action": "withdraw", "_selected_action": [case.id], "reason": ""},
                           follow=True)
    assert "a reason is required" in response.content.decode()
    case.refresh_from_db()
    assert case.withdrawn_at is None
    client.post(changelist, {"action": "withdraw", "_selected_action": [case.id], "reason": "misdiagnosed"})
    case.refresh_from_db()
    assert case.withdrawn_at is not None and case.withdrawn_reason == "misdiagnosed"
    assert client.get(changelist + "?withdrawn=yes").context["cl"].result_count == 1
    client.post(changelist, {"action": "restore", "_selected_action": [case.id]})
    case.refresh_from_db()
    assert case.withdrawn_at is None and case.withdrawn_reason == ""
    change = client.get(f"{changelist}{case.id}/change/").content.decode()
    assert "Updated at:" in change and 'name="updated_at"' not in change  # shown, never edited


def test_the_library_page_counts_and_shows_only_the_cases_in_the_library(ready_index, clinician, client):
    from retrieval.services import case_withdraw

    client.force_login(clinician)
    total = Case.objects.count()
    page = client.get("/library/").content.decode()
    assert f"<p>{total} diagnosed images of" in page and "library-withdrawn" not in page
    case = next(case for cases in selectors.case_examples(collection="synthetic").values() for case in cases)
    assert f'case {case.image_id}"' in page
    case_withdraw(case=case, reason="misfiled")  # the page is cached per library state: this is a new one
    page = client.get("/library/").content.decode()
    assert f"<p>{total - 1} diagnosed images of" in page
    assert "1 more image withdrawn from the library (never shown as similar cases) is not counted." in page
    assert f'case {case.image_id}"' not in page


@pytest.mark.slow
def test_an_unfiltered_query_searches_once_with_a_few_withdrawn_and_twice_with_many(ready_index, clinician,
                                                                                   monkeypatch):
    from retrieval.loaders import LoadedIndex
    from retrieval.services import case_withdraw, queries

    runtime.forget()
    searches = []
    original = LoadedIndex.search

    def counted(self, *args, **kwargs):
        searches.append(kwargs.get("where"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoadedIndex, "search", counted)
    case = _library_case()
    ranked = _neighbours(_query(clinician, case, k=20))
    for case_id in ranked[:3]:
        case_withdraw(case=Case.objects.get(id=case_id), reason="a few")
    searches.clear()
    assert _neighbours(_query(clinician, case)) == ranked[3:9]
    assert searches == [None]  # one search, deeper by the withdrawn count, less the withdrawn cases
    monkeypatch.setattr(queries, "WITHDRAWN_SEARCHED_DEEPER", 2)  # now "many" are withdrawn
    searches.clear()
    assert _neighbours(_query(clinician, case)) == ranked[3:9]
    assert len(searches) == 2 and searches[0] is None and set(searches[1].exclude_case_ids) == set(ranked[:3])
    runtime.forget()
