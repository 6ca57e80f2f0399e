from __future__ import annotations

from django.core.management.base import BaseCommand

from retrieval.services import library_check_request


class Command(BaseCommand):
    help = "Queue a background integrity check of a collection (files present, unchanged, readable)."

    def add_arguments(self, parser):
        parser.add_argument("collection")

    def handle(self, *args, collection, **options):
        check = library_check_request(collection=collection)
        self.stdout.write(f"Queued integrity check {check.id} of {collection!r} ({check.total} cases); "
                          "a worker runs it, see the admin for the result.")
