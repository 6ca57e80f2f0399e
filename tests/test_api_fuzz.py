"""Schemathesis against the API's own OpenAPI schema: every operation, every role, zero server errors.

The schema is the one the application serves at /api/v1/schema/. Requests generated from it are
sent in-process to the Django WSGI application (no socket, no network), on a real tiny library and
index (``study_index`` of tests/readerstudy/conftest.py: query uploads reach the real image checks
and the index) and real reader studies: an open one with answers, one whose Task 2 is open to the
reader (relevance ratings, changes allowed), a prepared draft; plus the clinician's finished and
pending queries. Per operation:

* the coverage phase (schemathesis' deterministic boundary and type-breaking values of every
  parameter and body field: minimum/maximum and one past them, missing required fields, wrong
  types, wrong content types and methods), sent as the role the operation is for, with valid
  path ids replaced by ids that exist;
* ``FUZZ_EXAMPLES`` Hypothesis examples (default 30): schema-valid and schema-breaking ones
  (random bytes as the query image included), with generated path ids or ids that exist, and some
  with one integer made extreme (-1, 2**31, 2**63, 10**20: past what a database column,
  ``timedelta`` or NumPy take; plain generation rarely draws them). Each example is sent as
  every role: anonymous, clinician, reader (assigned to the studies), study administrator (staff).

Checks on every response: ``not_a_server_error`` (no 5xx; an exception raised in a view is
reported with its traceback), and conformance to the schema: the status code is declared for the
operation, the content type too, and the body matches the declared shape.

Celery is a no-op here (queries, builds and study preparations are stored, never enqueued), the
query-submission throttle is reset before each request and ``?wait=`` long-polls are cut to 50 ms:
the point is the web tier. Every failure is collected (not only the first), deduplicated per
operation and kind, and listed at the end with a curl line to reproduce it.

A longer run by hand (the CI run is derandomized: the same requests every time; ``FUZZ_SEED``
explores another reproducible stream, ``FUZZ_COVERAGE=0`` skips the coverage phase)::

    FUZZ_EXAMPLES=500 FUZZ_SEED=1 .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_api_fuzz.py

``-s`` prints the status codes each role got from each operation.
"""
from __future__ import annotations

import os
import time
import traceback
from datetime import timedelta

import pytest
import schemathesis  # requirements-dev.txt pins it (and hypothesis)
from django.core.cache import cache
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.overrides import Override
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

# The reader-study fixtures (a study prepared on the tiny real index, readers) live with those tests.
from tests.readerstudy.conftest import make_study, open_study, readers, study_index  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
SEED = os.environ.get("FUZZ_SEED")
COVERAGE = os.environ.get("FUZZ_COVERAGE", "1") != "0"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = ("anonymous", "clinician", "reader", "study_admin")


@pytest.fixture
def web_tier_only(monkeypatch):
    """No task reaches a broker, and long-polls are short."""
    from lesionsearch.jobs import services as jobs
    from retrieval.services import polling

    monkeypatch.setattr(jobs, "send", lambda kind, job_id, stamped=False: None)
    monkeypatch.setattr(polling, "MAX_WAIT_SECONDS", 0.05)


@pytest.fixture
def wsgi_app():
    """The Django WSGI application, on the test's database connection.

    Django closes the connection at the start and end of each request; inside a test's transaction
    that would end the transaction, so, as django.test.Client does, those two receivers are
    detached while the fuzz runs. Exceptions a request raised (answered 500) are recorded with
    their traceback for the failure report.
    """
    from django.core.handlers.wsgi import WSGIHandler

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    exceptions: list[str] = []

    def record(sender, request=None, **kwargs):
        exceptions.append(f"{request.method} {request.get_full_path()}\n{traceback.format_exc()}")

    got_request_exception.connect(record, weak=False)
    app = WSGIHandler()
    app.exceptions = exceptions
    yield app
    got_request_exception.disconnect(record)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(web_tier_only, make_study, open_study, readers, clinician, study_admin, media_root):
    """Users with tokens, the clinician's finished queries, and studies in every state."""
    from readerstudy.models import Assignment
    from readerstudy.services import answer_submit, study_assign, study_open
    from retrieval.models import Case
    from retrieval.services.queries import query_run, query_submit

    reader = readers[0]
    # The clinician's queries: two finished on the real tiny index, one still pending.
    test_images = list(Case.objects.filter(split="test").order_by("id")[:3])
    queries = []
    for i, case in enumerate(test_images):
        query = query_submit(user=clinician, image_data=case.image.read(), filename=f"lesion-{i}.jpg", k=3)
        if i < 2:
            assert query_run(query_id=query.id, worker="test") is True
        queries.append(query.id)

    # The open study (24 h washout): the reader has answered two Task 1 cases.
    pilot = Assignment.objects.get(study=open_study, reader=reader)
    for position in (1, 2):
        answer_submit(assignment=pilot, task=1, position=position, answer="nv", confidence=3)
    # A study whose Task 2 is open to the reader (no washout), with relevance ratings and changes allowed.
    second = make_study("Task two", washout=timedelta(0), relevance_ratings=True, allow_changes=True,
                        cases_per_reader=3)
    study_assign(study=second, readers=[reader])
    study_open(study=second)
    assignment = Assignment.objects.get(study=second, reader=reader)
    for position in (1, 2, 3):
        answer_submit(assignment=assignment, task=1, position=position, answer="mel", confidence=4)
    # A prepared draft, for opening and assigning.
    draft = make_study("Draft")

    users = {"clinician": clinician, "reader": reader, "study_admin": study_admin}
    tokens = {role: Token.objects.get_or_create(user=user)[0].key for role, user in users.items()}
    cases = list(Case.objects.order_by("id").values_list("id", flat=True)[:5])
    ids = {"query_id": queries, "case_id": cases, "study_id": [open_study.id, second.id, draft.id],
           "task": [1, 2], "position": [1, 2, 3, 4, 5]}
    return {"tokens": tokens, "ids": ids}


def _known_path_parameters(operation, ids: dict[str, list[int]]) -> st.SearchStrategy[dict[str, int]] | None:
    """Ids that exist: the fixtures', or small ones (the queries and studies the fuzz itself created)."""
    names = [p.name for p in operation.path_parameters]
    if not names:
        return None
    return st.fixed_dictionaries({name: st.one_of(st.sampled_from(ids[name]), st.integers(0, 40)) for name in names})


#: Integers past what a database column, ``timedelta`` or NumPy's seeding take. Schema-driven
#: generation rarely draws them for an unbounded integer, so the fuzz puts them in itself.
EXTREME_INTEGERS = (-1, 2**31, 2**63, 10**20, -(2**63) - 1)


def _integer_inputs(operation) -> list[tuple[str, str]]:
    """(location, name) of every integer the operation takes: path, query and body fields."""
    def is_integer(schema) -> bool:
        return isinstance(schema, dict) and (schema.get("type") == "integer" or any(
            option.get("type") == "integer" for option in schema.get("anyOf", []) + schema.get("oneOf", [])))

    inputs = [(location, parameter.name)
              for location, parameters in (("path", operation.path_parameters), ("query", operation.query))
              for parameter in parameters if is_integer(parameter.raw_schema)]
    for body in operation.body:
        properties = (body.resolved_schema or {}).get("properties", {})
        inputs += [("body", name) for name, schema in properties.items() if is_integer(schema)]
        break  # every media type of a body has the same fields
    return inputs


def _with_an_extreme_integer(operation):
    inputs = _integer_inputs(operation)

    def mutate(drawn):
        """The case with one of its integers (path, query or body; ``pick`` says which) made extreme."""
        case, value, pick = drawn
        if not inputs:
            return case
        location, name = inputs[pick % len(inputs)]
        if location == "path":
            case.path_parameters = {**case.path_parameters, name: value}
        elif location == "query":
            case.query = {**(case.query or {}), name: value}
        elif isinstance(case.body, dict):
            case.body = {**case.body, name: value}
        return case
    return mutate


def _strategy(operation, ids):
    """Positive and negative cases, with generated path parameters or ones that exist, some with an
    extreme integer."""
    by_mode = {}
    known = _known_path_parameters(operation, ids)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        by_mode[mode] = [operation.as_strategy(generation_mode=mode)]
        if known is not None:
            by_mode[mode].append(known.flatmap(
                lambda params, mode=mode: operation.as_strategy(generation_mode=mode, path_parameters=params)))
    extreme = st.tuples(st.one_of(by_mode[GenerationMode.POSITIVE]), st.sampled_from(EXTREME_INTEGERS),
                        st.integers(0, 15)).map(_with_an_extreme_integer(operation))
    return st.one_of([*by_mode[GenerationMode.POSITIVE], *by_mode[GenerationMode.NEGATIVE], extreme])


def _coverage_cases(operation, ids) -> list:
    """Schemathesis' coverage phase: deterministic boundary and type-breaking values of every
    parameter and body field; schema-valid path ids are replaced by ids that exist."""
    generator = CoverageGenerator(
        operation=operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=operation.schema.config.generation_for(operation=operation), auth_storage=None,
        override=Override(), feedback=FeedbackSources())
    cases = list(generator)
    for i, case in enumerate(cases):
        params = case.path_parameters or {}
        if params and all(str(value).isdigit() for value in params.values() if not isinstance(value, bool)):
            case.path_parameters = {name: ids[name][i % len(ids[name])] for name in params}
    return cases


def _coverage_role(operation) -> str:
    """The role the operation is for (the others are refused before the input is read)."""
    path = operation.path
    if path.startswith("/api/v1/studies/manage/") or path == "/api/v1/index/rebuild/" \
            or path.endswith("/withdrawal/"):
        return "study_admin"
    return "reader" if path.startswith("/api/v1/studies/") else "clinician"


def _send(case, app, token: str | None) -> tuple[int, dict[str, str]]:
    """Send the case; the failures found, keyed by a short description (what, status)."""
    cache.clear()  # the query-submission throttle: every example gets through to the view
    headers = {"Authorization": f"Token {token}"} if token else None
    response = case.call(app=app, headers=headers)
    failures = {}
    raised = list(app.exceptions)
    app.exceptions.clear()
    try:
        case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs={"app": app})
    except FailureGroup as group:
        kinds = ", ".join(sorted(f"{failure.code} {failure.title}" for failure in group.exceptions))
        failures[f"{kinds} ({response.status_code})"] = str(group)
    if raised:
        first = raised[0].strip().splitlines()
        failures[f"raised {first[-1]}"] = "the request raised:\n" + "\n".join(raised)
    return response.status_code, failures


def test_every_operation_as_every_role_answers_without_server_errors(world, wsgi_app):
    raw = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in raw.get_all_operations()]  # .ok(): a broken definition fails here
    declared = sum(len(methods) for methods in raw.raw_schema["paths"].values())
    labels = {op.label for op in operations}
    assert len(operations) == declared and {"POST /api/v1/queries/", "POST /api/v1/studies/manage/"} <= labels

    report: list[str] = []
    reached: set[str] = set()  # operations that answered some request with a success
    distinct: dict[tuple[str, str], tuple[list[str], str]] = {}  # (operation, failure) -> (roles, first report)
    started = time.monotonic()
    coverage_count = 0
    for operation in operations:
        statuses: dict[str, dict[int, int]] = {role: {} for role in ROLES}
        operation_started = time.monotonic()

        def record(case, role):
            status, failures = _send(case, wsgi_app, world["tokens"].get(role))
            statuses[role][status] = statuses[role].get(status, 0) + 1
            if 200 <= status < 300:
                reached.add(operation.label)
            for key, text in failures.items():
                roles, _ = distinct.setdefault((operation.label, key), ([], f"as {role}:\n{text}"))
                if role not in roles:
                    roles.append(role)

        coverage = _coverage_cases(operation, world["ids"]) if COVERAGE else []
        for case in coverage:
            record(case, _coverage_role(operation))
        coverage_count += len(coverage)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                  phases=[Phase.explicit, Phase.generate], print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(case=_strategy(operation, world["ids"]))
        def fuzz(case):
            for role in ROLES:
                record(case, role)

        if SEED is not None:
            fuzz = seed(int(SEED))(fuzz)
        fuzz()
        report.append(f"{operation.label} ({time.monotonic() - operation_started:.1f} s): " + "; ".join(
            f"{role} " + ",".join(f"{code}x{n}" for code, n in sorted(statuses[role].items())) for role in ROLES))

    elapsed = time.monotonic() - started
    summary = (f"{len(operations)} operations x {len(ROLES)} roles, {EXAMPLES} examples per operation "
               f"({len(operations) * EXAMPLES * len(ROLES)} requests), {coverage_count} coverage-phase requests, "
               f"{elapsed:.0f} s; {len(reached)} operations answered some of them with a success")
    print("\n" + summary + "\n" + "\n".join(report))
    if COVERAGE and EXAMPLES >= 30:  # not a fuzz of the 401s and 404s only: the requests got into the views
        assert len(reached) >= 0.8 * len(operations), (summary, sorted(labels - reached))
    listing = [f"{label}: {key} [{', '.join(roles)}]" for (label, key), (roles, _) in distinct.items()]
    details = [f"--- {label} {text}" for (label, _), (_, text) in distinct.items()]
    assert not distinct, summary + "\n\n" + "\n".join(listing) + "\n\n" + "\n\n".join(details)
