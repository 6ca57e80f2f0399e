"""Study design (which cases each reader reads). Studies that exist already were sampled as
overlapping random samples, so they are marked so; new studies default to fully crossed."""
from django.db import migrations, models


DESIGNS = [
    ("crossed", "Fully crossed: every reader reads the same cases (the MRMC standard)"),
    ("nested", "Nested: each reader reads their own cases, no case shared (the thesis's design)"),
    ("overlapping", "Overlapping random samples (studies created before designs; no MRMC analysis)"),
]


class Migration(migrations.Migration):
    dependencies = [("readerstudy", "0001_studies")]

    operations = [
        migrations.AddField(
            model_name="study", name="design",
            field=models.CharField(choices=DESIGNS, default="overlapping", max_length=12,
                                   help_text="which cases each reader reads (fixed at creation)"),
        ),
        migrations.AlterField(
            model_name="study", name="design",
            field=models.CharField(choices=DESIGNS, default="crossed", max_length=12,
                                   help_text="which cases each reader reads (fixed at creation)"),
        ),
    ]
