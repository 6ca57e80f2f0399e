from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the staff page /ops/ and the Prometheus endpoint /metrics (no models)."""

    name = "lesionsearch.ops"
    label = "ops"
