"""Case library rows and the jobs that run over them."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from lesionsearch.jobs.models import Job
from retrieval.classes import DX_CHOICES, DX_TYPE_CHOICES, NO_SPLIT, SEX_CHOICES, SPLIT_CHOICES


def between(field: str, low: int, high: int, name: str) -> models.CheckConstraint:
    """The database check that ``low <= field <= high`` (the models' range constraints)."""
    return models.CheckConstraint(condition=models.Q(**{f"{field}__gte": low, f"{field}__lte": high}), name=name)


class CaseQuerySet(models.QuerySet):
    def in_library(self) -> CaseQuerySet:
        """The cases not withdrawn: those searches may return and index builds take."""
        return self.filter(withdrawn_at__isnull=True)

    def withdrawn(self) -> CaseQuerySet:
        return self.filter(withdrawn_at__isnull=False)


class Case(models.Model):
    """A previously diagnosed dermoscopic image in the case library.

    ``collection`` separates libraries (the real HAM10000 import, the synthetic demo library,
    a clinic's own cases): image ids are unique within a collection, image content (sha256)
    across all of them.
    """

    collection = models.CharField(max_length=64, db_index=True)
    image = models.FileField(upload_to="cases/", max_length=255)
    mask = models.FileField(upload_to="masks/", max_length=255, blank=True,
                            help_text="Ground-truth lesion mask (white = lesion), when known.")
    sha256 = models.CharField(max_length=64, unique=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    image_id = models.CharField(max_length=64)
    lesion_id = models.CharField(max_length=64, db_index=True,
                                 help_text="Photos of the same lesion share this id.")
    dx = models.CharField("diagnosis", max_length=8, choices=DX_CHOICES, db_index=True)
    dx_type = models.CharField("diagnosis established by", max_length=16, choices=DX_TYPE_CHOICES)
    age = models.PositiveSmallIntegerField(null=True, blank=True)
    sex = models.CharField(max_length=8, choices=SEX_CHOICES, default="unknown")
    localization = models.CharField(max_length=32, default="unknown")
    source_dataset = models.CharField(max_length=64, blank=True,
                                      help_text="Where the image came from (HAM10000's 'dataset' column).")
    split = models.CharField(max_length=8, choices=SPLIT_CHOICES, default=NO_SPLIT, db_index=True)
    patient_id = models.CharField(max_length=64, blank=True, db_index=True,
                                  help_text="The source's pseudonymous patient id (the ISIC archive's IP_...), when it "
                                            "publishes one: splits keep a patient's images together. Never a "
                                            "hospital identifier.")
    attribution = models.CharField(max_length=255, blank=True,
                                   help_text="Who the image is credited to (the ISIC archive's attribution); shown "
                                             "wherever the image is shown.")
    copyright_license = models.CharField(max_length=32, blank=True,
                                         help_text="The image's licence as the source states it (CC-0, CC-BY, CC-BY-NC).")
    created_at = models.DateTimeField(auto_now_add=True)
    #: Every write of the row sets it (``QuerySet.update`` callers set it themselves): with the
    #: row count and the highest id it makes ``selectors.library_state``, the key of the cached
    #: case library page.
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    #: Set when the case is taken out of the library (a wrong diagnosis found later, consent
    #: withdrawn): no search returns it from then on, on any backend, and later index builds
    #: leave it out; its rows and files stay so that past results still say what they showed.
    withdrawn_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                        help_text="When the case was withdrawn from the library (empty: in the library).")
    withdrawn_reason = models.CharField(max_length=255, blank=True,
                                        help_text="Why it was withdrawn (shown to staff and on past results).")

    objects = CaseQuerySet.as_manager()

    class Meta:
        ordering = ["collection", "image_id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "image_id"], name="case_unique_image_id_per_collection"),
        ]
        indexes = [models.Index(fields=["collection", "split", "dx"])]

    def __str__(self) -> str:
        return f"{self.image_id} ({self.dx})"


class LibraryCheck(Job):
    """A background integrity check of a collection: every image present, readable and unchanged.

    Progress: ``done`` images checked of ``total``."""

    collection = models.CharField(max_length=64)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    problems = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"check of {self.collection} ({self.status})"


class ModelVersion(models.Model):
    """A trained network checkpoint: the SE-CBIR classifiers (3-channel, or 4-channel built from a
    3-channel parent), the metric-learning embeddings (contrastive, triplet) and the learned lesion
    segmentation model."""

    class Stage(models.TextChoices):
        RGB = "3ch", "3-channel (RGB)"
        RGB_SALIENCY = "4ch", "4-channel (RGB + saliency)"
        CONTRASTIVE = "contrastive", "siamese embedding (contrastive loss)"
        TRIPLET = "triplet", "triplet-loss embedding"
        SEGMENTATION = "segmentation", "lesion segmentation"

    config = models.CharField(max_length=64, help_text="model configuration name, e.g. secbir-lite0")
    stage = models.CharField(max_length=16, choices=Stage.choices)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children",
                               help_text="the 3-channel model a 4-channel model was widened from")
    collection = models.CharField(max_length=64, help_text="the case collection it was trained on")
    checkpoint = models.FileField(upload_to="models/", max_length=255)
    checkpoint_sha256 = models.CharField(max_length=64)
    data_fingerprint = models.CharField(max_length=64, help_text="sha256 of the train/val images and labels")
    metrics = models.JSONField(default=dict, help_text="validation metrics of the kept epoch, and the history")
    weights_source = models.CharField(max_length=255, blank=True)
    seed = models.IntegerField(default=0)
    epochs = models.PositiveIntegerField(default=0)
    training_options = models.JSONField(
        default=dict, blank=True,
        help_text="4-channel models: the saliency maps they were trained on ({'method': 'vanilla'} or integrated "
                  "gradients with ig_steps and ig_baseline) and stem_init ('mean' or 'zero'); empty for models "
                  "trained before these options existed, which used vanilla maps and the mean stem")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(stage="3ch", parent__isnull=True) | models.Q(stage="4ch", parent__isnull=False)
                           | models.Q(stage__in=["contrastive", "triplet", "segmentation"])),
                name="modelversion_4ch_has_parent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.config} {self.stage} #{self.pk}"


class TrainingJob(Job):
    """Training of one or two stages (``train_model --queue`` or the admin) run by the worker one
    epoch per task run, resumable from its last epoch's checkpoint after a worker was killed.

    ``request``: the options as ``retrieval.services.training.training_plan`` reads them (profile,
    config, stage, epochs, seed, ...). Progress: ``done`` epochs of ``total`` over its stages;
    ``model_versions``: what each finished stage registered."""

    config = models.CharField(max_length=64)
    collection = models.CharField(max_length=64)
    stage = models.CharField(max_length=16, help_text="3ch, 4ch, both, contrastive or triplet")
    request = models.JSONField(default=dict)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    model_versions = models.ManyToManyField(ModelVersion, blank=True, related_name="training_jobs")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training {self.config} {self.stage} on {self.collection} ({self.status})"


class IndexVersion(Job):
    """The library's retrieval vectors, extracted with one 4-channel ModelVersion.

    A query is always encoded with the model of the index it is searched in, so feature sizes
    match by construction. Vectors live under ``MEDIA_ROOT/<directory>/`` (``features.npy``,
    ``case_ids.npy``, ``saliency.npy``); ``active`` marks the version that serves queries of its
    collection (at most one), switched in one transaction once a build is complete. As a job (the build):
    ``done`` cases encoded of ``total``, in chunks (one task run each).
    """

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="indexes")
    collection = models.CharField(max_length=64, db_index=True)
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="extensions",
                             help_text="the index whose vectors this one reuses (incremental update)")
    active = models.BooleanField(default=False)
    directory = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(default=0, help_text="vectors in the finished index")
    dimension = models.PositiveIntegerField(default=0)
    calibration = models.JSONField(default=dict, blank=True,
                                   help_text="the out-of-distribution warning: chosen score, threshold, AUROC and "
                                             "warned shares of every candidate (retrieval.services.ood)")
    methods = models.JSONField(default=list, blank=True,
                               help_text="retrieval methods this index serves (secbir always; the others when "
                                         "their descriptors were computed)")
    contrastive_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                          related_name="contrastive_indexes",
                                          limit_choices_to={"stage": "contrastive"},
                                          help_text="siamese embedding indexed with this version (method contrastive)")
    triplet_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="triplet_indexes", limit_choices_to={"stage": "triplet"},
                                      help_text="triplet-loss embedding indexed with this version (method triplet)")
    segmentation_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                           related_name="segmentation_indexes",
                                           limit_choices_to={"stage": "segmentation"},
                                           help_text="learned lesion masks for Dice (empty: the classical method)")
    descriptors = models.JSONField(default=dict, blank=True,
                                   help_text="how the other methods' descriptors were made (style stages and "
                                             "projection, segmentation method and its Dice)")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    skipped = models.JSONField(default=list, blank=True, help_text="cases left out (unreadable files)")
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["collection"], condition=models.Q(active=True),
                                    name="indexversion_one_active_per_collection"),
            models.CheckConstraint(condition=models.Q(active=False) | models.Q(status="done"),
                                   name="indexversion_active_is_done"),
        ]

    def __str__(self) -> str:
        return f"index #{self.pk} ({self.collection}, model #{self.model_version_id})"


class IndexChunk(Job):
    """One chunk of an index build (``number``: its place in the build's plan, ``cases`` in it): a job
    of its own, so that the chunks of one build run on every free worker at once (a fan-out), each
    claimed once, resumed after a killed worker and never encoded twice (its ``chunk-N.npz`` is
    written atomically before the row is DONE). The build assembles the index once every chunk
    is DONE; a chunk that fails fails the build."""

    index = models.ForeignKey(IndexVersion, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    first = models.PositiveIntegerField(help_text="position in the build's plan of the chunk's first case")
    cases = models.PositiveIntegerField(help_text="library cases in this chunk of the plan")

    class Meta:
        ordering = ["index", "number"]
        constraints = [models.UniqueConstraint(fields=["index", "number"], name="index_chunk_once")]

    def __str__(self) -> str:
        return f"chunk {self.number} of index {self.index_id} ({self.status})"


class Query(Job):
    """A clinician's uploaded image and, once the worker is done, its nearest library cases.

    As a job: ``message`` is the reason a failed query failed, in words a clinician can read."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queries")
    image = models.FileField(upload_to="queries/", max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    k = models.PositiveSmallIntegerField(default=6)
    method = models.CharField(max_length=16, default="secbir",
                              help_text="similarity measure (retrieval.methods); SE-CBIR by default")
    index_version = models.ForeignKey(IndexVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="queries")
    saliency = models.FileField(upload_to="overlays/", max_length=255, blank=True)
    predicted = models.CharField(max_length=8, blank=True, help_text="the 3-channel model's class (saliency target)")
    best_similarity = models.FloatField(null=True, blank=True)
    warning = models.TextField(blank=True)
    ood_score = models.FloatField(null=True, blank=True,
                                  help_text="out-of-distribution score (higher = more like the library)")
    ood_threshold = models.FloatField(null=True, blank=True,
                                      help_text="the index's threshold when the query ran: warned below it")
    ood_method = models.CharField(max_length=32, blank=True,
                                  help_text="which out-of-distribution score (retrieval.ml.ood; legacy_best_cosine "
                                            "for indexes calibrated before the candidates existed)")
    neighbour_vote = models.JSONField(default=dict, blank=True)
    search_filter = models.JSONField(default=dict, blank=True,
                                     help_text="the neighbour filter the query was searched with "
                                               "(retrieval.ml.search.SearchFilter.as_json); empty = none")
    acquisition = models.JSONField(default=dict, blank=True,
                                   help_text="for a DICOM upload: the whitelisted, non-identifying acquisition "
                                             "attributes (retrieval.dicom.KEPT); empty for other images")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "queries"
        constraints = [
            between("k", 1, 20, name="query_k_1_to_20"),
        ]

    def __str__(self) -> str:
        return f"query #{self.pk} ({self.status})"


class QueryEvidence(Job):
    """A query's second stage: the query-result activation map pairs (paper 004) of its neighbours,
    computed after the query is done (the neighbours do not wait for them). Each neighbour keeps
    its pair's file names, or why its pair failed (``QueryNeighbour.evidence_*``)."""

    query = models.OneToOneField(Query, on_delete=models.CASCADE, related_name="evidence_job")
    saliency_map = models.CharField(max_length=255, blank=True,
                                    help_text="the query's saliency map (uint8 .npy under MEDIA_ROOT) from the first "
                                              "stage, for the SE-CBIR pairs")

    class Meta:
        verbose_name_plural = "query evidence"

    def __str__(self) -> str:
        return f"evidence of query #{self.query_id} ({self.status})"


class RankedNeighbour(models.Model):
    """A library case at one rank of a ranked result, with its similarity to what was searched
    for: a query's neighbours here, a study case's in the reader study (no table of its own)."""

    rank = models.PositiveSmallIntegerField()
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="+")
    similarity = models.FloatField()

    class Meta:
        abstract = True


class QueryNeighbour(RankedNeighbour):
    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="neighbours")
    saliency = models.CharField(max_length=255, blank=True, help_text="overlay image under MEDIA_ROOT")
    evidence_query = models.CharField(max_length=255, blank=True,
                                      help_text="query activation map of this query-result pair (overlay)")
    evidence_case = models.CharField(max_length=255, blank=True,
                                     help_text="result activation map of this query-result pair (overlay)")
    evidence_error = models.TextField(blank=True, help_text="why this pair's evidence maps could not be computed")

    class Meta:
        ordering = ["query", "rank"]
        constraints = [models.UniqueConstraint(fields=["query", "rank"], name="queryneighbour_unique_rank")]
