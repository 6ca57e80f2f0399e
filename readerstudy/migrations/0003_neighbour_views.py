"""What readers looked at: each enlargement of a Task 2 neighbour (``NeighbourView``), issue 14."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('readerstudy', '0002_study_design'),
    ]

    operations = [
        migrations.CreateModel(
            name='NeighbourView',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('task', models.PositiveSmallIntegerField(choices=[(1, 'Task 1: the image alone'), (2, 'Task 2: the rotated image and its most similar cases')], default=2)),
                ('rank', models.PositiveSmallIntegerField()),
                ('client_id', models.CharField(help_text="the page's id of the enlargement: a batch sent twice is stored once", max_length=64)),
                ('seconds_after_shown', models.FloatField(help_text='seconds from the case being shown to the enlargement')),
                ('seconds_open', models.FloatField(blank=True, help_text='how long the enlarged view stayed open; null when not reported', null=True)),
                ('shown_at', models.DateTimeField(blank=True, help_text='when the server served the showing the seconds count from', null=True)),
                ('opened_at', models.DateTimeField(blank=True, help_text='server time of the enlargement (shown_at + seconds_after_shown)', null=True)),
                ('received_at', models.DateTimeField(help_text='when the server received it')),
                ('item', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='neighbour_views', to='readerstudy.assignedcase')),
            ],
            options={
                'ordering': ['item', 'opened_at', 'seconds_after_shown'],
                'constraints': [models.UniqueConstraint(fields=('item', 'client_id'), name='neighbourview_unique_client_id'), models.CheckConstraint(condition=models.Q(('task', 2)), name='neighbourview_task_2'), models.CheckConstraint(condition=models.Q(('seconds_after_shown__gte', 0)), name='neighbourview_after_shown'), models.CheckConstraint(condition=models.Q(('seconds_open__isnull', True), ('seconds_open__gte', 0), _connector='OR'), name='neighbourview_open_not_negative')],
            },
        ),
    ]
