"""Reader-study API views: validate input, call one service or selector, serialize. No business logic.

Readers reach only their own assignment in an open or closed study (anything else is 404) and
address cases only by their position in their own order; the bodies come from the reader
selectors, which hold no ground truth. Study administrators (and staff) manage every study.
Answers are not throttled (a reader gives hundreds); only query creation is.
"""
from __future__ import annotations

from datetime import timedelta

from django.http import HttpResponse
from django.urls import reverse as django_reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from readerstudy import selectors, services
from readerstudy.api import serializers as s
from readerstudy.api.permissions import IsReader, IsStudyAdmin
from readerstudy.models import TASKS, Assignment, Study
from retrieval.api.downloads import FileDownloadMixin
from retrieval.api.exceptions import ErrorSerializer, found_or_404

_ERROR_TEXT = {
    400: "invalid input (`fields` names the field, where there is one)",
    401: "not signed in: send `Authorization: Token <key>` or a session cookie",
    403: "signed in, but the user's role does not allow this",
    404: "no such study, or not one of the user's",
    409: "the study's state does not allow this",
}
_TASK_CLOSED = ("not a reader, or the task is not open now: code `washout` (Task 2 before the washout has "
                "passed; the message says when it opens), `task2_not_open` (Task 1 unfinished) or "
                "`study_not_open` (a closed study)")


def errors(*codes: int, **texts: str) -> dict[int, OpenApiResponse]:
    """Schema entries for error responses, all with the one error body (``texts``: e.g. e403="...")."""
    return {code: OpenApiResponse(ErrorSerializer, description=texts.get(f"e{code}", _ERROR_TEXT[code]))
            for code in (401, 403, *codes)}


class StudyRefused(exceptions.APIException):
    """A ``services.StudyError``, answered with its own status and code (e.g. 403 washout, 409 answer_final)."""

    def __init__(self, error: services.StudyError):
        self.status_code = error.status_code
        super().__init__(detail=str(error), code=error.code)


class _StudyView(APIView):
    def handle_exception(self, exc):
        if isinstance(exc, services.StudyError):
            exc = StudyRefused(exc)
        return super().handle_exception(exc)


# --- Reader side ---------------------------------------------------------------------------
class _ReaderView(_StudyView):
    permission_classes = [IsAuthenticated, IsReader]

    def _assignment(self, study_id: int) -> Assignment:
        return found_or_404(lambda: selectors.reader_assignment(user=self.request.user, study_id=study_id),
                            Assignment.DoesNotExist, f"You have no study with id {study_id}.")

    def _open_task(self, study_id: int, task: int) -> tuple[Assignment, selectors.TaskProgress]:
        """Your assignment in the study and the task's progress: 404 when the study is not yours,
        StudyError (403 washout etc., 404 no such task) unless the task is open now."""
        assignment = self._assignment(study_id)
        selectors.check_task_open(assignment, task)
        return assignment, selectors.task_progress(assignment, task)

    def _case(self, assignment: Assignment, task: int, position: int) -> dict:
        case = selectors.reader_case(assignment, task, position)
        url = self.request.build_absolute_uri
        study_id = assignment.study_id
        return {
            **case,
            "image": url(django_reverse("readerstudy:case_image", args=[study_id, task, position])),
            "shown": services.shown_token(assignment, task, position),
            "neighbours": [
                {**n, "image": url(django_reverse("readerstudy:neighbour_image", args=[study_id, position, n["rank"]]))}
                for n in case["neighbours"]],
        }

    def _study_url(self, study_id: int) -> str:
        return reverse("study-detail", kwargs={"study_id": study_id}, request=self.request)


class StudyListView(_ReaderView):
    @extend_schema(operation_id="studies_list", summary="Your reader studies with your progress in each task",
                   description="Open and closed studies you are assigned to (drafts are not shown).",
                   responses={200: s.ReaderStudySummarySerializer(many=True), **errors()})
    def get(self, request):
        rows = [{"study": a.study, "url": self._study_url(a.study_id),
                 "tasks": [selectors.task_progress(a, task) for task in TASKS]}
                for a in selectors.reader_assignments(user=request.user)]
        return Response(s.ReaderStudySummarySerializer(rows, many=True).data)


class StudyDetailView(_ReaderView):
    @extend_schema(operation_id="studies_retrieve", summary="A study of yours: its protocol and your progress",
                   responses={200: s.ReaderStudySerializer, **errors(404)})
    def get(self, request, study_id: int):
        assignment = self._assignment(study_id)
        body = {"study": assignment.study, "tasks": [selectors.task_progress(assignment, task) for task in TASKS]}
        return Response(s.ReaderStudySerializer(body).data)


class TaskNextView(_ReaderView):
    @extend_schema(
        operation_id="studies_task_next", summary="The next unanswered case of a task",
        description="The first case of the task you have not answered, with a fresh `shown` token; "
                    "`done: true` and `case: null` once every case is answered.",
        responses={200: s.NextCaseSerializer, **errors(404, e403=_TASK_CLOSED)},
    )
    def get(self, request, study_id: int, task: int):
        assignment, progress = self._open_task(study_id, task)
        case = None if progress.next_position is None else self._case(assignment, task, progress.next_position)
        body = {"done": case is None, "progress": progress, "case": case}
        return Response(s.NextCaseSerializer(body).data)


class TaskCaseView(_ReaderView):
    @extend_schema(
        operation_id="studies_case_retrieve", summary="One case of a task, by its position in your order",
        description="Answered cases may be revisited; a case after your next unanswered one is 403 "
                    "(`not_reached`). Each call returns a fresh `shown` token.",
        responses={200: s.ReaderCaseSerializer,
                   **errors(404, e403=_TASK_CLOSED + ", or `not_reached`: a case after the next unanswered one")},
    )
    def get(self, request, study_id: int, task: int, position: int):
        assignment, _ = self._open_task(study_id, task)
        selectors.check_reachable(assignment, task, position)  # 404 no such case, 403 not_reached
        return Response(s.ReaderCaseSerializer(self._case(assignment, task, position)).data)


class AnswerCreateView(_ReaderView):
    @extend_schema(
        operation_id="studies_answer_create", summary="Answer a case: diagnosis and confidence",
        description="201 when stored; 200 with the stored answer when the same answer was stored already "
                    "(a double submit or a retry stores one answer). A different answer to an answered case "
                    "is 409 `answer_final` unless the study allows changes (then 200 with the changed answer).",
        request=s.AnswerInputSerializer,
        responses={201: s.AnswerSerializer,
                   200: OpenApiResponse(s.AnswerSerializer, description="the same answer was stored already, "
                                                                        "or a permitted change"),
                   **errors(400, 404, 409, e403=_TASK_CLOSED + ", or `not_reached`: a case after the next "
                                                               "unanswered one",
                            e409="`answer_final`: the case is answered already and answers are final")},
    )
    def post(self, request, study_id: int, task: int):
        assignment, progress = self._open_task(study_id, task)
        data = s.AnswerInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answer = data.validated_data
        if answer["position"] > progress.total:
            raise ValidationError({"position": [f"Task {task} has {progress.total} cases."]})
        stored, created = services.answer_submit(
            assignment=assignment, task=task, position=answer["position"], answer=answer["answer"],
            confidence=answer["confidence"], ratings=answer.get("ratings"), token=answer["shown"])
        body = {"task": task, "position": answer["position"], "answer": stored.answer,
                "confidence": stored.confidence, "seconds": stored.seconds,
                "progress": selectors.task_progress(assignment, task)}
        return Response(s.AnswerSerializer(body).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class CaseViewsCreateView(_ReaderView):
    @extend_schema(
        operation_id="studies_case_views_create", summary="Report which neighbours you enlarged (Task 2)",
        description="What you looked at in a Task 2 case: each enlargement of a similar case, by its rank, with "
                    "the seconds from the case being shown to the enlargement and how long it stayed open. "
                    "Send the case's `shown` token with them. 201 when something new was stored; 200 when every "
                    "enlargement was stored already (by `id`: a batch sent again stores nothing twice) or the list "
                    "was empty. A malformed batch is refused as a whole (400, nothing stored). Enlargements of "
                    "an answered case are accepted.",
        request=s.NeighbourViewsInputSerializer,
        responses={201: s.NeighbourViewsResultSerializer,
                   200: OpenApiResponse(s.NeighbourViewsResultSerializer,
                                        description="nothing new: every enlargement was stored already"),
                   **errors(400, 404, 409, e403=_TASK_CLOSED + ", or `not_reached`: a case after the next "
                                                               "unanswered one",
                            e404="no such study of yours, no such case, or Task 1 (it shows no similar cases)",
                            e409="`view_conflict`: an `id` stored already with other values, or `view_limit`: "
                                 "too many enlargements stored for the case")},
    )
    def post(self, request, study_id: int, task: int, position: int):
        assignment, _ = self._open_task(study_id, task)
        data = s.NeighbourViewsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        recorded = services.neighbour_views_record(
            assignment=assignment, task=task, position=position, token=data.validated_data["shown"],
            views=[dict(view) for view in data.validated_data["views"]])
        body = {"stored": recorded.stored, "repeated": recorded.repeated, "total": recorded.total}
        return Response(s.NeighbourViewsResultSerializer(body).data,
                        status=status.HTTP_201_CREATED if recorded.stored else status.HTTP_200_OK)


# --- Study administration -------------------------------------------------------------------
class _ManageView(_StudyView):
    permission_classes = [IsAuthenticated, IsStudyAdmin]

    def _study(self, study_id: int) -> Study:
        return found_or_404(lambda: selectors.study_get(study_id=study_id), Study.DoesNotExist,
                            f"There is no study with id {study_id}.")

    def _url(self, study_id: int) -> str:
        return reverse("managed-study-detail", kwargs={"study_id": study_id}, request=self.request)

    def _detail(self, study: Study) -> dict:
        return s.ManagedStudySerializer({**selectors.study_detail(study=study), "url": self._url(study.id)}).data

    def _moved(self, move, study_id: int) -> Response:
        """Open or close the study (``move``: the service) and answer with the study as it is now."""
        study = self._study(study_id)
        move(study=study, user=self.request.user)
        return Response(self._detail(study))


class ManagedStudyListView(_ManageView):
    @extend_schema(operation_id="studies_manage_list", summary="Every study, with its status and counts",
                   responses={200: s.ManagedStudySummarySerializer(many=True), **errors()})
    def get(self, request):
        rows = [{"study": study, "url": self._url(study.id)} for study in selectors.study_list()]
        return Response(s.ManagedStudySummarySerializer(rows, many=True).data)

    @extend_schema(
        operation_id="studies_manage_create", summary="Create a study (its query set is then prepared)",
        description="Freezes the study on a finished index and queues the preparation of its query set; "
                    "answers at once with 202. The study is a `draft` once prepared (follow it at its `url`).",
        request=s.StudyCreateInputSerializer,
        responses={202: s.ManagedStudySerializer,
                   **errors(400, 409, e409="`exists`: the name is taken, or `no_index`: no finished index")},
    )
    def post(self, request):
        data = s.StudyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        if "washout_seconds" in options:
            options["washout"] = timedelta(seconds=options.pop("washout_seconds"))
        study = services.study_create(user=request.user, **options)
        url = self._url(study.id)
        return Response(self._detail(study), status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class ManagedStudyDetailView(_ManageView):
    @extend_schema(operation_id="studies_manage_retrieve", summary="A study's settings, preparation and readers",
                   responses={200: s.ManagedStudySerializer, **errors(404)})
    def get(self, request, study_id: int):
        # Reading a study still being prepared re-sends a preparation whose message or worker was lost.
        study = services.study_refresh(study=self._study(study_id))
        return Response(self._detail(study))


class ManagedStudyOpenView(_ManageView):
    @extend_schema(operation_id="studies_manage_open", summary="Open a prepared draft study to its readers",
                   request=None, responses={200: s.ManagedStudySerializer,
                                            **errors(404, 409, e409="`wrong_status`: not a prepared draft")})
    def post(self, request, study_id: int):
        return self._moved(services.study_open, study_id)


class ManagedStudyCloseView(_ManageView):
    @extend_schema(operation_id="studies_manage_close", summary="Close an open study (final: no more answers)",
                   request=None, responses={200: s.ManagedStudySerializer,
                                            **errors(404, 409, e409="`wrong_status`: the study is not open")})
    def post(self, request, study_id: int):
        return self._moved(services.study_close, study_id)


class ManagedStudyAssignView(_ManageView):
    @extend_schema(
        operation_id="studies_manage_assign", summary="Assign readers (each gets a seeded sample in two orders)",
        description="Readers already assigned keep their assignment. Every user must be in the reader group.",
        request=s.AssignInputSerializer,
        responses={200: s.AssignResultSerializer,
                   **errors(400, 404, 409, e409="`wrong_status`: readers join draft or open studies only")},
    )
    def post(self, request, study_id: int):
        data = s.AssignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        study = self._study(study_id)
        created = services.study_assign(study=study, readers=data.validated_data["readers"], user=request.user)
        body = {"assigned": sorted(a.reader.username for a in created), "readers": selectors.study_readers(study=study)}
        return Response(s.AssignResultSerializer(body).data)


class ManagedStudyProgressView(_ManageView):
    @extend_schema(operation_id="studies_manage_progress", summary="Each reader's progress in both tasks",
                   responses={200: s.StudyProgressSerializer, **errors(404)})
    def get(self, request, study_id: int):
        rows = selectors.study_progress(self._study(study_id))
        return Response(s.StudyProgressSerializer({"readers": rows}).data)


class ManagedStudyReportView(_ManageView):
    @extend_schema(
        operation_id="studies_manage_report", summary="The study's report (every figure, as JSON)",
        description="The report `readerstudy_report` computes (reader table, summary, answer changes, confusion "
                    "matrices, per-class figures, the MRMC analysis of Task 2 vs Task 1, per-reader statistics, "
                    "relevance, what readers looked at); the same as `report.json` of the export.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="the report"),
                   **errors(404, 409, e409="`no_answers`: nobody has answered yet")},
    )
    def get(self, request, study_id: int):
        return Response(services.study_report_access(study=self._study(study_id), user=request.user))


class ManagedStudyExportView(FileDownloadMixin, _ManageView):
    # ?format= names report files here, not a renderer, so DRF's format override must not see it;
    # errors are JSON, the archive is bytes whatever the Accept header says.
    @extend_schema(
        operation_id="studies_manage_export", summary="The report's files in one zip",
        description="JSON, Markdown, CSV tables (with `reads.csv`, a responses file), XLSX, PNG figures and "
                    "the MRMC long format; `?format=` (repeatable) picks some of them.",
        parameters=[OpenApiParameter(
            "format", OpenApiTypes.STR, many=True, required=False,
            description="json, md, csv, xlsx, png or mrmc; repeat for several (default: all)")],
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="a zip archive"),
                   **errors(400, 404, 409, e409="`no_answers`: nobody has answered yet")},
    )
    def get(self, request, study_id: int):
        from readerstudy.analysis.writers import FORMATS, check_formats

        study = self._study(study_id)
        try:
            formats = check_formats(request.query_params.getlist("format") or FORMATS)
        except ValueError as exc:
            raise ValidationError({"format": [str(exc)]}) from None
        filename, data = services.study_export(study=study, user=request.user, formats=formats)
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
