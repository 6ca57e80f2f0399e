"""Stored neighbour votes recomputed with the one rule (issue 15): shares are counts / n.

Votes stored before this migration held 1/rank-weighted shares next to a count-based ``top``,
so the result page could list another class first than the search history named. Every done
query's vote is rebuilt from its stored neighbours' diagnoses (``QueryNeighbour`` rows in rank
order), by the same function the worker uses now, so old and new rows have the same fields and
meaning. Reversing does nothing: the new votes are correct for the old code too (it reads
``top``, ``scores`` and ``counts``, which keep their names).
"""
from django.db import migrations

BATCH = 500


def recompute_votes(apps, schema_editor):
    # The JSON is built by the worker's own function (pure: labels in, dict out, no model
    # access), not by a copy of it, so that there is one rule and one stored shape.
    from retrieval.services.queries import neighbour_vote_json

    Query = apps.get_model("retrieval", "Query")
    QueryNeighbour = apps.get_model("retrieval", "QueryNeighbour")
    labels: dict[int, list[str]] = {}
    rows = (QueryNeighbour.objects.filter(query__status="done").order_by("query_id", "rank")
            .values_list("query_id", "case__dx"))
    for query_id, dx in rows.iterator(chunk_size=2000):
        labels.setdefault(query_id, []).append(dx)
    changed = []
    for query in Query.objects.filter(status="done").only("id", "neighbour_vote").iterator(chunk_size=BATCH):
        if query.id not in labels:  # no neighbour rows: nothing to recompute from
            continue
        vote = neighbour_vote_json(labels[query.id])
        if query.neighbour_vote != vote:
            query.neighbour_vote = vote
            changed.append(query)
    Query.objects.bulk_update(changed, ["neighbour_vote"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0005_retrieval_methods")]

    operations = [migrations.RunPython(recompute_votes, migrations.RunPython.noop, elidable=True)]
