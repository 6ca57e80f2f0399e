"""Django admin views of reader studies: read-only records for staff. Studies are created, opened,
closed and exported from the study pages (/studies/manage/), which go through the services."""
from __future__ import annotations

from django.contrib import admin

from readerstudy.models import Answer, Assignment, NeighbourView, RelevanceRating, Study


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Study)
class StudyAdmin(ReadOnlyAdmin):
    list_display = ("name", "status", "collection", "index_version", "cases_per_reader", "created_at")
    list_filter = ("status", "collection")
    search_fields = ("name",)


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ("study", "reader", "task1_finished_at", "task2_finished_at")
    list_filter = ("study",)

    def has_delete_permission(self, request, obj=None):
        return False  # answers are never thrown away; study pages remove readers without answers


@admin.register(Answer)
class AnswerAdmin(ReadOnlyAdmin):
    list_display = ("item", "task", "answer", "confidence", "seconds", "answered_at", "changes")
    list_filter = ("item__assignment__study", "task")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RelevanceRating)
class RelevanceRatingAdmin(ReadOnlyAdmin):
    list_display = ("item", "rank", "rating", "rated_at")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(NeighbourView)
class NeighbourViewAdmin(ReadOnlyAdmin):
    list_display = ("item", "task", "rank", "seconds_after_shown", "seconds_open", "opened_at", "received_at")
    list_filter = ("item__assignment__study",)

    def has_delete_permission(self, request, obj=None):
        return False
