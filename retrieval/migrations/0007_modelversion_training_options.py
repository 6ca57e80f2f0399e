"""ModelVersion.training_options: how a 4-channel model was trained (saliency maps, stem init).

Existing rows get ``{}``, which the code reads as what every model before this field was trained
with: vanilla-gradient maps and the mean-of-RGB stem filter (retrieval.loaders.model_saliency).
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("retrieval", "0006_neighbour_vote_counts"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="training_options",
            field=models.JSONField(
                blank=True, default=dict,
                help_text="4-channel models: the saliency maps they were trained on ({'method': 'vanilla'} or "
                          "integrated gradients with ig_steps and ig_baseline) and stem_init ('mean' or 'zero'); "
                          "empty for models trained before these options existed, which used vanilla maps and "
                          "the mean stem"),
        ),
    ]
