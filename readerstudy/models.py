"""Reader studies: the thesis's two-task, Likert-rated protocol (SPEC "Reader study protocol").

A ``Study`` freezes the retrieval index (and so the model) at creation: its curated query set
(``StudyCase``) and every query's neighbours (``StudyNeighbour``) are computed once by a worker,
so every reader sees the same neighbours whatever happens to the live index later. Each reader's
``Assignment`` holds a seeded sample of the query set in two seeded orders (``AssignedCase``);
``Answer`` rows (one per reader, case and task: a database constraint) and, in relevance mode,
``RelevanceRating`` rows are the study's data. Stored codes never change.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from lesionsearch.jobs.models import Job
from retrieval.classes import DX_CHOICES
from retrieval.models import Case, IndexVersion, RankedNeighbour, between

TASK_IMAGE_ONLY = 1
TASK_WITH_NEIGHBOURS = 2
TASK_CHOICES = [(TASK_IMAGE_ONLY, "Task 1: the image alone"),
                (TASK_WITH_NEIGHBOURS, "Task 2: the rotated image and its most similar cases")]
TASKS = (TASK_IMAGE_ONLY, TASK_WITH_NEIGHBOURS)

#: The thesis's Likert scale (section 3.4).
LIKERT_CHOICES = [
    (1, "Not confident at all"),
    (2, "Slightly confident"),
    (3, "Somewhat confident"),
    (4, "Fairly confident"),
    (5, "Completely confident"),
]
LIKERT_MIN, LIKERT_MAX = 1, 5

#: Relevance of a shown neighbour to the query (relevance-rating mode; nDCG gains).
RELEVANCE_CHOICES = [
    (0, "Not relevant"),
    (1, "Somewhat relevant"),
    (2, "Relevant"),
    (3, "Highly relevant"),
]
RELEVANCE_MIN, RELEVANCE_MAX = 0, 3

ROTATION_CHOICES = [(0, "None"), (90, "90 degrees"), (180, "180 degrees"), (270, "270 degrees")]
#: Bounds of a study's settings (API and form): what the integer columns hold (and NumPy's seed
#: sequence takes no negative seed); a washout of at most a year, so that Task 2's opening time
#: (Task 1's end plus the washout) stays a date.
MAX_SETTING = 2**31 - 1
MAX_WASHOUT_SECONDS = 365 * 24 * 3600


class Design(models.TextChoices):
    """Which cases each reader reads: the two designs a multi-reader multi-case analysis takes.

    ``overlapping`` is how studies were sampled before designs existed (independent random samples
    that may share cases): kept for those studies, never offered for new ones, and refused by the
    MRMC analysis (docs/readerstudy.md says why).
    """

    CROSSED = "crossed", "Fully crossed: every reader reads the same cases (the MRMC standard)"
    NESTED = "nested", "Nested: each reader reads their own cases, no case shared (the thesis's design)"
    OVERLAPPING = "overlapping", "Overlapping random samples (studies created before designs; no MRMC analysis)"


#: The designs a new study can have.
NEW_STUDY_DESIGNS = (Design.CROSSED, Design.NESTED)


class Study(models.Model):
    class Status(models.TextChoices):
        PREPARING = "preparing", "Preparing (computing the query set)"
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        FAILED = "failed", "Preparation failed"

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True, help_text="Shown to readers on the study's start page.")
    collection = models.CharField(max_length=64)
    index_version = models.ForeignKey(IndexVersion, on_delete=models.PROTECT, related_name="studies",
                                      help_text="frozen at creation: every reader sees the same neighbours")
    method = models.CharField(max_length=32, default="secbir", help_text="retrieval method shown in Task 2")
    design = models.CharField(max_length=12, choices=Design.choices, default=Design.CROSSED,
                              help_text="which cases each reader reads (fixed at creation)")
    cases_per_reader = models.PositiveIntegerField(default=100)
    neighbours_shown = models.PositiveSmallIntegerField(default=6)
    washout = models.DurationField(default=timedelta(hours=24),
                                   help_text="time between a reader finishing Task 1 and Task 2 opening")
    task2_rotation = models.PositiveSmallIntegerField(choices=ROTATION_CHOICES, default=180)
    allow_changes = models.BooleanField(default=False, help_text="readers may change an answer once given")
    relevance_ratings = models.BooleanField(default=False,
                                            help_text="readers rate each neighbour's relevance in Task 2 (nDCG)")
    reveal_results = models.BooleanField(
        default=False, help_text="once the study is closed, readers see their own answers with the ground truth")
    seed = models.IntegerField(default=0, help_text="seeds every reader's sample and orders")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PREPARING, db_index=True)
    curation = models.JSONField(default=dict, blank=True,
                                help_text="query-set counts: test images, one per lesion, after the duplicate-lesion filter")
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    prepared_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(cases_per_reader__gte=1), name="study_cases_per_reader_positive"),
            between("neighbours_shown", 1, 20, name="study_neighbours_1_to_20"),
            models.CheckConstraint(condition=Q(task2_rotation__in=[0, 90, 180, 270]), name="study_rotation_quarter"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def washout_text(self) -> str:
        """The washout as a reader and an administrator read it: '24 hours', '2 minutes', '90 seconds', 'none'."""
        seconds = round(self.washout.total_seconds())
        if seconds == 0:
            return "none"
        for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds % size == 0 or unit == "second":
                count = seconds // size if unit != "second" else seconds
                return f"{count:g} {unit}{'' if count == 1 else 's'}"
        raise AssertionError("unreachable")


class StudyPreparation(Job):
    """The background job that computes a study's query set and neighbours (``study_prepare``).

    Progress: ``done`` test images searched of ``total``. When it fails, so does its study."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="preparation")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"preparation of {self.study} ({self.status})"


class StudyCase(models.Model):
    """A query of the curated set, with its neighbours' majority vote, ties broken by rank (staff only)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="cases")
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField(help_text="place in the curated query set")
    majority_vote = models.CharField(max_length=8, choices=DX_CHOICES)

    class Meta:
        ordering = ["study", "position"]
        constraints = [
            models.UniqueConstraint(fields=["study", "case"], name="studycase_unique_case"),
            models.UniqueConstraint(fields=["study", "position"], name="studycase_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.study} case {self.position}"


class StudyNeighbour(RankedNeighbour):
    study_case = models.ForeignKey(StudyCase, on_delete=models.CASCADE, related_name="neighbours")

    class Meta:
        ordering = ["study_case", "rank"]
        constraints = [models.UniqueConstraint(fields=["study_case", "rank"], name="studyneighbour_unique_rank")]


class Assignment(models.Model):
    """A reader's place in a study: their sample, in two orders, and when they finished each task."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assignments")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="study_assignments")
    seed = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    task1_finished_at = models.DateTimeField(null=True, blank=True)
    task2_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "reader__username"]
        constraints = [models.UniqueConstraint(fields=["study", "reader"], name="assignment_one_per_reader")]

    def __str__(self) -> str:
        return f"{self.reader} in {self.study}"


class AssignedCase(models.Model):
    """One case of a reader's sample; positions are 1-based places in the Task 1 and Task 2 orders."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="items")
    study_case = models.ForeignKey(StudyCase, on_delete=models.PROTECT, related_name="assigned")
    task1_position = models.PositiveIntegerField()
    task2_position = models.PositiveIntegerField()

    class Meta:
        ordering = ["assignment", "task1_position"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "study_case"], name="assignedcase_unique_case"),
            models.UniqueConstraint(fields=["assignment", "task1_position"], name="assignedcase_unique_task1"),
            models.UniqueConstraint(fields=["assignment", "task2_position"], name="assignedcase_unique_task2"),
        ]


class Answer(models.Model):
    """A reader's diagnosis and confidence for one case in one task."""

    item = models.ForeignKey(AssignedCase, on_delete=models.PROTECT, related_name="answers")
    task = models.PositiveSmallIntegerField(choices=TASK_CHOICES)
    answer = models.CharField(max_length=8, choices=DX_CHOICES)
    confidence = models.PositiveSmallIntegerField(choices=LIKERT_CHOICES)
    shown_at = models.DateTimeField(null=True, blank=True, help_text="when the case was served to the reader")
    answered_at = models.DateTimeField()
    seconds = models.FloatField(null=True, blank=True, help_text="time from showing the case to the answer")
    changes = models.PositiveSmallIntegerField(default=0, help_text="times changed (studies that allow changes)")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["item", "task"]
        constraints = [
            models.UniqueConstraint(fields=["item", "task"], name="answer_one_per_reader_case_task"),
            between("confidence", LIKERT_MIN, LIKERT_MAX, name="answer_confidence_likert"),
            models.CheckConstraint(condition=Q(task__in=TASKS), name="answer_task_1_or_2"),
        ]


class RelevanceRating(models.Model):
    """In relevance mode: how relevant a reader found the neighbour shown at ``rank`` (Task 2)."""

    item = models.ForeignKey(AssignedCase, on_delete=models.PROTECT, related_name="ratings")
    rank = models.PositiveSmallIntegerField()
    rating = models.PositiveSmallIntegerField(choices=RELEVANCE_CHOICES)
    rated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["item", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["item", "rank"], name="relevance_one_per_neighbour"),
            between("rating", RELEVANCE_MIN, RELEVANCE_MAX, name="relevance_0_to_3"),
        ]



#: Most neighbour enlargements one request may carry, and one reader may store per case: far more
#: than anyone looks at six images, few enough that a looping client cannot fill the database.
MAX_VIEWS_PER_REQUEST = 200
MAX_VIEWS_PER_CASE = 1000
#: A page's own id for one enlargement (so that a batch sent twice is stored once).
VIEW_ID_MAX_LENGTH = 64


class NeighbourView(models.Model):
    """A reader enlarged the neighbour shown at ``rank`` of a Task 2 case (what readers looked at).

    ``seconds_after_shown`` and ``seconds_open`` are measured by the reader's page (or API client)
    from the moment the case was shown; ``shown_at`` is when the server served that showing (from
    the case's signed ``shown`` token, null without a valid one) and ``opened_at`` the two added up,
    on the server's clock. The page's own ``client_id`` makes a repeated batch harmless.
    """

    item = models.ForeignKey(AssignedCase, on_delete=models.PROTECT, related_name="neighbour_views")
    task = models.PositiveSmallIntegerField(choices=TASK_CHOICES, default=TASK_WITH_NEIGHBOURS)
    rank = models.PositiveSmallIntegerField()
    client_id = models.CharField(max_length=VIEW_ID_MAX_LENGTH,
                                 help_text="the page's id of the enlargement: a batch sent twice is stored once")
    seconds_after_shown = models.FloatField(help_text="seconds from the case being shown to the enlargement")
    seconds_open = models.FloatField(null=True, blank=True,
                                     help_text="how long the enlarged view stayed open; null when not reported")
    shown_at = models.DateTimeField(null=True, blank=True,
                                    help_text="when the server served the showing the seconds count from")
    opened_at = models.DateTimeField(null=True, blank=True,
                                     help_text="server time of the enlargement (shown_at + seconds_after_shown)")
    received_at = models.DateTimeField(help_text="when the server received it")

    class Meta:
        ordering = ["item", "opened_at", "seconds_after_shown"]
        constraints = [
            models.UniqueConstraint(fields=["item", "client_id"], name="neighbourview_unique_client_id"),
            models.CheckConstraint(condition=Q(task=TASK_WITH_NEIGHBOURS), name="neighbourview_task_2"),
            models.CheckConstraint(condition=Q(seconds_after_shown__gte=0), name="neighbourview_after_shown"),
            models.CheckConstraint(condition=Q(seconds_open__isnull=True) | Q(seconds_open__gte=0),
                                   name="neighbourview_open_not_negative"),
        ]
