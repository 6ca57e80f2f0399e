from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm

from retrieval import services
from retrieval.models import Case, IndexVersion, LibraryCheck, ModelVersion, Query, QueryNeighbour, TrainingJob


class CaseActionForm(ActionForm):
    """The action bar of the case list, with the reason a withdrawal needs."""

    reason = forms.CharField(required=False, max_length=255, label="Reason (to withdraw)")


class PerObjectActionsMixin:
    """Admin actions that act on each selected object in turn, with one message per object."""

    def _each(self, request, objects: Iterable, act: Callable[[Any], str], error: type[Exception],
              failure: Callable[[Any, Exception], str] = lambda obj, exc: str(exc)) -> None:
        """``act`` on each of ``objects``: the success message it returns, or the ``failure`` message of an
        ``error`` it raises (the next object is still acted on)."""
        for obj in objects:
            try:
                done = act(obj)
            except error as exc:
                self.message_user(request, failure(obj, exc), messages.ERROR)
                continue
            self.message_user(request, done, messages.SUCCESS)


class WithdrawnFilter(admin.SimpleListFilter):
    title = "in the library"
    parameter_name = "withdrawn"

    def lookups(self, request, model_admin):
        return (("no", "in the library"), ("yes", "withdrawn"))

    def queryset(self, request, queryset):
        return {"no": queryset.in_library(), "yes": queryset.withdrawn()}.get(self.value(), queryset)


def _case_failure(case: Case, exc: Exception) -> str:
    """A case action's error message, named by the case's image id."""
    return f"{case.image_id}: {exc}"


@admin.register(Case)
class CaseAdmin(PerObjectActionsMixin, admin.ModelAdmin):
    list_display = ("image_id", "collection", "lesion_id", "dx", "dx_type", "split", "age", "sex", "localization",
                    "withdrawn_at")
    list_filter = ("collection", "dx", "split", "dx_type", "sex", WithdrawnFilter)
    search_fields = ("image_id", "lesion_id", "sha256")
    # Images come in through import_ham10000 (services.case_create inspects each): no upload here.
    # Withdrawal goes through the actions (audited, with its reason), never by editing the fields.
    readonly_fields = ("image", "mask", "sha256", "width", "height", "created_at", "updated_at", "withdrawn_at",
                       "withdrawn_reason")
    action_form = CaseActionForm
    actions = ["check_collection", "withdraw", "restore"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Check the integrity of the selected cases' collections (background)")
    def check_collection(self, request, queryset):
        for collection in queryset.values_list("collection", flat=True).distinct():
            check = services.library_check_request(collection=collection, user=request.user)
            self.message_user(request, f"Queued integrity check {check.id} of {collection!r}.", messages.SUCCESS)

    @admin.action(description="Withdraw the selected cases from the library (give the reason)")
    def withdraw(self, request, queryset):
        reason = request.POST.get("reason", "")

        def withdraw_one(case: Case) -> str:
            services.case_withdraw(case=case, reason=reason, user=request.user)
            return f"Withdrew {case.image_id}: searches no longer return it."

        self._each(request, queryset, withdraw_one, services.WithdrawalError, _case_failure)

    @admin.action(description="Put the selected withdrawn cases back into the library")
    def restore(self, request, queryset):
        def restore_one(case: Case) -> str:
            services.case_restore(case=case, user=request.user)
            return f"Restored {case.image_id} to the library."

        self._each(request, queryset, restore_one, services.WithdrawalError, _case_failure)


@admin.register(LibraryCheck)
class LibraryCheckAdmin(admin.ModelAdmin):
    list_display = ("id", "collection", "status", "done", "total", "created_at", "finished_at", "message")
    list_filter = ("status", "collection")
    readonly_fields = [f.name for f in LibraryCheck._meta.fields] + ["problems"]


@admin.register(ModelVersion)
class ModelVersionAdmin(PerObjectActionsMixin, admin.ModelAdmin):
    list_display = ("id", "config", "stage", "parent", "collection", "epochs", "accuracy", "created_at")
    list_filter = ("config", "stage", "collection")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["build_index"]

    @admin.display(description="val. accuracy")
    def accuracy(self, obj):
        value = (obj.metrics or {}).get("accuracy")
        return f"{value:.3f}" if isinstance(value, float) else "-"

    @admin.action(description="Build a retrieval index with the selected 4-channel model (background)")
    def build_index(self, request, queryset):
        from retrieval.services.index import index_build_request

        def build_one(model: ModelVersion) -> str:
            index = index_build_request(user=request.user, model_version=model)
            return (f"Index build #{index.id} with {model} is {index.status}; the current index serves queries "
                    "until it is complete.")

        self._each(request, queryset, build_one, ValueError, lambda model, exc: f"{model}: {exc}")


class TrainingQueueForm(forms.ModelForm):
    """Queue a training job: the main options of ``train_model --queue``, checked by the service."""

    profile = forms.ChoiceField(choices=(), help_text="thesis: the thesis recipe; demo: the few-minute CPU run")
    stage = forms.ChoiceField(choices=(), initial="both")
    config = forms.ChoiceField(choices=(), required=False, help_text="default: the profile's")
    collection = forms.CharField(required=False, help_text="default: the only one in the library")
    epochs = forms.IntegerField(required=False, min_value=1, help_text="every stage (default: the profile's)")
    batch_size = forms.IntegerField(required=False, min_value=1, help_text="default: the profile's")
    seed = forms.IntegerField(initial=0)
    parent = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(stage=ModelVersion.Stage.RGB), required=False,
        help_text="4ch: the 3-channel model to widen (default: the newest); contrastive/triplet: start from its "
                  "backbone instead of ImageNet weights")

    class Meta:
        model = TrainingJob
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        from retrieval.ml.configs import config_names
        from retrieval.ml.profiles import DEFAULT_PROFILE, TRAINING_PROFILES
        from retrieval.services.training import REQUEST_STAGES

        super().__init__(*args, **kwargs)
        self.fields["profile"].choices = [(name, name) for name in TRAINING_PROFILES]
        self.fields["profile"].initial = DEFAULT_PROFILE
        self.fields["stage"].choices = [(stage, stage) for stage in REQUEST_STAGES]
        self.fields["config"].choices = [("", "the profile's")] + [(name, name) for name in config_names()]

    def clean(self):
        data = super().clean()
        request = {key: data.get(key) or None for key in ("profile", "stage", "config", "collection", "epochs",
                                                          "batch_size")}
        request["seed"] = data.get("seed") or 0
        request["parent"] = data["parent"].id if data.get("parent") else None
        try:
            services.training_plan(request)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.training_request = request
        return data


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    """Training jobs: queued here or with ``train_model --queue``; the worker trains one epoch per run."""

    list_display = ("id", "config", "stage", "collection", "status", "progress", "attempts", "created_at",
                    "finished_at", "message")
    list_filter = ("status", "stage", "config")
    form = TrainingQueueForm

    @admin.display(description="epochs")
    def progress(self, obj):
        return f"{obj.done} / {obj.total}" if obj.total else "-"

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["profile", "stage", "config", "collection", "epochs", "batch_size", "seed", "parent"]
        return self.get_readonly_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [f.name for f in TrainingJob._meta.fields] + ["progress", "model_versions"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    def get_object(self, request, object_id, from_field=None):
        from retrieval.services.training import training_refresh

        job = super().get_object(request, object_id, from_field)
        return training_refresh(job) if job is not None else None

    def save_model(self, request, obj, form, change):
        if change:
            return
        job = services.training_queue(request=form.training_request, user=request.user)
        obj.__dict__.update({key: value for key, value in job.__dict__.items() if not key.startswith("_")})
        obj._state.adding = False
        self.message_user(request, f"Queued training job {job.id}: the worker trains it one epoch at a time; this "
                                   "page shows its progress.", messages.SUCCESS)

    def save_related(self, request, form, formsets, change):
        pass  # the job's models are what its stages register


@admin.register(IndexVersion)
class IndexVersionAdmin(PerObjectActionsMixin, admin.ModelAdmin):
    list_display = ("id", "collection", "model_version", "status", "active", "progress", "size", "ood",
                    "created_at", "activated_at", "message")
    list_filter = ("collection", "status", "active")
    readonly_fields = ["ood_figures"] + [f.name for f in IndexVersion._meta.fields]
    actions = ["rebuild", "add_new_cases", "activate", "remove_unreferenced"]

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.done} / {obj.total}" if obj.total else "-"

    @admin.display(description="out-of-distribution warning")
    def ood(self, obj):
        from retrieval.selectors import index_ood_summary

        summary = index_ood_summary(obj)
        if summary is None:
            return "-"
        if summary["auroc"] is None:
            return f"{summary['method'] or 'none'}, threshold {_fmt(summary['threshold'])}"
        return (f"{summary['method']}: AUROC {_fmt(summary['auroc'], 3)}, non-dermoscopic warned "
                f"{_pct(summary['ood_warned'])}, held-out library warned {_pct(summary['id_warned'])}")

    @admin.display(description="out-of-distribution figures (report half)")
    def ood_figures(self, obj):
        """Every candidate score's figures, the chosen one first, so that the choice is visible."""
        from django.utils.html import format_html, format_html_join

        calibration = obj.calibration or {}
        candidates = calibration.get("candidates") or {}
        if not candidates:
            return self.ood(obj)
        kinds = list(calibration.get("ood_warned_per_kind") or {})
        order = sorted(candidates, key=lambda name: name != calibration.get("method"))
        header = format_html_join("", "<th>{}</th>", ((f"{kind} warned",) for kind in kinds))
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>", (
            (name + (" (chosen)" if name == calibration.get("method") else ""), _fmt(candidates[name]["threshold"]),
             _fmt(candidates[name]["report"]["auroc"], 3), _pct(candidates[name]["report"]["ood_warned"]),
             _pct(candidates[name]["report"]["id_warned"]),
             format_html_join("", "<td>{}</td>", ((_pct(candidates[name]["report"]["ood_warned_per_kind"].get(kind)),)
                                                   for kind in kinds)))
            for name in order))
        held, evaluation = calibration.get("in_distribution") or {}, calibration.get("evaluation_set") or {}
        return format_html(
            "<table><tr><th>score</th><th>threshold</th><th>AUROC</th><th>non-dermoscopic warned</th>"
            "<th>held-out library warned</th>{}</tr>{}</table><p>Target: at most {} of library-like queries "
            "warned. Held out: {} library images ({}); evaluation set: {} non-dermoscopic images {}. Calibrated {}.</p>",
            header, rows, _pct(calibration.get("target_false_warning")), held.get("n"), held.get("source", ""),
            evaluation.get("n"), evaluation.get("per_kind", {}), calibration.get("calibrated_at", "-"))

    def has_add_permission(self, request):
        return False  # builds are requested through the actions, never typed in

    @admin.action(description="Rebuild (full) with the same model (background)")
    def rebuild(self, request, queryset):
        self._request(request, queryset, incremental=False)

    @admin.action(description="Add new library cases to the active index (incremental, background)")
    def add_new_cases(self, request, queryset):
        self._request(request, queryset, incremental=True)

    def _request(self, request, queryset, *, incremental):
        from retrieval.services.index import index_build_request

        def request_one(index: IndexVersion) -> str:
            new = index_build_request(user=request.user, model_version=index.model_version,
                                      collection=index.collection, incremental=incremental)
            return f"Index build #{new.id} is {new.status}."

        self._each(request, queryset, request_one, ValueError)

    @admin.action(description="Serve queries with the selected finished version (roll back/forward)")
    def activate(self, request, queryset):
        from retrieval.services.index import index_activate

        def activate_one(index: IndexVersion) -> str:
            index_activate(index=index, user=request.user)
            return f"{index} now serves queries of {index.collection!r}."

        self._each(request, queryset, activate_one, ValueError)


    @admin.action(description="Remove unreferenced index versions (files and rows)", permissions=["delete"])
    def remove_unreferenced(self, request, queryset):
        """Of the selected versions, remove those ``cleanup_indexes`` would (the rule is in its help)."""
        from retrieval.services.cleanup import index_versions_remove

        result = index_versions_remove(indexes=queryset, user=request.user)
        if result.removed:
            self.message_user(request, f"Removed index version(s) {', '.join(f'#{i.id}' for i in result.removed)}: "
                                       f"{result.bytes} bytes in {result.files} files freed.", messages.SUCCESS)
        if result.kept:
            self.message_user(request, f"Kept {', '.join(f'#{i}' for i in result.kept)}: active, unfinished, "
                                       "referenced by a query or reader study, the base of an unfinished build "
                                       "or its collection's last finished index.", messages.WARNING)
        for problem in result.refused + result.errors:
            self.message_user(request, f"Files not deleted: {problem}", messages.ERROR)


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


class QueryNeighbourInline(admin.TabularInline):
    model = QueryNeighbour
    extra = 0
    can_delete = False
    readonly_fields = ("rank", "case", "similarity", "saliency")


@admin.register(Query)
class QueryAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "status", "k", "index_version", "best_similarity", "ood_score", "ood_method",
                    "created_at", "finished_at")
    list_filter = ("status",)
    readonly_fields = [f.name for f in Query._meta.fields]
    inlines = [QueryNeighbourInline]

    def has_add_permission(self, request):
        return False
