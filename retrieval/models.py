"""Case library rows and the jobs that run over them."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from retrieval.classes import DX_CHOICES, DX_TYPE_CHOICES, NO_SPLIT, SEX_CHOICES, SPLIT_CHOICES


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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["collection", "image_id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "image_id"], name="case_unique_image_id_per_collection"),
        ]
        indexes = [models.Index(fields=["collection", "split", "dx"])]

    def __str__(self) -> str:
        return f"{self.image_id} ({self.dx})"


class LibraryCheck(models.Model):
    """A background integrity check of a collection: every image present, readable and unchanged."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    collection = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    total = models.PositiveIntegerField(default=0)
    checked = models.PositiveIntegerField(default=0)
    problems = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"check of {self.collection} ({self.status})"


class ModelVersion(models.Model):
    """A trained classifier checkpoint (3-channel, or 4-channel built from a 3-channel parent)."""

    class Stage(models.TextChoices):
        RGB = "3ch", "3-channel (RGB)"
        RGB_SALIENCY = "4ch", "4-channel (RGB + saliency)"

    config = models.CharField(max_length=64, help_text="model configuration name, e.g. secbir-lite0")
    stage = models.CharField(max_length=4, choices=Stage.choices)
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(stage="3ch", parent__isnull=True) | models.Q(stage="4ch", parent__isnull=False),
                name="modelversion_4ch_has_parent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.config} {self.stage} #{self.pk}"
