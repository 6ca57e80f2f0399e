"""Input and output serializers of the API. They validate and describe; they hold no logic.

The query result body is built by ``retrieval.selectors.query_payload`` (one body for the
pages and the API); ``QueryResultSerializer`` only documents it in the schema, and a test
checks that both agree.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework import serializers
from rest_framework.reverse import reverse

from retrieval import selectors
from retrieval.classes import DX_CHOICES, SPLIT_CHOICES
from retrieval.methods import DEFAULT_METHOD, METHOD_CHOICES
from retrieval.models import Case, IndexVersion, ModelVersion, Query
from retrieval.services.polling import UNTIL, UNTIL_DONE

#: Longest long-poll a client may ask for with ``?wait=``; longer asks are rejected (400).
MAX_WAIT_SECONDS = 30


# --- Queries -----------------------------------------------------------------------------
class QueryCreateInputSerializer(serializers.Serializer):
    image = serializers.FileField(
        allow_empty_file=False,
        help_text=f"the dermoscopic image: JPEG, PNG, TIFF, WebP, BMP or DICOM (a single-frame VL Photographic or "
                  f"Dermoscopic Photography image), at most {settings.QUERY_MAX_UPLOAD_MB} MB",
    )
    k = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.QUERY_MAX_K,
        help_text=f"how many similar cases to return (default {settings.QUERY_DEFAULT_K})",
    )
    method = serializers.ChoiceField(
        choices=METHOD_CHOICES, required=False,
        help_text=f"similarity measure (default {DEFAULT_METHOD}); GET /api/v1/methods/ lists them and which the "
                  "current index serves (409 when it does not serve the one asked for)",
    )

    filters = serializers.JSONField(
        required=False,
        help_text="restrict the neighbours (applied inside the search): an object with any of exclude_lesion_ids, "
                  "exclude_patient_ids, sites, sexes, datasets (lists of strings), age_min, age_max (whole years); "
                  "in a multipart upload a JSON string. Omitted: no filter (the thesis's result view)",
    )

    def validate_filters(self, value):
        from retrieval.ml.search import SearchFilter

        if not isinstance(value, dict):
            raise serializers.ValidationError("filters must be a JSON object.")
        try:
            return SearchFilter.from_json(value).as_json()
        except (TypeError, ValueError) as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_image(self, image):
        if hasattr(self.initial_data, "getlist") and len(self.initial_data.getlist("image")) > 1:
            raise serializers.ValidationError("Upload one image at a time: the request held several files.")
        return image


class QueryCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Query.Status.choices)
    url = serializers.URLField(help_text="where to read the result (GET, optionally with ?wait=SECONDS)")


class QueryWaitInputSerializer(serializers.Serializer):
    wait = serializers.FloatField(
        required=False, default=0, min_value=0, max_value=MAX_WAIT_SECONDS,
        help_text=f"long-poll: wait up to this many seconds (at most {MAX_WAIT_SECONDS}) for the query "
                  "to finish before answering; larger values are rejected with 400",
    )
    until = serializers.ChoiceField(
        choices=UNTIL, required=False, default=UNTIL_DONE,
        help_text="what `wait` waits for: `done` (the query finished: its neighbours, vote and saliency overlay), or "
                  "`evidence` (also every neighbour's evidence map pair ready or failed)",
    )


class QuerySummarySerializer(serializers.Serializer):
    """One row of the user's query list (open ``url`` for the result)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Query.Status.choices)
    k = serializers.IntegerField()
    original_name = serializers.CharField(help_text="the uploaded file's name (\"DICOM image\" for a DICOM file, whose name is not kept)")
    created = serializers.DateTimeField(source="created_at")
    finished = serializers.DateTimeField(source="finished_at", allow_null=True)
    url = serializers.SerializerMethodField()

    def get_url(self, query: Query) -> str:
        return reverse("query-detail", kwargs={"query_id": query.pk}, request=self.context["request"])


ATTRIBUTION_HELP = ("who the image is credited to, as its source states it (the ISIC archive's attribution): show it "
                    "wherever the image is shown; empty when the source gives none")
LICENSE_HELP = "the image's licence as its source states it (CC-0, CC-BY, CC-BY-NC); empty when not stated"


class NeighbourMetadataSerializer(serializers.Serializer):
    age = serializers.IntegerField(allow_null=True)
    sex = serializers.CharField()
    localization = serializers.CharField()
    diagnosis_type = serializers.CharField(help_text="how the diagnosis was established (code)")
    diagnosis_type_label = serializers.CharField()
    lesion_id = serializers.CharField()


class EvidenceSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["pending", "ready", "failed"],
        help_text="`pending` while the query's second stage computes the pairs (the neighbours are shown before), "
                  "then `ready` or `failed` (with a message)")
    query_map_url = serializers.URLField(allow_null=True, help_text="overlay on the query: regions that drive its "
                                                                    "distance to this case (null unless ready)")
    case_map_url = serializers.URLField(allow_null=True, help_text="overlay on the case: regions that drive its "
                                                                   "distance to the query (null unless ready)")
    message = serializers.CharField(allow_null=True, help_text="why the pair failed (null otherwise)")


class MethodSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=METHOD_CHOICES)
    label = serializers.CharField()
    description = serializers.CharField()
    source = serializers.CharField(help_text="where the method comes from (the thesis or a source paper)")
    available = serializers.BooleanField(help_text="whether the index that serves queries now offers it")
    state = serializers.ChoiceField(choices=["available", "being prepared", "unavailable"],
                                    help_text="available; being prepared (a background job will add it: its model "
                                              "is trained or it is added to the index); unavailable")
    preparation = serializers.CharField(help_text="while being prepared: what the job is doing (else empty)")
    default = serializers.BooleanField()


class WithdrawalSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="when the case was withdrawn")
    reason = serializers.CharField(help_text="why")


class NeighbourSerializer(serializers.Serializer):
    rank = serializers.IntegerField(help_text="1 = most similar")
    case_id = serializers.IntegerField()
    image_id = serializers.CharField()
    diagnosis = serializers.ChoiceField(choices=DX_CHOICES)
    diagnosis_label = serializers.CharField()
    similarity = serializers.FloatField(help_text="the method's similarity score (higher = more similar): cosine "
                                                  "for secbir/cnn3/contrastive/triplet, in [0, 1] for the others")
    image_url = serializers.URLField()
    saliency_url = serializers.URLField(allow_null=True, help_text="the case's saliency overlay")
    evidence = EvidenceSerializer(allow_null=True, help_text="query-result activation map pair (paper 004), computed "
                                                             "after the query is done; null when this server does "
                                                             "not compute them (QUERY_EVIDENCE_MAPS=false)")
    metadata = NeighbourMetadataSerializer()
    attribution = serializers.CharField(allow_blank=True, help_text=ATTRIBUTION_HELP)
    copyright_license = serializers.CharField(allow_blank=True, help_text=LICENSE_HELP)
    withdrawn = WithdrawalSerializer(allow_null=True, help_text="set when the case was withdrawn from the library "
                                                                "after this search (a new search would not return it); "
                                                                "null: it is in the library")


class NeighbourVoteSerializer(serializers.Serializer):
    """How many of the neighbours have each class: the share of the similar cases per class, not a diagnosis."""

    label = serializers.CharField(help_text='always "neighbour vote": it is not a diagnosis')
    top = serializers.ChoiceField(
        choices=DX_CHOICES, help_text="the class most of the neighbours have; a tie in the count goes to the class "
                                      "with the larger sum of 1/rank, then to the one with the best rank (= order[0])")
    order = serializers.ListField(
        child=serializers.ChoiceField(choices=DX_CHOICES),
        help_text="the classes present among the neighbours, in the vote's order (most neighbours first, ties "
                  "broken by rank as for top); show counts and scores in this order")
    n = serializers.IntegerField(min_value=1, help_text="how many neighbours voted (the number of similar cases)")
    scores = serializers.DictField(
        child=serializers.FloatField(min_value=0, max_value=1),
        help_text="class code -> share of the neighbours of that class, counts / n rounded to 4 decimals (sum 1 "
                  "up to rounding); rank does not weigh in")
    counts = serializers.DictField(child=serializers.IntegerField(min_value=1),
                                   help_text="class code -> neighbours of that class (sums to n)")
    note = serializers.CharField()


class QueryOODSerializer(serializers.Serializer):
    """The out-of-distribution score the query was judged by: ``warning`` is set when score < threshold."""

    score = serializers.FloatField(
        allow_null=True, help_text="how much the image looks like the case library's dermoscopic images (higher = "
                                   "more alike); its scale depends on the method")
    threshold = serializers.FloatField(
        allow_null=True, help_text="the index's threshold when the query ran (null: the index has none, no warning)")
    method = serializers.CharField(
        help_text="the score: best_cosine, knn_cosine, msp3, energy3, mahalanobis or combined (GET /api/v1/index/ "
                  "shows the index's method and its measured figures); legacy_best_cosine for indexes calibrated "
                  "before these existed (best similarity against the 1st percentile of validation images)")


class QueryAcquisitionSerializer(serializers.Serializer):
    """How a DICOM query image was acquired: only these whitelisted, non-identifying attributes of its
    header are kept (each only when the file has it); empty for other images."""

    sop_class = serializers.CharField(required=False, help_text="VL Photographic Image or Dermoscopic Photography "
                                                                "Image")
    transfer_syntax = serializers.CharField(required=False, help_text="how the pixels were encoded, e.g. JPEG Baseline")
    photometric_interpretation = serializers.CharField(required=False, help_text="RGB, YBR_FULL_422, MONOCHROME2, ...")
    rows = serializers.IntegerField(required=False)
    columns = serializers.IntegerField(required=False)
    bits_stored = serializers.IntegerField(required=False)
    modality = serializers.CharField(required=False, help_text="(0008,0060), e.g. XC or DMS (dermoscopy)")
    body_part_examined = serializers.CharField(required=False, help_text="(0018,0015)")
    laterality = serializers.CharField(required=False, help_text="(0020,0060) L or R")
    image_laterality = serializers.CharField(required=False, help_text="(0020,0062)")
    light_source_polarization = serializers.CharField(required=False,
                                                      help_text="(0016,1001) POLARIZED or NON_POLARIZED")
    contact_method = serializers.CharField(required=False, help_text="(0016,1003) CONTACT or NON_CONTACT")
    immersion_media = serializers.JSONField(required=False, help_text="(0016,1004) a code, or a list of codes: "
                                                                      "ULTRASOUND_GEL, ALCOHOL, WATER, ...")
    partial_view = serializers.CharField(required=False, help_text="(0028,1350) YES or NO")
    emitter_color_temperature_k = serializers.FloatField(required=False, help_text="(0016,1002) kelvin")
    optical_magnification_factor = serializers.FloatField(required=False, help_text="(0016,1005) times")
    anatomic_region = serializers.CharField(required=False, help_text="(0008,2218) its first code's meaning")
    primary_anatomic_structure = serializers.CharField(required=False, help_text="(0008,2228) its first code's "
                                                                                 "meaning")


class QueryResultSerializer(serializers.Serializer):
    """A query and, once done, its most similar library cases. Similar cases are evidence, not a diagnosis."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Query.Status.choices)
    error = serializers.CharField(allow_null=True, help_text="why the query failed; null unless failed")
    created = serializers.DateTimeField()
    k = serializers.IntegerField(help_text="how many similar cases were asked for")
    method = serializers.ChoiceField(choices=METHOD_CHOICES, help_text="the similarity measure used")
    method_label = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)
    index_version = serializers.IntegerField(allow_null=True)
    query_image_url = serializers.URLField()
    query_saliency_url = serializers.URLField(allow_null=True)
    neighbour_vote = NeighbourVoteSerializer(
        allow_null=True, help_text="a summary of the neighbours' diagnoses, NOT a diagnosis; null until done",
    )
    warning = serializers.CharField(
        allow_null=True,
        help_text="set when the image does not look like the library's dermoscopic images (ood.score below "
                  "ood.threshold): the similar cases may not be meaningful; null otherwise"
    )
    ood = QueryOODSerializer(allow_null=True, help_text="the out-of-distribution score, threshold and method; null "
                                                        "until done")
    acquisition = QueryAcquisitionSerializer(help_text="for a DICOM upload, its kept acquisition attributes; {} "
                                                       "otherwise. The patient's identifiers are never kept.")
    filters = serializers.DictField(help_text="the neighbour filter the query was searched with ({} = none); "
                                              "excluded patient ids are given only as their count "
                                              "(excluded_patients)")
    neighbours = NeighbourSerializer(many=True)


# --- Cases -------------------------------------------------------------------------------
class CaseFilterSerializer(serializers.Serializer):
    diagnosis = serializers.ChoiceField(choices=DX_CHOICES, required=False, help_text="class code, e.g. mel")
    split = serializers.ChoiceField(choices=SPLIT_CHOICES, required=False)
    collection = serializers.CharField(required=False, max_length=64)
    withdrawn = serializers.BooleanField(required=False, allow_null=True, default=None,
                                         help_text="true: only cases withdrawn from the library; false: only those in "
                                                   "it; unset: both")


class CaseSerializer(serializers.ModelSerializer):
    diagnosis = serializers.CharField(source="dx")
    diagnosis_label = serializers.CharField(source="get_dx_display")
    diagnosis_type = serializers.CharField(source="dx_type")
    image_url = serializers.SerializerMethodField()
    attribution = serializers.CharField(help_text=ATTRIBUTION_HELP)
    copyright_license = serializers.CharField(help_text=LICENSE_HELP)

    class Meta:
        model = Case
        fields = ["id", "image_id", "lesion_id", "collection", "diagnosis", "diagnosis_label", "diagnosis_type",
                  "age", "sex", "localization", "split", "width", "height", "image_url", "attribution",
                  "copyright_license", "withdrawn_at", "withdrawn_reason"]
        read_only_fields = fields
        extra_kwargs = {"withdrawn_at": {"help_text": "when the case was withdrawn from the library; null: in it "
                                                      "(searches never return a withdrawn case)"}}

    def get_image_url(self, case: Case) -> str:
        return self.context["request"].build_absolute_uri(case.image.url)


class CaseWithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=255, help_text="why the case is withdrawn (audited; shown on past "
                                                             "results that showed it)")


# --- Index -------------------------------------------------------------------------------
class IndexOODSerializer(serializers.Serializer):
    """The index's out-of-distribution warning and what it was measured to do when it was calibrated
    (on the report half of held-out library images and of a set of non-dermoscopic images)."""

    method = serializers.CharField(allow_null=True, help_text="the score queries are judged by (see the query's ood)")
    threshold = serializers.FloatField(allow_null=True, help_text="queries scoring below it get the warning")
    auroc = serializers.FloatField(
        allow_null=True, min_value=0, max_value=1,
        help_text="P(a held-out library image scores above a non-dermoscopic image), ties one half")
    ood_warned = serializers.FloatField(allow_null=True, min_value=0, max_value=1,
                                        help_text="share of the non-dermoscopic evaluation images warned")
    ood_warned_per_kind = serializers.DictField(
        child=serializers.FloatField(allow_null=True, min_value=0, max_value=1),
        help_text="the same per kind: photo, medical (other kinds of medical images), skin (generated clinical "
                  "close-ups of skin), plain (graphics, text, noise, flat colours)")
    id_warned = serializers.FloatField(allow_null=True, min_value=0, max_value=1,
                                       help_text="share of held-out library (in-distribution) images warned")
    target_false_warning = serializers.FloatField(allow_null=True,
                                                  help_text="the largest share of library-like queries to warn")
    n_in_distribution = serializers.IntegerField(allow_null=True, help_text="held-out library images calibrated on")
    n_evaluation = serializers.IntegerField(allow_null=True, help_text="non-dermoscopic evaluation images")
    calibrated = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_null=True, help_text="why the index has no calibration; null when it has")


class IndexSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    collection = serializers.CharField()
    model_version = serializers.IntegerField(help_text="the 4-channel model version whose features it holds")
    status = serializers.ChoiceField(choices=IndexVersion.Status.choices)
    active = serializers.BooleanField(help_text="whether it serves queries of its collection")
    done = serializers.IntegerField(help_text="cases encoded so far")
    total = serializers.IntegerField(help_text="cases to encode")
    size = serializers.IntegerField(help_text="library images in the finished index")
    dimension = serializers.IntegerField(help_text="length of a retrieval feature vector")
    message = serializers.CharField(help_text="why a build failed, or notes about it")
    incremental_from = serializers.IntegerField(allow_null=True, help_text="the index whose vectors it reuses")
    created = serializers.DateTimeField()
    finished = serializers.DateTimeField(allow_null=True)
    activated = serializers.DateTimeField(allow_null=True)
    ood_threshold = serializers.FloatField(
        allow_null=True, help_text="= ood.threshold: queries whose out-of-distribution score is below it get a warning"
    )
    ood = IndexOODSerializer(allow_null=True, help_text="the out-of-distribution warning; null until calibrated")
    methods = serializers.ListField(child=serializers.ChoiceField(choices=METHOD_CHOICES),
                                    help_text="the retrieval methods this index serves")


class IndexStatusSerializer(serializers.Serializer):
    collection = serializers.CharField(allow_null=True)
    active = IndexSummarySerializer(allow_null=True, help_text="the index that serves queries; null when none is ready")
    builds = IndexSummarySerializer(many=True, help_text="recent builds, newest first, with their progress")


class IndexStatusInputSerializer(serializers.Serializer):
    collection = serializers.CharField(required=False, max_length=64,
                                       help_text="the case collection (default: the library's only one)")


class IndexRebuildInputSerializer(serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(stage=ModelVersion.Stage.RGB_SALIENCY), required=False, allow_null=True,
        help_text="a trained 4-channel model version (default: the newest)",
    )
    incremental = serializers.BooleanField(
        required=False, default=False,
        help_text="reuse the active index's vectors and encode only cases added since",
    )
    collection = serializers.CharField(required=False, max_length=64,
                                       help_text="the case collection (default: the model's or the library's)")
    extra_methods = serializers.BooleanField(
        required=False, default=True,
        help_text="also store what the other retrieval methods compare (false: SE-CBIR only, a faster build)",
    )
    contrastive_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(stage=ModelVersion.Stage.CONTRASTIVE), required=False, allow_null=True,
        help_text="contrastive embedding model to index (default: the collection's newest, if any)",
    )
    triplet_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(stage=ModelVersion.Stage.TRIPLET), required=False, allow_null=True,
        help_text="triplet embedding model to index (default: the collection's newest, if any)",
    )
    segmentation_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.filter(stage=ModelVersion.Stage.SEGMENTATION), required=False,
        allow_null=True,
        help_text="learned lesion segmenter for the Dice methods (default: classical segmentation)",
    )

    def validate_collection(self, value: str) -> str:
        if value not in selectors.collections_list():
            raise serializers.ValidationError(f"There is no case collection {value!r}.")
        return value


class IndexBuildSerializer(serializers.ModelSerializer):
    methods = serializers.ListField(child=serializers.CharField(), read_only=True,
                                    help_text="the retrieval methods the index serves (see /api/v1/methods/)")
    incremental_from = serializers.PrimaryKeyRelatedField(source="base", read_only=True, allow_null=True)
    created = serializers.DateTimeField(source="created_at")
    url = serializers.SerializerMethodField(help_text="the index status endpoint, to follow the build's progress")

    class Meta:
        model = IndexVersion
        fields = ["id", "status", "collection", "model_version", "incremental_from", "methods", "contrastive_model",
                  "triplet_model", "segmentation_model", "done", "total", "message", "created", "url"]
        read_only_fields = fields

    def get_url(self, index: IndexVersion) -> str:
        return reverse("index-status", request=self.context["request"])
