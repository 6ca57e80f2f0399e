from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from retrieval import selectors
from retrieval.models import IndexVersion


class Command(BaseCommand):
    help = (
        "Build the retrieval index of a collection with a 4-channel model: queue the build for the worker "
        "(inference queue), optionally follow its progress. The active index keeps serving queries until the "
        "new one is complete. --incremental encodes only cases the active index of the same model lacks."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model-version", type=int, help="4-channel ModelVersion id (default: the newest)")
        parser.add_argument("--collection", help="case collection (default: the model's, or the only one)")
        parser.add_argument("--incremental", action="store_true", help="add new cases to the active index")
        parser.add_argument("--wait", action="store_true", help="follow the build's progress until it ends")
        parser.add_argument("--here", action="store_true",
                            help="run the build in this process instead of a worker (setup scripts, no worker)")
        parser.add_argument("--secbir-only", action="store_true",
                            help="store only the SE-CBIR vectors (no other similarity measures; a faster build)")
        parser.add_argument("--contrastive-model", type=int, metavar="V",
                            help="contrastive ModelVersion to index (default: the collection's newest, if any)")
        parser.add_argument("--triplet-model", type=int, metavar="V",
                            help="triplet ModelVersion to index (default: the collection's newest, if any)")
        parser.add_argument("--segmentation-model", type=int, metavar="V",
                            help="learned segmentation ModelVersion whose lesion masks the Dice methods compare "
                                 "(default: the classical segmentation; segment_library train makes one)")
        parser.add_argument("--library-saliency", choices=["truth", "predicted"], default="truth",
                            help="the library images' saliency maps explain their ground-truth class (default, the "
                                 "thesis) or the 3-channel model's predicted class, as queries' maps do (no label "
                                 "in the SE-CBIR vectors; the label-leakage ablation of docs/retrieval.md)")

    def handle(self, *args, model_version, collection, incremental, wait, here, **options):
        from retrieval.services.index import index_build_request, index_build_run, index_refresh

        def model(version_id, what):
            if version_id is None:
                return None
            found = selectors.model_version_get(version_id=version_id)
            if found is None:
                raise CommandError(f"{what}: no ModelVersion #{version_id}")
            return found

        try:
            index = index_build_request(
                model_version=model(model_version, "--model-version"), collection=collection, incremental=incremental,
                extra_methods=not options["secbir_only"],
                contrastive_model=model(options["contrastive_model"], "--contrastive-model"),
                triplet_model=model(options["triplet_model"], "--triplet-model"),
                segmentation_model=model(options["segmentation_model"], "--segmentation-model"),
                library_saliency=options["library_saliency"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Index build #{index.id} of {index.collection!r} with {index.model_version} "
                          f"({'incremental' if index.base_id else 'full'}) is {index.status}; "
                          f"methods: {', '.join(index.methods or ['secbir'])}; library saliency maps for the "
                          f"{(index.descriptors or {}).get('library_saliency', 'truth')} class.")
        if not (wait or here):
            self.stdout.write("A worker runs it; follow it with --wait, in the admin or at /api/v1/index/.")
            return
        bar = tqdm(desc="Indexing", unit="img", disable=options["verbosity"] == 0, dynamic_ncols=True)
        while True:
            if not here or not index_build_run(index_id=index.id, worker="build_index command", enqueue_next=False):
                time.sleep(1.0)  # a worker holds it (or --here was not asked): follow its progress
            index = selectors.index_get(index_id=index.id)
            if not here:
                index = index_refresh(index=index)
            bar.total = index.total
            bar.n = index.done
            bar.refresh()
            if index.status in (IndexVersion.Status.DONE, IndexVersion.Status.FAILED):
                break
        bar.close()
        if index.status == IndexVersion.Status.FAILED:
            raise CommandError(f"index build #{index.id} failed: {index.message}")
        self.stdout.write(f"Index #{index.id} is active: {index.message}")
