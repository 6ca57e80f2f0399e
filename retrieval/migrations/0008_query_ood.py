"""Query.ood_score / ood_threshold / ood_method: the out-of-distribution score a query was judged by.

Queries finished before this migration were warned by the first rule (their best SE-CBIR
similarity against their index's ``calibration["threshold"]``); they get exactly that, labelled
``legacy_best_cosine``, so that every finished query carries its score, threshold and method.
Reversing drops the fields (the warning text itself is untouched either way).
"""
from django.db import migrations, models

BATCH = 500
LEGACY = "legacy_best_cosine"  # = retrieval.services.ood.LEGACY (a migration keeps its own copy)


def backfill(apps, schema_editor):
    Query = apps.get_model("retrieval", "Query")
    thresholds = {}
    changed = []
    done = (Query.objects.filter(status="done", best_similarity__isnull=False).select_related("index_version")
            .only("id", "best_similarity", "index_version__calibration"))
    for query in done.iterator(chunk_size=BATCH):
        index = query.index_version
        if index is not None and index.id not in thresholds:
            calibration = index.calibration or {}
            thresholds[index.id] = calibration.get("threshold") if calibration.get("version", 1) < 2 else None
        query.ood_score = query.best_similarity
        query.ood_threshold = thresholds.get(index.id) if index is not None else None
        query.ood_method = LEGACY
        changed.append(query)
    Query.objects.bulk_update(changed, ["ood_score", "ood_threshold", "ood_method"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0007_modelversion_training_options")]

    operations = [
        migrations.AddField(
            model_name="query",
            name="ood_score",
            field=models.FloatField(blank=True, null=True,
                                    help_text="out-of-distribution score (higher = more like the library)"),
        ),
        migrations.AddField(
            model_name="query",
            name="ood_threshold",
            field=models.FloatField(blank=True, null=True,
                                    help_text="the index's threshold when the query ran: warned below it"),
        ),
        migrations.AddField(
            model_name="query",
            name="ood_method",
            field=models.CharField(blank=True, max_length=32,
                                   help_text="which out-of-distribution score (retrieval.ml.ood; legacy_best_cosine "
                                             "for indexes calibrated before the candidates existed)"),
        ),
        migrations.AlterField(
            model_name="indexversion",
            name="calibration",
            field=models.JSONField(blank=True, default=dict,
                                   help_text="the out-of-distribution warning: chosen score, threshold, AUROC and "
                                             "warned shares of every candidate (retrieval.services.ood)"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
