from __future__ import annotations

from django.contrib import admin, messages

from retrieval import services
from retrieval.models import Case, LibraryCheck


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("image_id", "collection", "lesion_id", "dx", "dx_type", "split", "age", "sex", "localization")
    list_filter = ("collection", "dx", "split", "dx_type", "sex")
    search_fields = ("image_id", "lesion_id", "sha256")
    readonly_fields = ("sha256", "width", "height", "created_at")
    actions = ["check_collection"]

    @admin.action(description="Check the integrity of the selected cases' collections (background)")
    def check_collection(self, request, queryset):
        for collection in queryset.values_list("collection", flat=True).distinct():
            check = services.library_check_request(collection=collection, user=request.user)
            self.message_user(request, f"Queued integrity check {check.id} of {collection!r}.", messages.SUCCESS)


@admin.register(LibraryCheck)
class LibraryCheckAdmin(admin.ModelAdmin):
    list_display = ("id", "collection", "status", "checked", "total", "created_at", "finished_at", "message")
    list_filter = ("status", "collection")
    readonly_fields = [f.name for f in LibraryCheck._meta.fields] + ["problems"]
