from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from retrieval import selectors
from retrieval.classes import CLASSES


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
    collections = selectors.collections_list()
    if not collections:
        return redirect("home")
    collection = request.GET.get("collection") or collections[0]
    if collection not in collections:
        raise Http404("no such collection")
    examples = selectors.case_examples(collection=collection)
    return render(request, "retrieval/library.html", {
        "collections": collections,
        "summary": selectors.library_summary(collection=collection),
        "examples": [(cls, examples[cls.code]) for cls in CLASSES],
        "check": selectors.library_check_latest(collection=collection),
    })
