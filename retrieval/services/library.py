"""Writes to the case library. Views, commands and tasks call these; they hold no logic."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from django.utils import timezone

from lesionsearch.audit import services as audit
from lesionsearch.jobs import services as jobs
from retrieval import splits
from retrieval.ham10000 import ImageFolder, MetadataRow, NotImported, RowError, read_metadata
from retrieval.images import ImageRejected, inspect_image
from retrieval.models import Case, LibraryCheck
from retrieval.tasks import LIBRARY_CHECK

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


def _store_content(prefix: str, sha256: str, extension: str, data: bytes) -> tuple[str, bool]:
    """Store bytes under a content-addressed name; return (name, whether we wrote it)."""
    name = f"{prefix}/{sha256[:2]}/{sha256}.{extension}"
    if default_storage.exists(name):
        return name, False
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # a concurrent writer stored the same content first
        default_storage.delete(saved)
    return name, True


@transaction.atomic
def case_create(*, collection: str, row: MetadataRow, image_data: bytes, mask_data: bytes | None = None) -> Case:
    """Store one diagnosed image and its row, all or nothing.

    Raises :class:`ImageRejected` for bad image or mask bytes and :class:`IntegrityError`
    when the image id (in this collection) or the image content is already in the library.
    Files written for a row that is not created are removed again.
    """
    info = inspect_image(image_data)
    written: list[str] = []
    try:
        image_name, wrote = _store_content("cases", info.sha256, info.extension, image_data)
        written += [image_name] if wrote else []
        mask_name = ""
        if mask_data is not None:
            mask_info = inspect_image(mask_data)
            if (mask_info.width, mask_info.height) != (info.width, info.height):
                raise ImageRejected(
                    f"mask is {mask_info.width}x{mask_info.height} but the image is {info.width}x{info.height}"
                )
            mask_name, wrote = _store_content("masks", mask_info.sha256, mask_info.extension, mask_data)
            written += [mask_name] if wrote else []
        with transaction.atomic():  # a savepoint, so a failed insert leaves the outer transaction usable
            case = Case.objects.create(
                collection=collection, image=image_name, mask=mask_name, sha256=info.sha256,
                width=info.width, height=info.height, image_id=row.image_id, lesion_id=row.lesion_id,
                dx=row.dx, dx_type=row.dx_type, age=row.age, sex=row.sex, localization=row.localization,
                source_dataset=row.dataset, patient_id=row.patient_id, attribution=row.attribution,
                copyright_license=row.copyright_license,
            )
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    return case


@dataclass
class ImportReport:
    total_rows: int = 0
    imported: int = 0
    already_present: int = 0
    errors: list[RowError] = field(default_factory=list)
    #: valid rows left out by rule: reason -> value -> rows (ISIC: no class, not dermoscopic)
    not_imported: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def skipped(self) -> int:
        return len(self.errors)

    @property
    def left_out(self) -> int:
        return sum(sum(counts.values()) for counts in self.not_imported.values())

    def take(self, parsed: object, progress: Progress | None) -> bool:
        """Count one parsed row (and tell ``progress``); False when there is nothing to import: a
        :class:`RowError` (recorded) or a :class:`NotImported` (counted under its reason)."""
        self.total_rows += 1
        if progress:
            progress(1)
        if isinstance(parsed, RowError):
            self.errors.append(parsed)
            return False
        if isinstance(parsed, NotImported):
            self.not_imported[parsed.reason][parsed.value] += 1
            return False
        return True


def duplicate_reason(image_data: bytes) -> str:
    """Why storing this image broke a uniqueness rule: the case that already has its content, if any."""
    sha = hashlib.sha256(image_data).hexdigest()
    other = Case.objects.filter(sha256=sha).values_list("collection", "image_id").first()
    if other:
        return f"same image content as {other[1]} in collection {other[0]!r}"
    return "image_id already imported"


def case_import_row(
    *, collection: str, row: MetadataRow, read: Callable[[], tuple[bytes, bytes | None]], report: ImportReport,
    present: set[str], read_error: str, reject_error: str,
) -> bool:
    """Read one row's image (and mask) with ``read`` and store it with :func:`case_create`, one
    transaction per row; what goes wrong becomes the row's error in ``report``.

    ``read_error`` prefixes an ``OSError`` of ``read`` ("cannot read image"), ``reject_error`` an
    :class:`ImageRejected` of ``read`` or ``case_create`` ("unreadable image"); a uniqueness
    conflict names the case that has the content already. Returns whether the case was created."""
    image_data = b""
    try:
        image_data, mask_data = read()
        case_create(collection=collection, row=row, image_data=image_data, mask_data=mask_data)
    except OSError as exc:
        report.errors.append(RowError(row.row, row.image_id, f"{read_error}: {exc.strerror or exc}"))
    except ImageRejected as exc:
        report.errors.append(RowError(row.row, row.image_id, f"{reject_error}: {exc}"))
    except IntegrityError:
        report.errors.append(RowError(row.row, row.image_id, duplicate_reason(image_data)))
    else:
        present.add(row.image_id)
        report.imported += 1
        return True
    return False


def library_import(
    *, directory: Path, metadata: Path, collection: str, masks: Path | None = None, progress: Progress | None = None
) -> ImportReport:
    """Import a folder in the HAM10000 layout into ``collection``, streaming row by row.

    Every row is validated; bad rows are reported with their line numbers and skipped, the
    others are imported each in its own transaction. Rows whose image id the collection
    already holds are counted as already present without reading their image, so a second
    run is quick and adds nothing. Raises ``MetadataError`` (nothing imported) when the CSV
    or folder as a whole is unusable.
    """
    folder = ImageFolder(directory, masks)
    return folder_rows_import(rows=read_metadata(metadata), folder=folder, collection=collection, progress=progress)


def folder_rows_import(
    *, rows: Iterable[MetadataRow | RowError | NotImported], folder: ImageFolder, collection: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Import parsed rows whose images (``<image_id>.jpg``, masks) are in ``folder``: the loop of
    :func:`library_import`, shared by the importers of other layouts (``import_isic``). Errors are
    reported and skipped, left-out rows counted, present image ids not read again."""
    present = set(Case.objects.filter(collection=collection).values_list("image_id", flat=True))
    report = ImportReport()
    for parsed in rows:
        if not report.take(parsed, progress):
            continue
        if parsed.image_id in present:
            report.already_present += 1
            continue
        image_path = folder.image_for(parsed.image_id)
        if image_path is None:
            report.errors.append(RowError(parsed.row, parsed.image_id, f"image file {parsed.image_id}.jpg not found"))
            continue
        mask_path = folder.mask_for(parsed.image_id)
        case_import_row(collection=collection, row=parsed, report=report, present=present,
                        read=partial(_read_image_and_mask, image_path, mask_path),
                        read_error="cannot read image", reject_error="unreadable image")
    return report


def _read_image_and_mask(image_path: Path, mask_path: Path | None) -> tuple[bytes, bytes | None]:
    return image_path.read_bytes(), mask_path.read_bytes() if mask_path else None


@dataclass
class SplitReport:
    counts: dict[str, dict[str, int]]
    changed: int
    lesions_in_two_splits: int
    patients_in_two_splits: int = 0


@transaction.atomic
def library_split(*, collection: str, seed: int, train: float, val: float, test: float) -> SplitReport:
    """Assign every case of ``collection`` to train/val/test, grouped by lesion (by patient where the
    source gives one: ``splits.group_keys``), stratified by class."""
    fractions = splits.validate_fractions(train, val, test)
    rows = list(Case.objects.filter(collection=collection).values_list("id", "lesion_id", "dx", "split", "patient_id"))
    if not rows:
        raise ValueError(f"collection {collection!r} has no cases")
    items = [splits.Item(pk, lesion_id, dx, patient_id) for pk, lesion_id, dx, _, patient_id in rows]
    assignment = splits.grouped_stratified_split(items, fractions, seed)
    changed = 0
    for split in splits.SPLITS:
        ids = [pk for pk, _, _, old, _ in rows if assignment[pk] == split and old != split]
        changed += len(ids)
        for start in range(0, len(ids), 500):
            Case.objects.filter(id__in=ids[start:start + 500]).update(split=split, updated_at=timezone.now())
    summary = splits.split_summary(items, assignment)
    lesion_splits: dict[str, set[str]] = defaultdict(set)
    patient_splits: dict[str, set[str]] = defaultdict(set)
    for pk, lesion_id, _, _, patient_id in rows:
        lesion_splits[lesion_id].add(assignment[pk])
        if patient_id:
            patient_splits[patient_id].add(assignment[pk])
    return SplitReport(
        counts={split: dict(counter) for split, counter in summary.items()},
        changed=changed,
        lesions_in_two_splits=sum(len(s) > 1 for s in lesion_splits.values()),
        patients_in_two_splits=sum(len(s) > 1 for s in patient_splits.values()),
    )


class WithdrawalError(ValueError):
    """A withdrawal or restore that cannot be done as asked (the message says why)."""


WITHDRAW_REASON_MAX = 255


def case_withdraw(*, case: Case, reason: str, user=None) -> Case:
    """Take a case out of the library: from the next search on, no backend (exact, FAISS, Qdrant)
    and no method returns it (the query path excludes the withdrawn cases inside the search), and
    later index builds, full or incremental, leave it out. Its row, files and the results that
    already showed it stay (those say it was withdrawn). ``reason`` is required and audited."""
    reason = " ".join((reason or "").split())
    if not reason:
        raise WithdrawalError("Say why the case is withdrawn (a reason is required).")
    if len(reason) > WITHDRAW_REASON_MAX:
        raise WithdrawalError(f"The reason is longer than {WITHDRAW_REASON_MAX} characters.")
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case.pk)
        if case.withdrawn_at is not None:
            raise WithdrawalError(f"Case {case.image_id} was already withdrawn on {case.withdrawn_at:%Y-%m-%d %H:%M} "
                                  f"UTC ({case.withdrawn_reason}).")
        case.withdrawn_at, case.withdrawn_reason = timezone.now(), reason
        case.save(update_fields=["withdrawn_at", "withdrawn_reason", "updated_at"])
        audit.record(audit.Action.CASE_WITHDRAW, user=user, obj=case,
                     detail={"collection": case.collection, "image_id": case.image_id, "reason": reason})
    logger.info("case %s (%s) withdrawn from the library", case.id, case.image_id)
    return case


def case_restore(*, case: Case, user=None) -> Case:
    """Put a withdrawn case back: searches of the index versions that hold it return it again at
    once; an index built while it was withdrawn lacks it until the next build."""
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case.pk)
        if case.withdrawn_at is None:
            raise WithdrawalError(f"Case {case.image_id} is not withdrawn.")
        reason = case.withdrawn_reason
        case.withdrawn_at, case.withdrawn_reason = None, ""
        case.save(update_fields=["withdrawn_at", "withdrawn_reason", "updated_at"])
        audit.record(audit.Action.CASE_RESTORE, user=user, obj=case,
                     detail={"collection": case.collection, "image_id": case.image_id, "was_withdrawn_for": reason})
    return case


def library_check_request(*, collection: str, user=None) -> LibraryCheck:
    """Create a pending integrity check and enqueue it once the row is committed."""
    check = LibraryCheck.objects.create(
        collection=collection, requested_by=user if user and user.is_authenticated else None,
        total=Case.objects.filter(collection=collection).count(),
    )
    jobs.enqueue_on_commit(LIBRARY_CHECK, check.id)
    return check


PROGRESS_EVERY = 50


def library_check_run(*, check_id: int, worker: str) -> bool:
    """Run a pending check: every case's file present, unchanged (sha256) and decodable.

    Claims the row with a conditional update (``lesionsearch.jobs``), so a redelivered task
    does nothing; returns whether this call ran the check.
    """
    check = jobs.claim(LIBRARY_CHECK, check_id, worker)
    if check is None:
        logger.info("library check %s already claimed or gone; nothing to do", check_id)
        return False
    problems: list[dict] = []
    checked = 0
    try:
        cases = Case.objects.filter(collection=check.collection).only("id", "image_id", "image", "sha256")
        total = cases.count()
        for case in cases.iterator(chunk_size=500):
            problem = _case_problem(case)
            if problem:
                problems.append({"case": case.id, "image_id": case.image_id, "problem": problem})
            checked += 1
            if checked % PROGRESS_EVERY == 0:
                jobs.progress(LIBRARY_CHECK, check_id, worker, done=checked, total=total)
    except Exception as exc:
        jobs.fail(LIBRARY_CHECK, check_id, f"The check stopped: {exc}", worker=worker, done=checked,
                  problems=problems)
        raise
    jobs.finish(LIBRARY_CHECK, check_id, worker, done=checked, total=total, problems=problems,
                message=f"{checked} images checked, {len(problems)} problem(s).")
    return True


def _case_problem(case: Case) -> str:
    try:
        with case.image.open("rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError):
        return "image file missing"
    if hashlib.sha256(data).hexdigest() != case.sha256:
        return "image file changed since import (sha256 differs)"
    try:
        inspect_image(data)
    except ImageRejected as exc:
        return f"image unreadable: {exc}"
    return ""


def store_content_file(prefix: str, sha256: str, extension: str, path: Path) -> tuple[str, bool]:
    """Store a file under a content-addressed name (as ``case_create`` stores images)."""
    with open(path, "rb") as handle:
        return _store_content(prefix, sha256, extension, handle.read())
