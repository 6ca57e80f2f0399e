"""Reader-study pages: reading (readers) and administration (study administrators and staff).

Reader pages address cases only by their position in the reader's own order; images are
served by these views (re-encoded without metadata, rotated for Task 2), never by library URLs,
so nothing on a reader's page identifies a study case or its diagnosis.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from lesionsearch.access import allowed_only
from readerstudy import selectors, services
from readerstudy.models import (
    LIKERT_CHOICES, MAX_SETTING, MAX_WASHOUT_SECONDS, RELEVANCE_CHOICES, ROTATION_CHOICES,
    NEW_STUDY_DESIGNS, TASK_WITH_NEIGHBOURS, TASKS, Assignment, Design, Study,
)
from retrieval.classes import CLASSES

#: Keyboard shortcuts of the class buttons (Likert confidence is 1-5 on the keyboard).
CLASS_KEYS = {"akiec": "a", "bcc": "b", "bkl": "k", "df": "d", "mel": "m", "nv": "n", "vasc": "v"}


study_admin_required = allowed_only(selectors.is_study_admin, "Managing reader studies is for study administrators.")


def _assignment(request, study_id: int) -> Assignment:
    try:
        return selectors.reader_assignment(user=request.user, study_id=study_id)
    except Assignment.DoesNotExist:
        raise Http404("You are not a reader of this study.") from None


def _study(study_id: int) -> Study:
    try:
        return selectors.study_get(study_id=study_id)
    except Study.DoesNotExist:
        raise Http404("no such study") from None


@contextmanager
def _refused_as_404_or_403():
    """A StudyError inside becomes the page's 404 (no such task or case) or 403 (not open, not reached)."""
    try:
        yield
    except services.StudyError as exc:
        if exc.status_code == 404:
            raise Http404(str(exc)) from None
        raise PermissionDenied(str(exc)) from None


# --- Reader pages -----------------------------------------------------------------------------

@login_required
@require_GET
def study_list(request):
    rows = []
    for assignment in selectors.reader_assignments(user=request.user):
        rows.append({"assignment": assignment, "study": assignment.study,
                     "tasks": [selectors.task_progress(assignment, task) for task in TASKS]})
    return render(request, "readerstudy/study_list.html", {
        "rows": rows, "is_admin": selectors.is_study_admin(request.user)})


@login_required
@require_GET
def study_start(request, study_id: int):
    assignment = _assignment(request, study_id)
    return render(request, "readerstudy/study_start.html", {
        "study": assignment.study, "assignment": assignment,
        "tasks": [selectors.task_progress(assignment, task) for task in TASKS],
        "classes": CLASSES, "likert": LIKERT_CHOICES,
    })


class AnswerForm(forms.Form):
    position = forms.IntegerField(min_value=1)
    answer = forms.ChoiceField(choices=[(c.code, c.label) for c in CLASSES],
                               error_messages={"required": "Choose one of the seven classes."})
    confidence = forms.TypedChoiceField(choices=LIKERT_CHOICES, coerce=int,
                                        error_messages={"required": "Choose how confident you are (1-5)."})
    shown = forms.CharField(required=False)


@login_required
@require_http_methods(["GET", "POST"])
def task_case(request, study_id: int, task: int):
    """GET: the next unanswered case of the task (or ``?position=N``); POST: save an answer and
    go on to the next case. A fetch with ``Accept: application/json`` gets JSON instead of a redirect."""
    assignment = _assignment(request, study_id)
    if task not in TASKS:
        raise Http404("no such task")
    wants_json = "application/json" in request.headers.get("Accept", "")
    error, status = "", 200
    if request.method == "POST":
        form = AnswerForm(request.POST)
        ratings = {key.removeprefix("relevance_"): value for key, value in request.POST.items()
                   if key.startswith("relevance_")}
        if form.is_valid():
            try:
                services.answer_submit(assignment=assignment, task=task, position=form.cleaned_data["position"],
                                       answer=form.cleaned_data["answer"], confidence=form.cleaned_data["confidence"],
                                       ratings=ratings or None, token=form.cleaned_data["shown"])
            except services.StudyError as exc:
                error, status = str(exc), exc.status_code
            else:
                assignment.refresh_from_db()
                next_url = reverse("readerstudy:task", args=[study_id, task])
                if wants_json:
                    progress = selectors.task_progress(assignment, task)
                    return JsonResponse({"saved": True, "next": next_url, "answered": progress.answered,
                                         "total": progress.total})
                return redirect(next_url)
        else:
            error, status = " ".join(m for errors in form.errors.values() for m in errors), 400
        if wants_json:
            return JsonResponse({"saved": False, "error": error}, status=status)
    progress = selectors.task_progress(assignment, task)
    if not progress.is_open:
        return render(request, "readerstudy/task_closed.html", {
            "study": assignment.study, "task": task, "progress": progress}, status=403 if not error else status)
    position = _requested_position(request, assignment, task, progress)
    if position is None:
        return render(request, "readerstudy/task_done.html", {
            "study": assignment.study, "task": task, "progress": progress,
            "task2": selectors.task_progress(assignment, TASK_WITH_NEIGHBOURS)})
    case = selectors.reader_case(assignment, task, position)
    if request.method == "POST":  # re-show what the reader chose, with the error
        case["answer"] = {"answer": request.POST.get("answer"), "confidence": _int_or_none(request.POST.get("confidence"))}
    neighbours = [{**n, "image_url": reverse("readerstudy:neighbour_image", args=[study_id, position, n["rank"]]),
                   "rating": case["ratings"].get(str(n["rank"]))} for n in case["neighbours"]]
    return render(request, "readerstudy/task_case.html", {
        "study": assignment.study, "task": task, "case": case, "progress": progress, "position": position,
        "error": error, "image_url": reverse("readerstudy:case_image", args=[study_id, task, position]),
        "neighbours": neighbours, "classes": [(c, CLASS_KEYS[c.code]) for c in CLASSES], "help_classes": CLASSES,
        "likert": LIKERT_CHOICES, "relevance": RELEVANCE_CHOICES,
        "shown": services.shown_token(assignment, task, position),
        "final": case["answer"] is not None and request.method == "GET" and not assignment.study.allow_changes,
    }, status=status)


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _requested_position(request, assignment: Assignment, task: int, progress) -> int | None:
    """``?position=N`` may revisit an answered case (to see it, or change it where allowed) but not
    skip ahead; without it, the next unanswered case."""
    raw = request.GET.get("position") or request.POST.get("position")
    if raw is None:
        return progress.next_position
    position = _int_or_none(raw)
    if position is None or not 1 <= position <= progress.total:
        if request.method == "POST":  # a refused answer: show the case the reader is on
            return progress.next_position
        raise Http404("no such case")
    if progress.next_position is not None and position > progress.next_position:
        return progress.next_position
    return position


def _private(data: bytes, content_type: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Cache-Control"] = "private, no-store"
    return response


def _reader_image(request, study_id: int, image, **where) -> HttpResponse:
    """The JPEG that the selector ``image`` makes for the reader of the case ``where`` names
    (``selectors.study_image``: re-encoded, rotated in Task 2); 404 or 403 when it refuses.
    The API hands out these URLs too."""
    assignment = _assignment(request, study_id)
    with _refused_as_404_or_403():
        data = image(assignment=assignment, **where)
    return _private(data, "image/jpeg")


@login_required
@require_GET
def case_image(request, study_id: int, task: int, position: int):
    return _reader_image(request, study_id, selectors.reader_case_image, task=task, position=position)


@login_required
@require_GET
def neighbour_image(request, study_id: int, position: int, rank: int):
    return _reader_image(request, study_id, selectors.reader_neighbour_image, position=position, rank=rank)


@login_required
@require_POST
def case_views(request, study_id: int, position: int):
    """The neighbour enlargements the Task 2 page reports for one case (``study.js``: a fetch, or a
    beacon when the page is hidden). Form-encoded, so that a beacon can carry the CSRF token:
    ``shown`` (the case's token) and ``views`` (a JSON list, see ``services.neighbour_views_record``).
    Answers JSON: what was stored, or the refusal."""
    assignment = _assignment(request, study_id)
    try:
        views = json.loads(request.POST.get("views", ""))
    except (ValueError, RecursionError):
        return JsonResponse({"error": "`views` must be a JSON list of enlargements.", "code": "invalid"}, status=400)
    try:
        recorded = services.neighbour_views_record(assignment=assignment, task=TASK_WITH_NEIGHBOURS, position=position,
                                                   views=views, token=request.POST.get("shown", ""))
    except services.StudyError as exc:
        return JsonResponse({"error": str(exc), "code": exc.code}, status=exc.status_code)
    return JsonResponse({"stored": recorded.stored, "repeated": recorded.repeated, "total": recorded.total})


@login_required
@require_GET
def my_results(request, study_id: int):
    assignment = _assignment(request, study_id)
    try:
        rows = selectors.reader_results(assignment)
    except services.StudyError as exc:
        raise PermissionDenied(str(exc)) from None
    return render(request, "readerstudy/my_results.html", {"study": assignment.study, "rows": rows})


# --- Administration ---------------------------------------------------------------------------

class StudyForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    design = forms.ChoiceField(choices=[(d.value, d.label) for d in NEW_STUDY_DESIGNS], initial=Design.CROSSED,
                               widget=forms.RadioSelect, label="Design", required=False,
                               help_text="Fully crossed unless you choose otherwise.")
    cases_per_reader = forms.IntegerField(min_value=1, max_value=MAX_SETTING, initial=100)
    neighbours_shown = forms.IntegerField(min_value=1, max_value=20, initial=6)
    washout_hours = forms.FloatField(min_value=0, max_value=MAX_WASHOUT_SECONDS / 3600, initial=24,
                                     label="Washout (hours)")
    task2_rotation = forms.TypedChoiceField(choices=ROTATION_CHOICES, coerce=int, initial=180,
                                            label="Task 2 rotation")
    allow_changes = forms.BooleanField(required=False, label="Readers may change an answer", label_suffix="")
    relevance_ratings = forms.BooleanField(required=False, label="Readers rate each neighbour's relevance (nDCG)",
                                           label_suffix="")
    reveal_results = forms.BooleanField(required=False, label="Show readers their results once the study is closed",
                                        label_suffix="")
    seed = forms.IntegerField(min_value=0, max_value=MAX_SETTING, initial=0)


@study_admin_required
@require_http_methods(["GET", "POST"])
def manage_list(request):
    form = StudyForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                study = services.study_create(
                    user=request.user, name=data["name"], description=data["description"],
                    cases_per_reader=data["cases_per_reader"], neighbours_shown=data["neighbours_shown"],
                    washout=timedelta(hours=data["washout_hours"]), task2_rotation=data["task2_rotation"],
                    allow_changes=data["allow_changes"], relevance_ratings=data["relevance_ratings"],
                    reveal_results=data["reveal_results"], seed=data["seed"], design=data["design"] or Design.CROSSED)
            except services.StudyError as exc:
                form.add_error(None, str(exc))
                status = exc.status_code
            else:
                messages.success(request, f"Study {study.name!r} created; the worker is computing its query set.")
                return redirect("readerstudy:manage", study_id=study.id)
        else:
            status = 400
    return render(request, "readerstudy/manage_list.html", {"studies": selectors.study_list(), "form": form},
                  status=status)


@study_admin_required
@require_GET
def manage_study(request, study_id: int):
    # Reading a study still being prepared re-sends a preparation whose message or worker was lost.
    study = services.study_refresh(study=_study(study_id))
    candidates = selectors.study_reader_candidates(study=study)
    report = error = None
    if selectors.study_has_answers(study=study):
        try:
            report = selectors.study_report(study).report
        except services.StudyError as exc:
            error = str(exc)
    planning = PlanningForm(request.GET or None)
    return render(request, "readerstudy/manage_study.html", {
        "study": study, "progress": selectors.study_progress(study), "candidates": candidates,
        "report": report, "report_error": error, "readers_rows": _table_rows(report) if report else [],
        "formats": _formats(), "mrmc": _mrmc_rows(study, report) if report else [],
        "planning_form": planning, "planning": _planning(report, planning) if report else None,
    })


class PlanningForm(forms.Form):
    """The difference a next study should detect and the power it should have (dashboard)."""

    effect = forms.FloatField(min_value=0.001, max_value=1, required=False, label="Difference to detect",
                              help_text="e.g. 0.05 = 5 percentage points of accuracy; empty: the one observed here")
    power = forms.FloatField(min_value=0.5, max_value=0.99, required=False, initial=0.8, label="Power",
                             help_text="chance of showing the difference if it is real (0.8 usual)")


def _mrmc_rows(study: Study, report: dict) -> list[dict]:
    """One dashboard row per MRMC endpoint: Task 1, Task 2, Task 2 - Task 1 with its CI and p (or why not)."""
    from readerstudy.analysis.endpoints import ENDPOINTS
    from readerstudy.analysis.writers import helped

    rows = []
    for endpoint, spec in ENDPOINTS.items():
        result = report["mrmc"][endpoint]
        row = {"endpoint": endpoint, "label": spec["label"], "refused": result.get("refused")}
        if not row["refused"]:
            row.update(task1=result["treatments"]["task1"]["fom"], task2=result["treatments"]["task2"]["fom"],
                       difference=helped(result), analysis=result["treatments_analysis"],
                       figures=[name for name in (f"mrmc_roc_{endpoint}.png", f"mrmc_forest_{endpoint}.png")
                                if name in FIGURES and (result["figure_of_merit"] == "auc" or "forest" in name)])
        rows.append(row)
    return rows


def _planning(report: dict, form: PlanningForm) -> dict | None:
    """The sample-size table of the primary endpoint for the form's difference and power."""
    from readerstudy.analysis.endpoints import PRIMARY, planned_sample_size

    result = report["mrmc"][PRIMARY]
    if "refused" in result:
        return None
    effect = power = None
    if form.is_bound and form.is_valid():
        effect, power = form.cleaned_data["effect"], form.cleaned_data["power"]
    return planned_sample_size(result, effect=effect, target_power=power or 0.8)


#: The report's figures the dashboard shows (the names of the export's PNG files).
FIGURES = {f"mrmc_{kind}_{endpoint}.png" for kind in ("roc", "forest")
           for endpoint in ("accuracy", "auc_melanoma", "auc_malignant")}


@study_admin_required
@require_GET
def manage_figure(request, study_id: int, name: str):
    """One PNG figure of the study's report (the same bytes as in the export), for the dashboard."""
    from readerstudy.analysis.writers import mrmc_figures

    study = _study(study_id)
    if name not in FIGURES:
        raise Http404("no such figure")
    try:
        data = selectors.study_report(study)
    except services.StudyError as exc:
        raise Http404(str(exc)) from None
    figures = mrmc_figures(data.report, data.reads, only=name)
    if name not in figures:
        raise Http404("this figure is not available: the endpoint was not analysed")
    return _private(figures[name], "image/png")


def _formats():
    from readerstudy.analysis.writers import FORMATS

    return FORMATS


def _table_rows(report: dict) -> list[dict]:
    """Table 4.II rows for the dashboard (percentages and confidences as shown in the thesis)."""
    return [{"reader": r["reader"], "n": r["n_cases"], "vote": r["majority_vote_accuracy"],
             "t1": r["task1"], "t2": r["task2"]} for r in report["readers"]]


@study_admin_required
@require_POST
def manage_action(request, study_id: int, action: str):
    study = _study(study_id)
    try:
        if action == "open":
            services.study_open(study=study, user=request.user)
            messages.success(request, "The study is open: assigned readers can start Task 1.")
        elif action == "close":
            services.study_close(study=study, user=request.user)
            messages.success(request, "The study is closed; no more answers are accepted.")
        elif action == "assign":
            users = selectors.users_by_id(ids=request.POST.getlist("readers"))
            if not users:
                raise services.StudyError("Choose at least one reader to assign.")
            created = services.study_assign(study=study, readers=users, user=request.user)
            messages.success(request, f"{len(created)} reader(s) assigned.")
        elif action == "unassign":
            user = get_object_or_404(get_user_model(), username=request.POST.get("reader", ""))
            services.study_unassign(study=study, reader=user, user=request.user)
            messages.success(request, f"{user.username} removed from the study.")
        else:
            raise Http404("no such action")
    except services.StudyError as exc:
        messages.error(request, str(exc))
    return redirect("readerstudy:manage", study_id=study.id)


@study_admin_required
@require_GET
def manage_export(request, study_id: int):
    """The whole report in one zip (CSV, JSON, Markdown, XLSX, PNGs, MRMC long format)."""
    from readerstudy.analysis.writers import FORMATS

    study = _study(study_id)
    formats = request.GET.getlist("format") or list(FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        return HttpResponse("Unknown format(s): " + ", ".join(unknown) + ". Choose from " + ", ".join(FORMATS) + ".",
                            status=400, content_type="text/plain")
    try:
        filename, data = services.study_export(study=study, user=request.user, formats=formats)
    except services.StudyError as exc:
        return HttpResponse(str(exc), status=exc.status_code, content_type="text/plain")
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
