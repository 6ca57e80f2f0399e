"""Input and output serializers of the reader-study API. They validate and describe; no logic.

Reader-facing bodies are built from the reader selectors (``readerstudy.selectors.reader_*``,
``task_progress``), which never hold a study case's ground truth or identity; nothing here adds
any. Staff bodies describe whole studies.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from readerstudy.models import (
    LIKERT_MAX, LIKERT_MIN, MAX_SETTING, MAX_VIEWS_PER_REQUEST, MAX_WASHOUT_SECONDS, RELEVANCE_MAX, RELEVANCE_MIN,
    ROTATION_CHOICES, NEW_STUDY_DESIGNS, TASK_CHOICES, VIEW_ID_MAX_LENGTH, Design, Study,
)
from readerstudy.services import SHOWN_MAX_AGE
from retrieval.api.serializers import ATTRIBUTION_HELP, LICENSE_HELP
from retrieval.classes import DX_CHOICES
from retrieval.models import IndexVersion

#: The washout in the API is whole seconds (in and out), like every other duration of the API.
DEFAULT_WASHOUT_SECONDS = 24 * 3600


@extend_schema_field(OpenApiTypes.INT)
class SecondsField(serializers.Field):
    """A duration as whole seconds."""

    def to_representation(self, value) -> int:
        return round(value.total_seconds())


# --- Reader side ---------------------------------------------------------------------------
class TaskProgressSerializer(serializers.Serializer):
    task = serializers.ChoiceField(choices=TASK_CHOICES)
    total = serializers.IntegerField(help_text="cases in the reader's sample (the same in both tasks)")
    answered = serializers.IntegerField()
    next_position = serializers.IntegerField(
        allow_null=True, help_text="the first unanswered case of the task; null when all are answered")
    finished = serializers.BooleanField(help_text="every case of the task is answered")
    finished_at = serializers.DateTimeField(allow_null=True)
    is_open = serializers.BooleanField(help_text="whether the reader may read the task's cases now")
    opens_at = serializers.DateTimeField(
        allow_null=True, help_text="when the task opens: Task 2 a washout after Task 1 was finished; "
                                   "null for Task 2 while Task 1 is unfinished")
    reason = serializers.CharField(help_text='why the task is not open ("" when it is)')


class ReaderStudySummarySerializer(serializers.Serializer):
    """One of the reader's studies (open or closed ones they are assigned to)."""

    id = serializers.IntegerField(source="study.id")
    name = serializers.CharField(source="study.name")
    description = serializers.CharField(source="study.description")
    status = serializers.ChoiceField(source="study.status", choices=Study.Status.choices)
    url = serializers.URLField()
    tasks = TaskProgressSerializer(many=True)


class ReaderStudySerializer(serializers.Serializer):
    """A study as its reader sees it: the protocol's settings and the reader's progress."""

    id = serializers.IntegerField(source="study.id")
    name = serializers.CharField(source="study.name")
    description = serializers.CharField(source="study.description")
    status = serializers.ChoiceField(source="study.status", choices=Study.Status.choices)
    cases_per_reader = serializers.IntegerField(source="study.cases_per_reader")
    neighbours_shown = serializers.IntegerField(source="study.neighbours_shown",
                                                help_text="similar cases shown with each case in Task 2")
    washout_seconds = SecondsField(source="study.washout", help_text="time between finishing Task 1 and Task 2 opening")
    task2_rotation = serializers.IntegerField(source="study.task2_rotation",
                                              help_text="degrees counter-clockwise the Task 2 images are rotated")
    allow_changes = serializers.BooleanField(source="study.allow_changes",
                                             help_text="whether an answer may be changed once given")
    relevance_ratings = serializers.BooleanField(
        source="study.relevance_ratings", help_text="whether Task 2 answers rate every similar case's relevance (0-3)")
    tasks = TaskProgressSerializer(many=True)


class ReaderNeighbourSerializer(serializers.Serializer):
    """A similar library case shown in Task 2: its rank and diagnosis (the protocol shows them)."""

    rank = serializers.IntegerField(help_text="1 = most similar")
    code = serializers.ChoiceField(choices=DX_CHOICES, help_text="the library case's diagnosis (class code)")
    label = serializers.CharField()
    colour = serializers.CharField(help_text="the class's colour, e.g. #466e14")
    group = serializers.CharField(help_text="benign, pre-malignant or malignant")
    image = serializers.URLField(help_text="the neighbour's image (token or session)")
    attribution = serializers.CharField(allow_blank=True, help_text=ATTRIBUTION_HELP)
    copyright_license = serializers.CharField(allow_blank=True, help_text=LICENSE_HELP)


class OwnAnswerSerializer(serializers.Serializer):
    answer = serializers.ChoiceField(choices=DX_CHOICES)
    confidence = serializers.IntegerField(min_value=LIKERT_MIN, max_value=LIKERT_MAX)


class ReaderCaseSerializer(serializers.Serializer):
    """One case of the reader's task, addressed only by its position in the reader's own order."""

    task = serializers.ChoiceField(choices=TASK_CHOICES)
    position = serializers.IntegerField(help_text="1-based place in the reader's order for this task")
    total = serializers.IntegerField()
    rotation = serializers.IntegerField(help_text="degrees the image is rotated (counter-clockwise; 0 in Task 1)")
    image = serializers.URLField(help_text="the case's image, re-encoded without metadata (token or session)")
    shown = serializers.CharField(help_text="a signed note of when the case was served: send it with the answer "
                                            "so that the time spent on the case is measured")
    neighbours = ReaderNeighbourSerializer(many=True, help_text="Task 2 only (empty in Task 1)")
    answer = OwnAnswerSerializer(allow_null=True, help_text="the reader's own answer, once given")
    ratings = serializers.DictField(child=serializers.IntegerField(),
                                    help_text="the reader's own relevance ratings given so far (rank -> 0-3)")
    attribution = serializers.CharField(allow_blank=True, help_text=ATTRIBUTION_HELP)
    copyright_license = serializers.CharField(allow_blank=True, help_text=LICENSE_HELP)


class NextCaseSerializer(serializers.Serializer):
    done = serializers.BooleanField(help_text="every case of the task is answered")
    progress = TaskProgressSerializer()
    case = ReaderCaseSerializer(allow_null=True, help_text="the next unanswered case; null when done")


class AnswerInputSerializer(serializers.Serializer):
    position = serializers.IntegerField(min_value=1, help_text="the case's position in this task's order")
    answer = serializers.ChoiceField(choices=DX_CHOICES, help_text="the reader's diagnosis (class code)")
    confidence = serializers.IntegerField(min_value=LIKERT_MIN, max_value=LIKERT_MAX,
                                          help_text="Likert confidence, 1 (not at all) to 5 (completely)")
    shown = serializers.CharField(required=False, allow_blank=True, default="",
                                  help_text="the `shown` token of the case, to time the answer")
    ratings = serializers.DictField(
        child=serializers.IntegerField(min_value=RELEVANCE_MIN, max_value=RELEVANCE_MAX), required=False,
        help_text="rank -> relevance 0-3 of every similar case shown; required in Task 2 of a study with "
                  "relevance ratings, refused otherwise")


class AnswerSerializer(serializers.Serializer):
    """The reader's own stored answer (never the ground truth) and their progress in the task."""

    task = serializers.ChoiceField(choices=TASK_CHOICES)
    position = serializers.IntegerField()
    answer = serializers.ChoiceField(choices=DX_CHOICES)
    confidence = serializers.IntegerField()
    seconds = serializers.FloatField(allow_null=True,
                                     help_text="time from serving the case to the answer; null without a valid `shown`")
    progress = TaskProgressSerializer()


class NeighbourViewInputSerializer(serializers.Serializer):
    """One enlargement of a neighbour: which one, when, and for how long."""

    id = serializers.RegexField(
        r"^[A-Za-z0-9_-]+$", max_length=VIEW_ID_MAX_LENGTH,
        help_text="your own name for this enlargement (letters, digits, - or _): an enlargement sent again "
                  "with the same id is stored once")
    rank = serializers.IntegerField(min_value=1, help_text="the rank of the enlarged neighbour, as shown with the case")
    seconds_after_shown = serializers.FloatField(
        min_value=0, max_value=SHOWN_MAX_AGE.total_seconds(),
        help_text="seconds from the case being shown (when you received it, with its `shown` token) to the "
                  "enlargement")
    seconds_open = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=SHOWN_MAX_AGE.total_seconds(),
        help_text="how long the enlarged view stayed open; null or left out when unknown")


class NeighbourViewsInputSerializer(serializers.Serializer):
    shown = serializers.CharField(required=False, allow_blank=True, default="",
                                  help_text="the case's `shown` token: places the enlargements on the server's clock")
    views = serializers.ListField(child=NeighbourViewInputSerializer(), max_length=MAX_VIEWS_PER_REQUEST,
                                  help_text=f"at most {MAX_VIEWS_PER_REQUEST} enlargements; may be empty")


class NeighbourViewsResultSerializer(serializers.Serializer):
    stored = serializers.IntegerField(help_text="enlargements stored by this request")
    repeated = serializers.IntegerField(help_text="enlargements of the request that were stored already (by id)")
    total = serializers.IntegerField(help_text="your enlargements stored for this case in all")


# --- Study administration -------------------------------------------------------------------
class ManagedStudySummarySerializer(serializers.Serializer):
    id = serializers.IntegerField(source="study.id")
    name = serializers.CharField(source="study.name")
    status = serializers.ChoiceField(source="study.status", choices=Study.Status.choices)
    collection = serializers.CharField(source="study.collection")
    index_version = serializers.IntegerField(source="study.index_version_id")
    curation = serializers.DictField(source="study.curation", child=serializers.IntegerField(),
                                     help_text="query-set counts: test images, one per lesion, the query set")
    cases_count = serializers.IntegerField(source="study.n_cases", help_text="cases in the curated query set")
    readers_count = serializers.IntegerField(source="study.n_readers")
    created = serializers.DateTimeField(source="study.created_at")
    url = serializers.URLField()


class ManagedStudySerializer(serializers.Serializer):
    """A study's settings, preparation (curation counts, message) and readers."""

    id = serializers.IntegerField(source="study.id")
    name = serializers.CharField(source="study.name")
    description = serializers.CharField(source="study.description")
    status = serializers.ChoiceField(source="study.status", choices=Study.Status.choices)
    message = serializers.CharField(source="study.message", help_text="the preparation's progress or failure")
    collection = serializers.CharField(source="study.collection")
    index_version = serializers.IntegerField(source="study.index_version_id",
                                             help_text="the frozen index whose neighbours readers see")
    method = serializers.CharField(source="study.method")
    design = serializers.ChoiceField(source="study.design", choices=Design.choices,
                                     help_text="which cases each reader reads")
    cases_per_reader = serializers.IntegerField(source="study.cases_per_reader")
    neighbours_shown = serializers.IntegerField(source="study.neighbours_shown")
    washout_seconds = SecondsField(source="study.washout")
    task2_rotation = serializers.IntegerField(source="study.task2_rotation")
    allow_changes = serializers.BooleanField(source="study.allow_changes")
    relevance_ratings = serializers.BooleanField(source="study.relevance_ratings")
    reveal_results = serializers.BooleanField(source="study.reveal_results")
    seed = serializers.IntegerField(source="study.seed")
    curation = serializers.DictField(source="study.curation", child=serializers.IntegerField())
    cases_count = serializers.IntegerField(help_text="cases in the curated query set")
    readers = serializers.ListField(child=serializers.CharField(), help_text="usernames of the assigned readers")
    created = serializers.DateTimeField(source="study.created_at")
    prepared = serializers.DateTimeField(source="study.prepared_at", allow_null=True)
    opened = serializers.DateTimeField(source="study.opened_at", allow_null=True)
    closed = serializers.DateTimeField(source="study.closed_at", allow_null=True)
    url = serializers.URLField()


class StudyCreateInputSerializer(serializers.Serializer):
    """Omitted settings take the service's defaults."""

    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True)
    index_version = serializers.PrimaryKeyRelatedField(
        queryset=IndexVersion.objects.all(), required=False,
        help_text="the finished index to freeze the study on (default: the one queries use now)")
    design = serializers.ChoiceField(
        required=False, choices=[(d.value, d.label) for d in NEW_STUDY_DESIGNS],
        help_text="crossed (default): every reader reads the same cases; nested: each reader their own cases")
    cases_per_reader = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SETTING,
                                                help_text="default 100")
    neighbours_shown = serializers.IntegerField(required=False, min_value=1, max_value=20, help_text="default 6")
    washout_seconds = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_WASHOUT_SECONDS,
        help_text=f"time between a reader finishing Task 1 and Task 2 opening, in seconds "
                  f"(default {DEFAULT_WASHOUT_SECONDS}: 24 hours; at most {MAX_WASHOUT_SECONDS}: a year)")
    task2_rotation = serializers.ChoiceField(required=False, choices=ROTATION_CHOICES, help_text="default 180")
    allow_changes = serializers.BooleanField(required=False, help_text="default false")
    relevance_ratings = serializers.BooleanField(required=False, help_text="default false")
    reveal_results = serializers.BooleanField(required=False, help_text="default false")
    seed = serializers.IntegerField(required=False, min_value=0, max_value=MAX_SETTING,
                                    help_text="seeds every reader's sample and orders (default 0)")


class AssignInputSerializer(serializers.Serializer):
    readers = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=get_user_model().objects.all(), allow_empty=False,
        help_text="usernames of users in the reader group")


class AssignResultSerializer(serializers.Serializer):
    assigned = serializers.ListField(child=serializers.CharField(), help_text="readers assigned by this request")
    readers = serializers.ListField(child=serializers.CharField(), help_text="every reader of the study")


class ReaderProgressSerializer(serializers.Serializer):
    reader = serializers.CharField()
    total = serializers.IntegerField()
    task1 = serializers.IntegerField(help_text="Task 1 answers")
    task2 = serializers.IntegerField(help_text="Task 2 answers")
    task1_finished_at = serializers.DateTimeField(allow_null=True)
    task2_finished_at = serializers.DateTimeField(allow_null=True)
    task2_opens_at = serializers.DateTimeField(allow_null=True)
    task2_waiting = serializers.BooleanField(help_text="Task 1 is finished and the washout has not passed yet")


class StudyProgressSerializer(serializers.Serializer):
    readers = ReaderProgressSerializer(many=True)
