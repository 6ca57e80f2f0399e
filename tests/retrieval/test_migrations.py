"""Data migrations of the retrieval app, run on rows as the code before them left them."""
from __future__ import annotations

import pytest
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader

from retrieval.models import Query
from retrieval.services.queries import neighbour_vote_json
from tests.retrieval.conftest import ISSUE_15_LABELS, ISSUE_15_OLD_VOTE
from tests.pages import vote_rows

pytestmark = pytest.mark.django_db

VOTE_MIGRATION = ("retrieval", "0006_neighbour_vote_counts")


def _run_forwards(migration_key: tuple[str, str]) -> migrations.RunPython:
    """Run a RunPython migration's forward code on the models as they were just before it.

    The schema does not change in these migrations, so the test database (already at the latest
    state) holds the same tables; calling the operation's code with the historical app registry
    avoids migrating the database back and forth, which SQLite cannot do inside a test's
    transaction."""
    loader = MigrationLoader(connection)
    migration = loader.get_migration(*migration_key)
    (operation,) = migration.operations
    assert isinstance(operation, migrations.RunPython)
    before = loader.project_state(migration_key, at_end=False)
    operation.code(before.apps, None)
    return operation


def test_the_vote_migration_rewrites_old_weighted_shares_from_the_stored_neighbours(
        client, clinician, stored_done_query):
    old = stored_done_query(clinician, ISSUE_15_LABELS, vote=ISSUE_15_OLD_VOTE)
    current = stored_done_query(clinician, ["nv", "nv", "mel"])
    pending = Query.objects.create(user=clinician, image=old.image.name, sha256="f" * 64, width=1, height=1)
    current_vote = current.neighbour_vote

    operation = _run_forwards(VOTE_MIGRATION)

    old.refresh_from_db()
    assert old.neighbour_vote == neighbour_vote_json(ISSUE_15_LABELS)
    assert old.neighbour_vote["order"] == ["nv", "bkl", "mel", "akiec"]
    assert old.neighbour_vote["scores"] == {"nv": 0.3333, "bkl": 0.3333, "mel": 0.1667, "akiec": 0.1667}
    current.refresh_from_db()
    pending.refresh_from_db()
    assert current.neighbour_vote == current_vote and pending.neighbour_vote == {}
    # The result page of the old query no longer lists mel (41 % weighted) first but nv, as the history does.
    client.force_login(clinician)
    page = client.get(f"/queries/{old.pk}/").content.decode()
    assert vote_rows(page)[0] == ("nv", "2 of 6", "33 %") and "41 %" not in page
    # Reversing keeps the recomputed votes (the old code reads top, scores and counts too).
    assert operation.reverse_code is migrations.RunPython.noop


def test_the_app_has_one_migration_leaf_and_the_vote_migration_precedes_it():
    # Later migrations only add columns the vote migration's code does not read, so running it on
    # the latest schema (above) stays valid; two migrations with the same parent must be merged.
    loader = MigrationLoader(connection)
    (leaf,) = loader.graph.leaf_nodes("retrieval")
    assert VOTE_MIGRATION in loader.graph.forwards_plan(leaf)
