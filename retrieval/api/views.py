"""API views: validate input, call one service or selector, serialize. No business logic here."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularRedocView
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from retrieval import selectors
from retrieval.api import serializers as s
from retrieval.api.downloads import FileDownloadMixin
from retrieval.api.exceptions import Conflict, ErrorSerializer, PayloadTooLarge, found_or_404
from retrieval.api.permissions import HasAnyRole, IsClinicianOrStaff, IsStaff, MayBrowseCases
from retrieval.models import Case, Query
from retrieval.services import WithdrawalError, case_restore, case_withdraw, polling
from retrieval.services.index import index_build_request
from retrieval.services.queries import query_delete, query_refresh, query_submit
from retrieval.services.reports import query_report_export
from retrieval.throttles import QuerySubmitThrottle  # shared with the search page

#: Room for the multipart envelope and the other form fields around the image.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024

_ERROR_TEXT = {
    400: "invalid input (the message says which)",
    401: "not signed in: send `Authorization: Token <key>` or a session cookie",
    403: "signed in, but the user's role does not allow this",
    404: "no such object, or it is not the user's",
    409: "the current state does not allow this",
    413: f"the upload is larger than {settings.QUERY_MAX_UPLOAD_MB} MB",
    415: "the body is not `multipart/form-data` (or a plain form)",
    429: "too many requests; see the Retry-After header",
    503: "no case index is ready to search yet",
}


def errors(*codes: int, **texts: str) -> dict[int, OpenApiResponse]:
    """Schema entries for error responses, all with the one error body (``texts``: e.g. e409="...")."""
    return {code: OpenApiResponse(ErrorSerializer, description=texts.get(f"e{code}", _ERROR_TEXT[code]))
            for code in (401, 403, *codes)}


#: A paginated list answers 404 for a `page` that is not one of its pages (DRF's "Invalid page.").
NO_SUCH_PAGE = {404: OpenApiResponse(ErrorSerializer, description="no such page: `page` is not a page of the list")}


class _QueryView(GenericAPIView):
    permission_classes = [IsAuthenticated, IsClinicianOrStaff]

    def get_queryset(self):
        return selectors.query_list(user=self.request.user)

    def _own_query(self, query_id: int) -> Query:
        return found_or_404(lambda: selectors.query_get(user=self.request.user, query_id=query_id),
                            Query.DoesNotExist, f"You have no query with id {query_id}.")


class QueryListCreateView(_QueryView):
    serializer_class = s.QuerySummarySerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_throttles(self):
        return [QuerySubmitThrottle()] if self.request.method == "POST" else super().get_throttles()

    @extend_schema(
        operation_id="queries_list", summary="Your queries, newest first",
        responses={200: s.QuerySummarySerializer(many=True), **errors(), **NO_SUCH_PAGE},
    )
    def get(self, request):
        page = polling.queries_refresh(queries=self.paginate_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="queries_create", summary="Submit a dermoscopic image",
        description="Stores the image and queues the search; answers at once with 202 and the query's URL. "
                    "Read the result there (`?wait=` long-polls).",
        request={"multipart/form-data": s.QueryCreateInputSerializer},
        responses={202: s.QueryCreatedSerializer, **errors(400, 409, 413, 415, 429, 503)},
    )
    def post(self, request):
        limit = settings.QUERY_MAX_UPLOAD_MB * 1024 * 1024
        # Refuse an oversize body from its header, before it is read and spooled to disk.
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + _MULTIPART_OVERHEAD_BYTES:
            raise PayloadTooLarge(f"The upload is larger than {settings.QUERY_MAX_UPLOAD_MB} MB.")
        data = s.QueryCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["image"]
        query = query_submit(user=request.user, image_data=upload.read(), filename=upload.name or "",
                             k=data.validated_data.get("k"), method=data.validated_data.get("method"),
                             search_filter=data.validated_data.get("filters"))
        url = reverse("query-detail", kwargs={"query_id": query.pk}, request=request)
        body = s.QueryCreatedSerializer({"id": query.pk, "status": query.status, "url": url}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class QueryDetailView(_QueryView):
    @extend_schema(
        operation_id="queries_retrieve", summary="A query's status and, once done, its similar cases",
        parameters=[s.QueryWaitInputSerializer],
        responses={200: s.QueryResultSerializer, **errors(400, 404)},
    )
    def get(self, request, query_id: int):
        params = s.QueryWaitInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = self._own_query(query_id)
        wait = params.validated_data["wait"]
        # Both notice a query whose worker or message was lost (and re-send or fail it).
        query = (polling.query_wait(query=query, timeout=wait, until=params.validated_data["until"]) if wait
                 else query_refresh(query=query))
        return Response(selectors.query_payload(query, url=request.build_absolute_uri))

    @extend_schema(operation_id="queries_destroy", summary="Delete a query with its image and overlays",
                   responses={204: None, **errors(404)})
    def delete(self, request, query_id: int):
        query_delete(query=self._own_query(query_id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueryReportView(FileDownloadMixin, _QueryView):
    # The report is PDF bytes whatever the Accept header says; errors are JSON (the one error body).
    @extend_schema(
        operation_id="queries_report", summary="A finished query's PDF report",
        description="The query image with its saliency overlay, the similar cases framed in their class colours "
                    "with diagnosis, similarity and metadata, the neighbour vote (not a diagnosis), the "
                    "out-of-distribution warning if any, the model and index versions, the dates and the "
                    "attribution of the library images shown. No patient identifiers. Each export is written "
                    "to the audit log.",
        responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="the PDF report"),
                   **errors(404, 409, e409="the report cannot be made now: code `not_ready` (the query is pending "
                                           "or running), `query_failed`, `image_missing` or `image_unreadable` "
                                           "(a stored image is gone or damaged)")},
    )
    def get(self, request, query_id: int):
        query = query_refresh(query=self._own_query(query_id))  # a lost query is re-sent or failed first
        filename, data = query_report_export(query=query, user=request.user)
        response = HttpResponse(data, content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class MethodListView(GenericAPIView):
    permission_classes = [IsAuthenticated]
    pagination_class = None  # one short list: the schema must not promise pages

    @extend_schema(operation_id="methods_list", summary="The similarity measures a query can use",
                   description="Every retrieval method with whether the index that serves queries now offers it; "
                               "pass its `name` as `method` when submitting a query.",
                   responses={200: s.MethodSerializer(many=True), **errors()})
    def get(self, request):
        return Response(s.MethodSerializer(selectors.retrieval_methods(), many=True).data)


class CaseListView(GenericAPIView):
    permission_classes = [IsAuthenticated, MayBrowseCases]
    serializer_class = s.CaseSerializer

    def get_queryset(self):
        params = s.CaseFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return selectors.case_list(**params.validated_data)

    @extend_schema(operation_id="cases_list", summary="The case library",
                   parameters=[s.CaseFilterSerializer],
                   responses={200: s.CaseSerializer(many=True), **errors(400), **NO_SUCH_PAGE})
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


def _case(case_id: int) -> Case:
    """The library case ``case_id``, or the API's 404."""
    return found_or_404(lambda: selectors.case_get(case_id=case_id), Case.DoesNotExist,
                        f"There is no case with id {case_id}.")


class CaseDetailView(GenericAPIView):
    permission_classes = [IsAuthenticated, MayBrowseCases]
    serializer_class = s.CaseSerializer

    @extend_schema(operation_id="cases_retrieve", summary="One library case",
                   responses={200: s.CaseSerializer, **errors(404)})
    def get(self, request, case_id: int):
        return Response(self.get_serializer(_case(case_id)).data)


class CaseWithdrawalView(APIView):
    """Withdraw a library case (POST, with the reason) or put it back (DELETE); staff only."""

    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(operation_id="cases_withdraw", summary="Withdraw a case from the library (staff only)",
                   description="From the next search on, no similarity method returns the case, on any search "
                               "backend, and later index builds leave it out. Past results that showed it say it "
                               "was withdrawn. Audited with the reason.",
                   request=s.CaseWithdrawSerializer, responses={200: s.CaseSerializer, **errors(400, 404, 409)})
    def post(self, request, case_id: int):
        case = _case(case_id)
        data = s.CaseWithdrawSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            case = case_withdraw(case=case, reason=data.validated_data["reason"], user=request.user)
        except WithdrawalError as exc:
            raise Conflict(str(exc)) from None
        return Response(s.CaseSerializer(case, context={"request": request}).data)

    @extend_schema(operation_id="cases_restore", summary="Put a withdrawn case back into the library (staff only)",
                   request=None, responses={200: s.CaseSerializer, **errors(404, 409)})
    def delete(self, request, case_id: int):
        try:
            case = case_restore(case=_case(case_id), user=request.user)
        except WithdrawalError as exc:
            raise Conflict(str(exc)) from None
        return Response(s.CaseSerializer(case, context={"request": request}).data)


class IndexStatusView(APIView):
    permission_classes = [IsAuthenticated, HasAnyRole]

    @extend_schema(operation_id="index_status", summary="The active index and the progress of builds",
                   parameters=[s.IndexStatusInputSerializer],
                   responses={200: s.IndexStatusSerializer, **errors(400)})
    def get(self, request):
        params = s.IndexStatusInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        collection = params.validated_data.get("collection")
        polling.index_builds_refresh(collection=collection)  # a lost build is re-sent before it is shown
        return Response(selectors.index_status(collection=collection))


class IndexRebuildView(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(
        operation_id="index_rebuild", summary="Start building a new index (staff only)",
        description="Queues a build; the new index becomes active for its collection once complete. "
                    "Follow its progress at the index status endpoint.",
        request=s.IndexRebuildInputSerializer,
        responses={202: s.IndexBuildSerializer, **errors(400, 409)},
    )
    def post(self, request):
        data = s.IndexRebuildInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            index = index_build_request(user=request.user, **data.validated_data)
        except ValueError as exc:  # the service's readable refusal, e.g. no trained 4-channel model
            raise Conflict(str(exc)) from exc
        body = s.IndexBuildSerializer(index, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)


class OfflineRedocView(SpectacularRedocView):
    """Redoc from the bundled sidecar files, without the web fonts drf-spectacular's template loads."""

    template_name = "api/redoc.html"

