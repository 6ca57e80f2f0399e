from __future__ import annotations

from functools import cached_property

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from lesionsearch.access import allowed_only
from retrieval import selectors
from retrieval.classes import BY_CODE, CLASSES, SEX_CHOICES
from retrieval.methods import DEFAULT_METHOD
from retrieval.models import Query
from retrieval.report import ReportUnavailable
from retrieval.services import polling
from retrieval.services import queries as query_services
from retrieval.services.reports import query_report_export
from retrieval.throttles import query_submit_wait

#: Image types the upload accepts (what retrieval.images reads); the browser's file picker
#: and the drop zone offer the same list.
UPLOAD_ACCEPT = (".jpg,.jpeg,.png,.tif,.tiff,.webp,.bmp,.dcm,image/jpeg,image/png,image/tiff,image/webp,image/bmp,"
                 "application/dicom")
HISTORY_PAGE_SIZE = 12
#: How long one library state's rendered class table and examples stay cached (the page's
#: ``{% cache %}`` fragments); a new state (a case added, changed, withdrawn or deleted) has a new
#: key, so this only bounds the memory of old ones.
LIBRARY_PAGE_CACHE_SECONDS = 3600
#: Seconds one API poll of the result page waits for the query to finish. The API answers at
#: once when it finishes, but only then: a short wait keeps the queued -> running step visible.
POLL_WAIT_SECONDS = 4
FINAL_STATUSES = (Query.Status.DONE, Query.Status.FAILED)
#: What the result page says for each status (query.js shows the same texts while polling).
STATUS_TEXTS = {
    Query.Status.PENDING: "Queued: waiting for a worker to start the search.",
    Query.Status.RUNNING: "Searching: computing the saliency map and comparing your image with the case library.",
    Query.Status.DONE: "Done.",
    Query.Status.FAILED: "The search failed.",
}
#: How the result page names a DICOM query's kept acquisition attributes (retrieval.dicom.KEPT), in this order.
ACQUISITION_LABELS = {
    "sop_class": "DICOM object", "modality": "Modality", "body_part_examined": "Body part examined",
    "anatomic_region": "Anatomic region", "primary_anatomic_structure": "Anatomic structure",
    "laterality": "Laterality", "image_laterality": "Image laterality",
    "light_source_polarization": "Light source", "contact_method": "Contact method",
    "immersion_media": "Immersion media", "optical_magnification_factor": "Optical magnification (x)",
    "emitter_color_temperature_k": "Light colour temperature (K)", "partial_view": "Partial view",
    "photometric_interpretation": "Photometric interpretation", "transfer_syntax": "Encoding",
    "rows": "Rows", "columns": "Columns", "bits_stored": "Bits per sample",
}
VOTE_NOTE = ("Neighbour vote — the share of the similar cases per class: how many of them have that class; "
             "equal counts are listed by rank. It is not a diagnosis.")


#: Signed-in clinicians and staff only; anyone else signed in gets 403.
clinician_required = allowed_only(selectors.user_may_query, "Searching the case library is for clinicians.")


@login_required
@require_GET
def home(request):
    collections = selectors.collections_list()
    if collections:
        return redirect("library")
    return render(request, "retrieval/home.html", {"classes": CLASSES})


@login_required
@require_GET
def library(request):
    state = selectors.library_state()
    collections = cache.get_or_set(f"library-collections:{state}", selectors.collections_list, LIBRARY_PAGE_CACHE_SECONDS)
    if not collections:
        return redirect("home")
    collection = request.GET.get("collection") or collections[0]
    if collection not in collections:
        raise Http404("no such collection")
    return render(request, "retrieval/library.html", {
        "collections": collections, "collection": collection, "state": state,
        "cache_seconds": LIBRARY_PAGE_CACHE_SECONDS, "page": _LibraryContent(collection),
        "check": selectors.library_check_latest(collection=collection),
    })


class _LibraryContent:
    """The library page's class table and example images, read only when the template's
    fragment cache (``{% cache %}``, keyed by the library state and collection) misses: they are
    most of the page's work, and they change only when a case does."""

    def __init__(self, collection: str) -> None:
        self.collection = collection

    @cached_property
    def summary(self) -> dict:
        return selectors.library_summary(collection=self.collection)

    @cached_property
    def examples(self) -> list:
        examples = selectors.case_examples(collection=self.collection)
        return [(cls, examples[cls.code]) for cls in CLASSES]


ONE_IMAGE = "Upload one image at a time: the form held several files."


class QueryUploadForm(forms.Form):
    """Parses the no-JS upload; the image itself is validated by ``services.query_submit``."""

    image = forms.FileField(error_messages={"required": "Choose a dermoscopic image to upload."})
    k = forms.IntegerField(required=False, error_messages={
        "invalid": f"The number of similar cases must be a whole number from 1 to {settings.QUERY_MAX_K}.",
    })
    method = forms.CharField(required=False, max_length=16)
    # The optional neighbour filter (the API's ``filters``); none is the thesis's result view.
    sites = forms.MultipleChoiceField(required=False, error_messages={
        "invalid_choice": "The body site %(value)s is not in the case library."})
    sexes = forms.MultipleChoiceField(required=False, choices=SEX_CHOICES)
    age_min = forms.IntegerField(required=False, min_value=0, max_value=130, error_messages={
        "invalid": "The lowest age must be a whole number of years."})
    age_max = forms.IntegerField(required=False, min_value=0, max_value=130, error_messages={
        "invalid": "The highest age must be a whole number of years."})
    datasets = forms.MultipleChoiceField(required=False, error_messages={
        "invalid_choice": "The source dataset %(value)s is not in the case library."})

    def __init__(self, *args, choices: dict[str, list[str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sites"].choices = [(site, site) for site in choices["sites"]]
        self.fields["datasets"].choices = [(name, name) for name in choices["datasets"]]

    def clean_image(self):
        if len(self.files.getlist("image")) > 1:  # which one was meant is a guess: refuse rather than pick
            raise forms.ValidationError(ONE_IMAGE)
        return self.cleaned_data["image"]

    def clean(self):
        data = super().clean()
        low, high = data.get("age_min"), data.get("age_max")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError(f"The lowest age ({low}) is above the highest ({high}).")
        # The same shape as the API's ``filters`` (retrieval.ml.search.SearchFilter), set fields only.
        data["filters"] = {key: data[key] for key in ("sites", "sexes", "age_min", "age_max", "datasets")
                           if data.get(key) not in (None, [], "")}
        return data


@clinician_required
@require_http_methods(["GET", "POST"])
def search(request):
    """Upload form (a plain form POST works without JavaScript) and the user's query history."""
    error, status, retry_after = "", 200, None
    filter_choices = selectors.search_filter_choices()
    if request.method == "POST":
        # The same per-user limit as the API's (one count for both), checked before the upload is read.
        retry_after = query_submit_wait(request)
        form = None if retry_after else QueryUploadForm(request.POST, request.FILES, choices=filter_choices)
        if form is None:
            error, status = (f"You have submitted too many searches in a short time. Please wait {retry_after} "
                             f"second{'s' if retry_after != 1 else ''} and try again."), 429
        elif form.is_valid():
            upload = form.cleaned_data["image"]
            # One byte past the limit is enough for the service to refuse an oversize file,
            # without holding all of it in memory.
            limit = settings.QUERY_MAX_UPLOAD_MB * 1024 * 1024
            try:
                query = query_services.query_submit(user=request.user, image_data=upload.read(limit + 1),
                                                    filename=upload.name, k=form.cleaned_data["k"],
                                                    method=form.cleaned_data["method"] or None,
                                                    search_filter=form.cleaned_data["filters"])
            except query_services.QueryRejected as exc:
                error, status = str(exc), exc.status_code
            else:
                return redirect("query_detail", pk=query.pk)
        else:
            error, status = " ".join(msg for errors in form.errors.values() for msg in errors), 400
    page = Paginator(selectors.query_list(user=request.user), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    polling.index_builds_refresh()  # a lost build is re-sent before its status is shown
    response = render(request, "retrieval/search.html", {
        "error": error,
        "k_value": request.POST.get("k") or settings.QUERY_DEFAULT_K,
        "methods": selectors.retrieval_methods(),
        "method_value": request.POST.get("method") or DEFAULT_METHOD,
        "filter_choices": {"sites": filter_choices["sites"], "sexes": SEX_CHOICES,
                           "datasets": filter_choices["datasets"]},
        "filter_values": {key: request.POST.getlist(key) for key in ("sites", "sexes", "datasets")},
        "age_min_value": request.POST.get("age_min", ""),
        "age_max_value": request.POST.get("age_max", ""),
        "filter_open": any(request.POST.get(key) for key in ("sites", "sexes", "datasets", "age_min", "age_max")),
        "page": page,
        "history": [_history_row(query) for query in polling.queries_refresh(queries=page.object_list)],
        "index": selectors.index_status(),
        "accept": UPLOAD_ACCEPT,
        "max_upload_mb": settings.QUERY_MAX_UPLOAD_MB,
        "max_k": settings.QUERY_MAX_K,
        "api_queries_url": reverse("v1:query-list"),
    }, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@login_required
@require_GET
def methods(request):
    """What each similarity measure compares, where it comes from, and whether it is offered now."""
    return render(request, "retrieval/methods.html", {"methods": selectors.retrieval_methods()})


@clinician_required
@require_GET
def query_detail(request, pk: int):
    """The result page. A finished query renders completely on the server; a running one is
    shown with its status, and query.js polls the API and renders the result when it is done."""
    query = _own_query(request, pk)
    payload = selectors.query_payload(query)
    neighbours = [{**n, "cls": BY_CODE[n["diagnosis"]]} for n in payload["neighbours"]]
    return render(request, "retrieval/query_detail.html", {
        "query": query,
        "payload": payload,
        "neighbours": neighbours,
        "vote": selectors.neighbour_vote_rows(payload["neighbour_vote"]),
        "vote_note": VOTE_NOTE,
        "filter_text": selectors.search_filter_text(payload["filters"]),
        "acquisition": _acquisition_rows(payload["acquisition"]),
        "status_text": STATUS_TEXTS[query.status],
        "status_texts": {str(status): text for status, text in STATUS_TEXTS.items()},
        "classes": CLASSES,
        "classes_json": {c.code: {"label": c.label, "colour": c.colour, "badge_text": c.badge_text} for c in CLASSES},
        "final": query.status in FINAL_STATUSES,
        "settled": selectors.evidence_settled(query),  # nothing more to come: no-JS pages stop reloading
        "api_url": reverse("v1:query-detail", kwargs={"query_id": query.pk}),
        "report_url": reverse("query_report", kwargs={"pk": query.pk}),
        "poll_wait": POLL_WAIT_SECONDS,
    })


@clinician_required
@require_GET
def query_report(request, pk: int):
    """The PDF report of a finished query (the same file as the API's); 409 with the reason while
    it cannot be made (not done, failed, an image missing)."""
    query = _own_query(request, pk)
    try:
        filename, data = query_report_export(query=query, user=request.user)
    except ReportUnavailable as exc:
        return HttpResponse(str(exc), status=exc.status_code, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@clinician_required
@require_http_methods(["GET", "POST"])
def query_delete(request, pk: int):
    """GET asks for confirmation (the page without JavaScript); POST deletes."""
    query = _own_query(request, pk)
    if request.method == "POST":
        label = f"Query #{query.pk}" + (f" ({query.original_name})" if query.original_name else "")
        query_services.query_delete(query=query, user=request.user)
        messages.success(request, f"{label} was deleted with its image and results.")
        return redirect("search")
    return render(request, "retrieval/query_confirm_delete.html", {"query": query})


def _own_query(request, pk: int) -> Query:
    """The signed-in user's query (404 for anyone else's), refreshed when not final."""
    try:
        query = selectors.query_get(user=request.user, query_id=pk)
    except Query.DoesNotExist:
        raise Http404("no such query") from None
    return query_services.query_refresh(query=query)


def _history_row(query: Query) -> dict:
    vote = query.neighbour_vote if query.status == Query.Status.DONE else None
    top = selectors.neighbour_vote_rows(vote)[:1]
    return {"query": query, "top": top[0] if top else None}


def _acquisition_rows(acquisition: dict) -> list[tuple[str, str]]:
    def shown(value) -> str:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return [(label, shown(acquisition[key])) for key, label in ACQUISITION_LABELS.items() if key in acquisition]
