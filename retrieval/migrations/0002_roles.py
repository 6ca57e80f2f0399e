"""Create the role groups. Names are stable: code and tests refer to them (lesionsearch.roles)."""
from django.db import migrations

ROLES = ("clinician", "reader", "study admin")
# Read access to the case library for the roles that see diagnosed cases outside studies.
VIEW_CASE = {"clinician", "study admin"}


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    case_type, _ = ContentType.objects.get_or_create(app_label="retrieval", model="case")
    view_case, _ = Permission.objects.get_or_create(
        content_type=case_type, codename="view_case", defaults={"name": "Can view case"}
    )
    for name in ROLES:
        group, _ = Group.objects.get_or_create(name=name)
        if name in VIEW_CASE:
            group.permissions.add(view_case)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
