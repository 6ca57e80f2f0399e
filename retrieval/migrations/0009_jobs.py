"""Jobs share one abstract model (lesionsearch.jobs.models.Job): the failure text of a query and
the count of a library check get the framework's names. Every row is kept."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0008_query_ood")]

    operations = [
        migrations.RenameField(model_name="query", old_name="error", new_name="message"),
        migrations.RenameField(model_name="librarycheck", old_name="checked", new_name="done"),
    ]
