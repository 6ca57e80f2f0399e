"""The audit log in the admin: a read-only list for staff with the permission to view it
(superusers; grant ``audit.view_auditevent`` to others), with a CSV download of the selection."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse

from lesionsearch.audit.export import write_csv
from lesionsearch.audit.models import AuditEvent
from lesionsearch.audit.services import record


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("time", "actor", "action", "object_type", "object_id", "via", "ip")
    list_filter = ("action", "via", "object_type", ("user", admin.RelatedOnlyFieldListFilter))
    search_fields = ("actor", "object_id", "ip")
    date_hierarchy = "time"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    actions = ["download_csv"]
    list_select_related = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Download the selected events as CSV", permissions=["view"])
    def download_csv(self, request, queryset):
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
        count = write_csv(queryset.order_by("time", "id"), response)
        record(AuditEvent.Action.AUDIT_EXPORT, user=request.user, request=request, detail={"events": count})
        return response
