from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from retrieval.classes import CODES
from retrieval.services import library_split
from retrieval.splits import SPLITS


class Command(BaseCommand):
    help = (
        "Assign a collection's cases to train/val/test, stratified by diagnosis and grouped by lesion_id "
        "(no lesion in two splits). Deterministic for a seed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--collection", help="collection to split (default: the only one in the library)")
        parser.add_argument("--seed", type=int, default=71, help="random seed (default 71, as in the thesis)")
        parser.add_argument("--train", type=float, default=0.8)
        parser.add_argument("--val", type=float, default=0.1)
        parser.add_argument("--test", type=float, default=0.1)

    def handle(self, *args, collection, seed, train, val, test, **options):
        from retrieval.selectors import default_collection

        try:
            collection = collection or default_collection()
            report = library_split(collection=collection, seed=seed, train=train, val=val, test=test)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{'class':<8}" + "".join(f"{s:>8}" for s in SPLITS))
        for code in CODES:
            self.stdout.write(f"{code:<8}" + "".join(f"{report.counts[s].get(code, 0):>8}" for s in SPLITS))
        totals = [sum(report.counts[s].values()) for s in SPLITS]
        self.stdout.write(f"{'total':<8}" + "".join(f"{n:>8}" for n in totals))
        self.stdout.write(
            f"Split {collection!r} with seed {seed}: {report.changed} case(s) changed split, "
            f"{report.lesions_in_two_splits} lesion(s) in more than one split, "
            f"{report.patients_in_two_splits} patient(s) in more than one split."
        )

