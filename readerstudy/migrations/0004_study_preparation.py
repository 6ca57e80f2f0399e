"""A study's preparation becomes a job of the job framework (lesionsearch.jobs): its attempts and
when its task was sent move from the study to a StudyPreparation row, one per study, whose status
follows the study's (preparing: pending; failed: failed; any other: done)."""
import django.db.models.deletion
from django.db import migrations, models

JOB_STATUS = [("pending", "pending"), ("running", "running"), ("done", "done"), ("failed", "failed")]


def preparations_from_studies(apps, schema_editor):
    Study = apps.get_model("readerstudy", "Study")
    StudyPreparation = apps.get_model("readerstudy", "StudyPreparation")
    for study in Study.objects.all().iterator():
        status = {"preparing": "pending", "failed": "failed"}.get(study.status, "done")
        StudyPreparation.objects.create(
            study=study, status=status, attempts=study.prepare_attempts, enqueued_at=study.enqueued_at,
            finished_at=study.prepared_at if status == "done" else None,
            message=study.message if status == "failed" else "")


def studies_from_preparations(apps, schema_editor):
    Study = apps.get_model("readerstudy", "Study")
    for preparation in apps.get_model("readerstudy", "StudyPreparation").objects.all().iterator():
        Study.objects.filter(id=preparation.study_id).update(prepare_attempts=preparation.attempts,
                                                            enqueued_at=preparation.enqueued_at)


class Migration(migrations.Migration):
    dependencies = [("readerstudy", "0003_neighbour_views")]

    operations = [
        migrations.CreateModel(
            name="StudyPreparation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("status", models.CharField(choices=JOB_STATUS, db_index=True, default="pending", max_length=8)),
                ("attempts", models.PositiveSmallIntegerField(
                    default=0, help_text="runs started (the first and every takeover)")),
                ("worker", models.CharField(blank=True, help_text="the worker process that holds or held it",
                                            max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("enqueued_at", models.DateTimeField(blank=True, help_text="when a task was last sent", null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("heartbeat_at", models.DateTimeField(
                    blank=True, null=True,
                    help_text="set while a worker holds the job (cleared between the chunks of a build)")),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("message", models.TextField(blank=True, help_text="what the job is doing, or why it failed")),
                ("done", models.PositiveIntegerField(default=0, help_text="progress: units done")),
                ("total", models.PositiveIntegerField(default=0, help_text="progress: units in all")),
                ("study", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                               related_name="preparation", to="readerstudy.study")),
            ],
            options={"ordering": ["-created_at"]},
        ),
        migrations.RunPython(preparations_from_studies, studies_from_preparations),
        migrations.RemoveField(model_name="study", name="enqueued_at"),
        migrations.RemoveField(model_name="study", name="prepare_attempts"),
    ]
