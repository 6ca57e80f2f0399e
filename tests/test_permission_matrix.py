"""Who may do what: every URL pattern of the project, for every role, with the status it must get.

The URL patterns are enumerated from the resolver, so a URL added without an entry here fails
``test_every_url_pattern_has_a_matrix_entry``. Each entry is a list of probes (method, concrete
URL, expected status per role); every probe runs as each role against the same scenario: an open
reader study with one reader half-way through Task 2, a clinician's query and another
clinician's query, and a row of every model the admin shows. Each request runs in a transaction
that is rolled back, so a DELETE or a close does not change what the next role sees.

The reader column is also checked for the ground truth: every response a reader gets with a 2xx
must not depend on the study cases' diagnoses (they are permuted and everything is fetched again),
and must not contain them (they are replaced by a marker that no page could render by accident).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from lesionsearch.audit.services import record
from lesionsearch.roles import CLINICIAN
from tests.conftest import jpeg_bytes
from tests.readerstudy.conftest import readers, rows_only_study  # noqa: F401  (fixtures)

ROLES = ("anonymous", "clinician", "reader", "study_admin", "superuser", "no_role")


def _patterns(patterns=None, prefix: str = ""):
    """Every URL pattern of the project as its full route string, converters left out (``<int:pk>``
    and ``<id:pk>`` are both ``<pk>``: the matrix is about the URL, not how its ids are parsed);
    regex routes keep their ^ and $."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", prefix + str(pattern.pattern))


# --- The scenario ---------------------------------------------------------------------------

@dataclass
class Scenario:
    users: dict
    study: object
    assignment: object
    query: object
    other_query: object
    case: object
    ids: dict = field(default_factory=dict)

    def shown(self, task: int, position: int) -> str:
        from readerstudy.services import shown_token

        return shown_token(self.assignment, task, position)


@pytest.fixture(autouse=True)
def no_broker(sent_jobs):
    """Nothing these requests do may send a task (no worker runs here)."""
    return sent_jobs


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root")


@pytest.fixture
def scenario(media_root, rows_only_study, readers, clinician, study_admin, superuser, stranger,  # noqa: F811
             django_user_model):
    from rest_framework.authtoken.models import Token

    from readerstudy.models import Assignment, RelevanceRating, StudyCase
    from readerstudy.services import answer_submit, neighbour_views_record
    from retrieval.models import Case, LibraryCheck, ModelVersion, Query, TrainingJob

    for case in Case.objects.all():  # the study's images exist on disk, as in production
        path = media_root / case.image.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(case.id))
    # Distinct truths, so that a page that depended on them would differ when they are permuted.
    for study_case, dx in zip(StudyCase.objects.filter(study=rows_only_study).order_by("position"),
                              ("mel", "bcc", "akiec")):
        Case.objects.filter(id=study_case.case_id).update(dx=dx, dx_type="histo")
    colleague = django_user_model.objects.create_user(username="dr_colleague", password="pw-dr_colleague")
    colleague.groups.add(Group.objects.get_or_create(name=CLINICIAN)[0])

    def query(user) -> Query:
        name = f"queries/{user.id}/upload.jpg"
        (media_root / name).parent.mkdir(parents=True, exist_ok=True)
        (media_root / name).write_bytes(jpeg_bytes(user.id + 100))
        return Query.objects.create(user=user, image=name, sha256=f"{user.id:064d}", width=60, height=45,
                                    status=Query.Status.DONE, index_version=rows_only_study.index_version)

    reader = readers[0]
    assignment = Assignment.objects.get(study=rows_only_study, reader=reader)
    # Task 1 done, Task 2 answered for its first case (washout 0): every reader page exists.
    for position in (1, 2, 3):
        answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    answer_submit(assignment=assignment, task=2, position=1, answer="mel", confidence=4)
    item = assignment.items.get(task2_position=1)
    neighbour_views_record(assignment=assignment, task=2, position=1,
                           views=[{"id": "v1", "rank": 2, "seconds_after_shown": 0.5}])
    token = Token.objects.create(user=clinician)
    scenario = Scenario(
        users={"clinician": clinician, "reader": reader, "study_admin": study_admin, "superuser": superuser,
               "no_role": stranger},
        study=rows_only_study, assignment=assignment, query=query(clinician), other_query=query(colleague),
        case=Case.objects.filter(split="train").first())
    scenario.ids = {
        "auth/group": Group.objects.get(name=CLINICIAN).id,
        "auth/user": clinician.id,
        "authtoken/tokenproxy": token.user_id,  # a TokenProxy's pk is its user's
        "retrieval/case": scenario.case.id,
        "retrieval/librarycheck": LibraryCheck.objects.create(collection="rows", status="done").id,
        "retrieval/trainingjob": TrainingJob.objects.create(config="tiny", collection="rows", stage="3ch",
                                                            status="done").id,
        "retrieval/modelversion": ModelVersion.objects.filter(stage="4ch").first().id,
        "retrieval/indexversion": rows_only_study.index_version_id,
        "retrieval/query": scenario.query.id,
        "readerstudy/study": rows_only_study.id,
        "readerstudy/assignment": assignment.id,
        "readerstudy/answer": item.answers.first().id,
        "readerstudy/relevancerating": RelevanceRating.objects.create(item=item, rank=1, rating=2).id,
        "readerstudy/neighbourview": item.neighbour_views.get().id,
        "audit/auditevent": record("query.submit", user=clinician, obj=scenario.query).id,
    }
    return scenario


# --- The matrix -----------------------------------------------------------------------------
#             anonymous  clinician  reader  study_admin  superuser  no_role
SIGNED_IN = (302, 200, 200, 200, 200, 200)


@dataclass
class Probe:
    method: str
    url: Callable[[Scenario], str]
    expected: tuple[int, ...]
    data: Callable[[Scenario], dict] | None = None
    note: str = ""


def get(url, *expected, note=""):
    return Probe("get", url if callable(url) else (lambda s, u=url: u), tuple(expected), note=note)


def post(url, *expected, data=None, note=""):
    return Probe("post", url if callable(url) else (lambda s, u=url: u), tuple(expected), data, note=note)


def delete(url, *expected, note=""):
    return Probe("delete", url if callable(url) else (lambda s, u=url: u), tuple(expected), note=note)


def _study(path: str) -> Callable[[Scenario], str]:
    return lambda s: path.format(study=s.study.id)


def _answer(task: int, position: int):
    return lambda s: {"position": position, "answer": "bcc", "confidence": 2, "shown": s.shown(task, position)}


def _views(position: int, *, api: bool):
    """One enlargement of rank 1 of a Task 2 case: the page's form fields (the list as JSON), or the
    API's multipart form of the same list."""
    view = {"id": "m1", "rank": 1, "seconds_after_shown": 0.1, "seconds_open": 0.1}
    if api:
        return lambda s: {"shown": s.shown(2, position), **{f"views[0]{key}": value for key, value in view.items()}}
    return lambda s: {"shown": s.shown(2, position), "views": json.dumps([view])}


MATRIX: dict[str, list[Probe]] = {
    # Pages: case library and queries (clinicians; staff may search too, but see only their own queries)
    "": [get("/", 302, 302, 302, 302, 302, 302, note="signed in: to the library (a collection exists)")],
    "library/": [get("/library/", *SIGNED_IN)],
    "search/": [get("/search/", 302, 200, 403, 200, 200, 403),
                post("/search/", 302, 400, 403, 400, 400, 403, data=lambda s: {},
                     note="allowed roles reach the form: no image is a 400")],
    "methods/": [get("/methods/", *SIGNED_IN)],
    "queries/<pk>/": [
        get(lambda s: f"/queries/{s.query.id}/", 302, 200, 403, 404, 404, 403, note="the clinician's own query"),
        get(lambda s: f"/queries/{s.other_query.id}/", 302, 404, 403, 404, 404, 403, note="a colleague's query"),
    ],
    "queries/<pk>/report.pdf": [
        get(lambda s: f"/queries/{s.query.id}/report.pdf", 302, 200, 403, 404, 404, 403,
            note="the clinician's own finished query"),
        get(lambda s: f"/queries/{s.other_query.id}/report.pdf", 302, 404, 403, 404, 404, 403,
            note="a colleague's query"),
    ],
    "queries/<pk>/delete/": [
        get(lambda s: f"/queries/{s.query.id}/delete/", 302, 200, 403, 404, 404, 403),
        post(lambda s: f"/queries/{s.query.id}/delete/", 302, 302, 403, 404, 404, 403),
        post(lambda s: f"/queries/{s.other_query.id}/delete/", 302, 404, 403, 404, 404, 403),
    ],
    # Pages: reader studies (only the assigned reader reaches the study; management is for study admins)
    "studies/": [get("/studies/", *SIGNED_IN)],
    "studies/<study_id>/": [get(_study("/studies/{study}/"), 302, 404, 200, 404, 404, 404)],
    "studies/<study_id>/task/<task>/": [
        get(_study("/studies/{study}/task/1/"), 302, 404, 200, 404, 404, 404, note="Task 1 done"),
        get(_study("/studies/{study}/task/2/"), 302, 404, 200, 404, 404, 404),
        post(_study("/studies/{study}/task/2/"), 302, 404, 302, 404, 404, 404, data=_answer(2, 2)),
    ],
    "studies/<study_id>/task/<task>/image/<position>/": [
        get(_study("/studies/{study}/task/2/image/1/"), 302, 404, 200, 404, 404, 404)],
    "studies/<study_id>/task/2/image/<position>/neighbour/<rank>/": [
        get(_study("/studies/{study}/task/2/image/1/neighbour/1/"), 302, 404, 200, 404, 404, 404)],
    "studies/<study_id>/task/2/case/<position>/views/": [
        get(_study("/studies/{study}/task/2/case/2/views/"), 302, 405, 405, 405, 405, 405),
        post(_study("/studies/{study}/task/2/case/2/views/"), 302, 404, 200, 404, 404, 404,
             data=_views(2, api=False), note="the enlargements the reading page reports"),
    ],
    "studies/<study_id>/results/": [
        get(_study("/studies/{study}/results/"), 302, 404, 403, 404, 404, 404, note="no results while open")],
    "studies/manage/": [get("/studies/manage/", 302, 403, 403, 200, 200, 403),
                        post("/studies/manage/", 302, 403, 403, 400, 400, 403, data=lambda s: {})],
    "studies/manage/<study_id>/": [get(_study("/studies/manage/{study}/"), 302, 403, 403, 200, 200, 403)],
    "studies/manage/<study_id>/export/": [
        get(_study("/studies/manage/{study}/export/"), 302, 403, 403, 200, 200, 403)],
    # The scenario's one read pair is too few for an MRMC analysis, so staff get 404 for its figures
    # (tests/readerstudy/test_mrmc_export.py gets one); everyone else is refused before that.
    "studies/manage/<study_id>/figure/<name>": [
        get(_study("/studies/manage/{study}/figure/mrmc_forest_accuracy.png"), 302, 403, 403, 404, 404, 403),
        get(_study("/studies/manage/{study}/figure/nothing.png"), 302, 403, 403, 404, 404, 403)],
    "studies/manage/<study_id>/<action>/": [
        get(_study("/studies/manage/{study}/close/"), 302, 403, 403, 405, 405, 403),
        post(_study("/studies/manage/{study}/close/"), 302, 403, 403, 302, 302, 403),
    ],
    # Signing in and out
    "accounts/login/": [get("/accounts/login/", 200, 200, 200, 200, 200, 200),
                        post("/accounts/login/", 200, 200, 200, 200, 200, 200,
                             data=lambda s: {"username": "dr_clinician", "password": "wrong"},
                             note="a wrong password: the form again")],
    "accounts/logout/": [get("/accounts/logout/", 405, 405, 405, 405, 405, 405),
                         post("/accounts/logout/", 302, 302, 302, 302, 302, 302)],
    # API: queries (own only), library (no readers), index (any role; rebuild staff only)
    "api/v1/queries/": [get("/api/v1/queries/", 401, 200, 403, 200, 200, 403),
                        post("/api/v1/queries/", 401, 400, 403, 400, 400, 403, data=lambda s: {})],
    "api/v1/queries/<query_id>/": [
        get(lambda s: f"/api/v1/queries/{s.query.id}/", 401, 200, 403, 404, 404, 403),
        get(lambda s: f"/api/v1/queries/{s.other_query.id}/", 401, 404, 403, 404, 404, 403),
        delete(lambda s: f"/api/v1/queries/{s.query.id}/", 401, 204, 403, 404, 404, 403),
        delete(lambda s: f"/api/v1/queries/{s.other_query.id}/", 401, 404, 403, 404, 404, 403),
    ],
    "api/v1/queries/<query_id>/report.pdf": [
        get(lambda s: f"/api/v1/queries/{s.query.id}/report.pdf", 401, 200, 403, 404, 404, 403),
        get(lambda s: f"/api/v1/queries/{s.other_query.id}/report.pdf", 401, 404, 403, 404, 404, 403),
    ],
    "api/v1/methods/": [get("/api/v1/methods/", 401, 200, 200, 200, 200, 200)],
    "api/v1/cases/": [get("/api/v1/cases/", 401, 200, 403, 200, 200, 403)],
    "api/v1/cases/<case_id>/": [get(lambda s: f"/api/v1/cases/{s.case.id}/", 401, 200, 403, 200, 200, 403)],
    "api/v1/cases/<case_id>/withdrawal/": [  # staff only (each probe is rolled back: the DELETE finds it in)
        get(lambda s: f"/api/v1/cases/{s.case.id}/withdrawal/", 401, 403, 403, 405, 405, 403),
        post(lambda s: f"/api/v1/cases/{s.case.id}/withdrawal/", 401, 403, 403, 200, 200, 403,
             data=lambda s: {"reason": "matrix"}),
        delete(lambda s: f"/api/v1/cases/{s.case.id}/withdrawal/", 401, 403, 403, 409, 409, 403)],
    "api/v1/index/": [get("/api/v1/index/", 401, 200, 200, 200, 200, 403)],
    "api/v1/index/rebuild/": [get("/api/v1/index/rebuild/", 401, 403, 403, 405, 405, 403),
                              post("/api/v1/index/rebuild/", 401, 403, 403, 202, 202, 403, data=lambda s: {})],
    # API: reader studies (the assigned reader only; a superuser has the role but no assignment)
    "api/v1/studies/": [get("/api/v1/studies/", 401, 403, 200, 403, 200, 403)],
    "api/v1/studies/<study_id>/": [get(_study("/api/v1/studies/{study}/"), 401, 403, 200, 403, 404, 403)],
    "api/v1/studies/<study_id>/tasks/<task>/next/": [
        get(_study("/api/v1/studies/{study}/tasks/2/next/"), 401, 403, 200, 403, 404, 403)],
    "api/v1/studies/<study_id>/tasks/<task>/cases/<position>/": [
        get(_study("/api/v1/studies/{study}/tasks/2/cases/1/"), 401, 403, 200, 403, 404, 403)],
    "api/v1/studies/<study_id>/tasks/<task>/cases/<position>/views/": [
        get(_study("/api/v1/studies/{study}/tasks/2/cases/2/views/"), 401, 403, 405, 403, 405, 403),
        post(_study("/api/v1/studies/{study}/tasks/2/cases/2/views/"), 401, 403, 201, 403, 404, 403,
             data=_views(2, api=True)),
    ],
    "api/v1/studies/<study_id>/tasks/<task>/answers/": [
        get(_study("/api/v1/studies/{study}/tasks/2/answers/"), 401, 403, 405, 403, 405, 403),
        post(_study("/api/v1/studies/{study}/tasks/2/answers/"), 401, 403, 201, 403, 404, 403, data=_answer(2, 2)),
    ],
    # API: study administration and exports (study admins and staff)
    "api/v1/studies/manage/": [get("/api/v1/studies/manage/", 401, 403, 403, 200, 200, 403),
                               post("/api/v1/studies/manage/", 401, 403, 403, 400, 400, 403, data=lambda s: {})],
    "api/v1/studies/manage/<study_id>/": [
        get(_study("/api/v1/studies/manage/{study}/"), 401, 403, 403, 200, 200, 403)],
    "api/v1/studies/manage/<study_id>/open/": [
        get(_study("/api/v1/studies/manage/{study}/open/"), 401, 403, 403, 405, 405, 403),
        post(_study("/api/v1/studies/manage/{study}/open/"), 401, 403, 403, 409, 409, 403, note="open already")],
    "api/v1/studies/manage/<study_id>/close/": [
        get(_study("/api/v1/studies/manage/{study}/close/"), 401, 403, 403, 405, 405, 403),
        post(_study("/api/v1/studies/manage/{study}/close/"), 401, 403, 403, 200, 200, 403)],
    "api/v1/studies/manage/<study_id>/assign/": [
        get(_study("/api/v1/studies/manage/{study}/assign/"), 401, 403, 403, 405, 405, 403),
        post(_study("/api/v1/studies/manage/{study}/assign/"), 401, 403, 403, 400, 400, 403, data=lambda s: {})],
    "api/v1/studies/manage/<study_id>/progress/": [
        get(_study("/api/v1/studies/manage/{study}/progress/"), 401, 403, 403, 200, 200, 403)],
    "api/v1/studies/manage/<study_id>/report/": [
        get(_study("/api/v1/studies/manage/{study}/report/"), 401, 403, 403, 200, 200, 403)],
    "api/v1/studies/manage/<study_id>/export/": [
        get(_study("/api/v1/studies/manage/{study}/export/"), 401, 403, 403, 200, 200, 403)],
    # API description: public (it describes the API, it holds no data)
    "api/v1/schema/": [get("/api/v1/schema/", 200, 200, 200, 200, 200, 200)],
    "api/v1/docs/": [get("/api/v1/docs/", 200, 200, 200, 200, 200, 200)],
    "api/v1/redoc/": [get("/api/v1/redoc/", 200, 200, 200, 200, 200, 200)],
    "^api/": [get("/api/v1/no-such-endpoint/", 404, 404, 404, 404, 404, 404)],
    "healthz": [get("/healthz", 200, 200, 200, 200, 200, 200)],
    # Operations: the page is for operators (superusers, staff with jobs.view_workerbeat); /metrics answers loopback (the test client) or a token
    "ops/": [get("/ops/", 302, 403, 403, 403, 200, 403)],
    "metrics": [get("/metrics", 200, 200, 200, 200, 200, 200, note="from loopback; elsewhere only with the token")],
    # Media: signed-in users only; a query's files are its owner's (and staff's) only
    "^media/(?P<path>.+)$": [
        get(lambda s: f"/media/{s.case.image.name}", *SIGNED_IN, note="a library image"),
        get(lambda s: f"/media/{s.query.image.name}", 302, 200, 404, 200, 200, 404, note="the clinician's upload"),
        get(lambda s: f"/media/{s.other_query.image.name}", 302, 404, 404, 200, 200, 404,
            note="a colleague's upload"),
    ],
}

# --- The admin: staff only; the study admin is staff without model permissions ---------------
def admin(url, study_admin: int, superuser: int, *, anonymous: int = 302, signed_in: int = 302, note=""):
    """Anyone but staff is sent to the admin's sign-in page (302)."""
    return get(url, anonymous, signed_in, signed_in, study_admin, superuser, signed_in, note=note)


MATRIX.update({
    "admin/": [admin("/admin/", 200, 200)],
    "admin/login/": [admin("/admin/login/", 302, 302, anonymous=200, signed_in=200)],
    "admin/logout/": [admin("/admin/logout/", 405, 405)],
    "admin/password_change/": [admin("/admin/password_change/", 200, 200)],
    "admin/password_change/done/": [admin("/admin/password_change/done/", 200, 200)],
    "admin/autocomplete/": [admin("/admin/autocomplete/", 403, 403)],
    "admin/jsi18n/": [admin("/admin/jsi18n/", 200, 200)],
    "admin/r/<content_type_id>/<object_id>/": [admin("/admin/r/1/1/", 404, 404)],
    "admin/^(?P<app_label>auth|authtoken|retrieval|readerstudy|audit)/$": [
        admin(f"/admin/{app}/", 200 if app == "retrieval" else 404, 200, note="the study admin sees cases only")
        for app in ("auth", "authtoken", "retrieval", "readerstudy", "audit")],
    "admin/(?P<url>.*)$": [admin("/admin/no/such/page/", 404, 404)],
    "admin/auth/user/<id>/password/": [admin(lambda s: f"/admin/auth/user/{s.ids['auth/user']}/password/", 403, 200)],
})
#: Every model in the admin: whether the study admin may view it (the study admin group has only
#: retrieval.view_case, from the roles migration), and what the superuser gets on its add and delete
#: pages (read-only records refuse both; library cases are added only by import_ham10000, which inspects
#: every image; the audit log can be neither added to nor deleted from).
ADMIN_MODELS = {
    "auth/group": (403, 200, 200), "auth/user": (403, 200, 200), "authtoken/tokenproxy": (403, 200, 200),
    "retrieval/case": (200, 403, 200), "retrieval/librarycheck": (403, 200, 200),
    "retrieval/trainingjob": (403, 200, 200),
    "retrieval/modelversion": (403, 200, 200), "retrieval/indexversion": (403, 403, 200),
    "retrieval/query": (403, 403, 200), "readerstudy/study": (403, 403, 200),
    "readerstudy/assignment": (403, 403, 403), "readerstudy/answer": (403, 403, 403),
    "readerstudy/relevancerating": (403, 403, 403), "readerstudy/neighbourview": (403, 403, 403),
    "audit/auditevent": (403, 403, 403),
}
for _model, (_view, _add, _delete) in ADMIN_MODELS.items():
    def _object(suffix, model=_model):
        return lambda s: f"/admin/{model}/{s.ids[model]}/{suffix}"

    MATRIX.update({
        f"admin/{_model}/": [admin(f"/admin/{_model}/", _view, 200)],
        f"admin/{_model}/add/": [admin(f"/admin/{_model}/add/", 403, _add)],
        f"admin/{_model}/<object_id>/history/": [admin(_object("history/"), _view, 200)],
        f"admin/{_model}/<object_id>/delete/": [admin(_object("delete/"), 403, _delete)],
        f"admin/{_model}/<object_id>/change/": [admin(_object("change/"), _view, 200)],
        f"admin/{_model}/<object_id>/": [admin(_object(""), 302, 302, note="to the change page")],
    })


# --- Running it -----------------------------------------------------------------------------

def _client(scenario: Scenario, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(scenario.users[role])
    return client


def _fetch(client: Client, probe: Probe, scenario: Scenario):
    """The probe's request, in a transaction rolled back afterwards (a DELETE or close leaves no trace)."""
    url = probe.url(scenario)
    with transaction.atomic():
        if probe.method == "get":
            response = client.get(url)
        elif probe.method == "delete":
            response = client.delete(url)
        else:
            response = client.post(url, probe.data(scenario) if probe.data else {})
        body = b"".join(response.streaming_content) if response.streaming else response.content
        transaction.set_rollback(True)
    return response.status_code, body


def test_every_url_pattern_has_a_matrix_entry():
    patterns = list(_patterns())
    assert len(patterns) == len(set(patterns)), "two URL patterns with the same route"
    assert sorted(set(patterns) - set(MATRIX)) == [], "URL patterns without a permission-matrix entry"
    assert sorted(set(MATRIX) - set(patterns)) == [], "matrix entries for URL patterns that no longer exist"
    for route, probes in MATRIX.items():
        assert probes and all(len(p.expected) == len(ROLES) for p in probes), route


@pytest.mark.parametrize("route", sorted(MATRIX))
def test_permission_matrix(route, scenario):
    got, want = {}, {}
    for index, probe in enumerate(MATRIX[route]):
        for role, expected in zip(ROLES, probe.expected):
            key = f"{probe.method.upper()} {probe.url(scenario)} ({probe.note or index}) as {role}"
            got[key] = _fetch(_client(scenario, role), probe, scenario)[0]
            want[key] = expected
    assert got == want


# --- Readers and the ground truth -----------------------------------------------------------
VOLATILE = [
    re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]+'),
    re.compile(rb'(name="shown" value=")[^"]+'),
    re.compile(rb'("shown":\s*")[^"]+'),
    re.compile(rb'("seconds":\s*)[0-9.e-]+'),  # time from showing a case to its answer
    re.compile(rb'(X-CSRFTOKEN"\] = ")[^"]+'),  # Swagger UI's page
]
MARKER = "qqtruth"  # fits Case.dx; no page, class list or image could contain it by chance


def _normalised(body: bytes) -> bytes:
    for pattern in VOLATILE:
        body = pattern.sub(rb"\1TOKEN", body)
    return body


def _reader_responses(scenario: Scenario) -> dict[str, tuple[int, bytes]]:
    """Every response of the matrix that the reader gets with a 2xx, by probe."""
    client = _client(scenario, "reader")
    reader = ROLES.index("reader")
    out = {}
    for route, probes in MATRIX.items():
        for probe in probes:
            if 200 <= probe.expected[reader] < 300:
                status, body = _fetch(client, probe, scenario)
                out[f"{probe.method.upper()} {probe.url(scenario)}"] = (status, _normalised(body))
    return out


def test_no_response_a_reader_gets_depends_on_or_contains_the_ground_truth(scenario):
    from readerstudy.models import StudyCase
    from retrieval.models import Case

    before = _reader_responses(scenario)
    # Every reader-facing study URL is among them (pages, images and the API), as a 2xx.
    assert {url.split("?")[0] for url in before} >= {
        f"GET /studies/{scenario.study.id}/task/2/", f"GET /studies/{scenario.study.id}/task/2/image/1/",
        f"GET /api/v1/studies/{scenario.study.id}/tasks/2/next/", f"POST /api/v1/studies/{scenario.study.id}/tasks/2/answers/",
        f"POST /studies/{scenario.study.id}/task/2/case/2/views/",
        f"POST /api/v1/studies/{scenario.study.id}/tasks/2/cases/2/views/",
    }
    assert all(200 <= status < 300 for status, _ in before.values())

    study_cases = list(StudyCase.objects.filter(study=scenario.study).select_related("case").order_by("position"))
    truths = [sc.case.dx for sc in study_cases]
    for sc, dx in zip(study_cases, truths[1:] + truths[:1]):
        Case.objects.filter(id=sc.case_id).update(dx=dx, dx_type="consensus")
    StudyCase.objects.filter(study=scenario.study).update(majority_vote="df")
    permuted = _reader_responses(scenario)
    assert [url for url in before if before[url] != permuted[url]] == []

    Case.objects.filter(id__in=[sc.case_id for sc in study_cases]).update(dx=MARKER)
    StudyCase.objects.filter(study=scenario.study).update(majority_vote=MARKER)
    marked = _reader_responses(scenario)
    assert {url: status for url, (status, _) in marked.items() if not 200 <= status < 300} == {}
    assert [url for url, (_, body) in marked.items() if MARKER.encode() in body] == []
