"""No reader-facing page or image reveals the ground truth of a study case while the study is open.

The check is differential: every page and image a reader can fetch, and what reporting a Task 2
enlargement answers, is recorded, then the study cases' diagnoses are permuted among them (class
counts unchanged) and their image ids changed, and everything is fetched again. Any difference (other than per-request tokens) would mean that
something the reader receives depends on the truth.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta

from django.db import transaction
from django.urls import reverse

from readerstudy.models import AssignedCase, Assignment, StudyCase, StudyNeighbour
from retrieval.models import Case
from tests.readerstudy.conftest import signed_in

TOKENS = [
    re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]+'),
    re.compile(rb'(name="shown" value=")[^"]+'),
]


def _normalised(content: bytes) -> bytes:
    for pattern in TOKENS:
        content = pattern.sub(rb"\1TOKEN", content)
    return content


def _reader_urls(study, assignment) -> list[str]:
    n = assignment.items.count()
    urls = [reverse("home"), reverse("library"), reverse("readerstudy:list"),
            reverse("readerstudy:start", args=[study.id]), reverse("readerstudy:my_results", args=[study.id])]
    for task in (1, 2):
        urls.append(reverse("readerstudy:task", args=[study.id, task]))
        for position in range(1, n + 1):
            urls.append(reverse("readerstudy:task", args=[study.id, task]) + f"?position={position}")
            urls.append(reverse("readerstudy:case_image", args=[study.id, task, position]))
    for position in range(1, n + 1):
        for rank in range(1, study.neighbours_shown + 1):
            urls.append(reverse("readerstudy:neighbour_image", args=[study.id, position, rank]))
    return urls


def _fetch_all(client, urls) -> dict[str, tuple[int, bytes]]:
    return {url: (response.status_code, _normalised(response.content))
            for url in urls for response in [client.get(url)]}


def _report_views(client, study, assignment) -> dict[str, tuple[int, bytes]]:
    """What the reader gets back for reporting an enlargement of every shown neighbour of every
    reachable Task 2 case (the page's endpoint and the API's), each in a transaction rolled back so
    that the second round gets the same answers as the first."""
    from readerstudy.services import shown_token

    out = {}
    for position in range(1, assignment.items.count() + 1):
        views = [{"id": f"r{rank}", "rank": rank, "seconds_after_shown": 0.25 * rank, "seconds_open": 0.5}
                 for rank in range(1, study.neighbours_shown + 1)]
        shown = shown_token(assignment, 2, position)
        requests = {
            reverse("readerstudy:case_views", args=[study.id, position]):
                lambda url: client.post(url, {"shown": shown, "views": json.dumps(views)}),
            f"/api/v1/studies/{study.id}/tasks/2/cases/{position}/views/":
                lambda url: client.post(url, {"shown": shown, "views": views}, content_type="application/json"),
        }
        for url, send in requests.items():
            with transaction.atomic():
                response = send(url)
                transaction.set_rollback(True)
            out["POST " + url] = (response.status_code, _normalised(response.content))
    return out


def test_nothing_a_reader_receives_depends_on_the_ground_truth(client, make_study, readers):
    from readerstudy.services import answer_submit, study_assign, study_open

    study = make_study(name="Leak check", washout=timedelta(0), cases_per_reader=4)
    study_assign(study=study, readers=readers[:1])
    study_open(study=study)
    assignment = Assignment.objects.get(study=study)
    # Task 1 finished (Task 2 open, washout 0), Task 2 answered but for its last case: every page
    # kind exists and every case (and image) is reached.
    for position in range(1, 5):
        answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    for position in range(1, 4):
        answer_submit(assignment=assignment, task=2, position=position, answer="mel", confidence=4)
    reader_client = signed_in(client, readers[0])
    urls = _reader_urls(study, assignment)
    before = {**_fetch_all(reader_client, urls), **_report_views(reader_client, study, assignment)}
    assert before[reverse("readerstudy:my_results", args=[study.id])][0] == 403  # no results while open
    not_ok = {url: status for url, (status, _) in before.items() if status not in (200, 201)}
    assert not_ok == {reverse("readerstudy:my_results", args=[study.id]): 403,
                      reverse("home"): 302}  # home redirects to the library

    study_cases = list(StudyCase.objects.filter(study=study).select_related("case"))
    originals = [(sc.case.image_id, sc.case.lesion_id) for sc in study_cases]
    texts = b"".join(content for _, content in before.values())
    for image_id, lesion_id in originals:
        assert image_id.encode() not in texts and lesion_id.encode() not in texts

    labels = [sc.case.dx for sc in study_cases]
    assert len(set(labels)) > 1, "the permutation below must change some diagnoses"
    permuted = labels[1:] + labels[:1]
    for sc, dx in zip(study_cases, permuted):
        # (lesion ids are kept: changing them would change the library's lesion count, which is
        # not about the truth; that they never appear is checked above)
        Case.objects.filter(id=sc.case_id).update(dx=dx, image_id=f"X{sc.case_id}")
    StudyCase.objects.filter(study=study).update(majority_vote="df")  # nor the vote (staff only)
    after = {**_fetch_all(reader_client, urls), **_report_views(reader_client, study, assignment)}
    changed = [url for url in before if before[url] != after[url]]
    assert changed == []


def test_neighbour_images_and_pages_do_not_identify_library_files(client, open_study, readers):
    """Images reach readers through opaque study URLs, never through /media/ file names."""
    reader_client = signed_in(client, readers[0])
    page = reader_client.get(reverse("readerstudy:task", args=[open_study.id, 1]))
    assert b"/media/" not in page.content
    item = AssignedCase.objects.filter(assignment__reader=readers[0], assignment__study=open_study).first()
    names = [item.study_case.case.image.name] + [n.case.image.name for n in
                                                 StudyNeighbour.objects.filter(study_case=item.study_case)]
    for name in names:
        assert name.encode() not in page.content
