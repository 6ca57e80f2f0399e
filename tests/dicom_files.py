"""DICOM test files, built in code with pydicom (no binary files in the repository).

Every file carries the patient's, study's and institution's identifiers set to sentinel values
(:data:`SENTINELS`), so a test can prove that none of them reaches a row, a file, a log or an
answer: search for :data:`SENTINEL_MARKERS`.
"""
from __future__ import annotations

import io
import struct

import numpy as np
from django.db import connection
from PIL import Image
from pydicom import encaps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless, ExplicitVRLittleEndian, JPEGBaseline8Bit, MPEG2MPML, generate_uid,
)

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

SENTINELS = {
    "PatientName": "SENTINEL^PATIENT",
    "PatientID": "SENTINEL-PID-4711",
    "PatientBirthDate": "19010203",
    "OtherPatientIDs": "SENTINEL-OTHER-ID",
    "PatientAddress": "SENTINEL Street 1",
    "AccessionNumber": "SENTINELACC",
    "InstitutionName": "SENTINEL Hospital",
    "InstitutionAddress": "SENTINEL Road 2",
    "ReferringPhysicianName": "SENTINEL^REFERRER",
    "OperatorsName": "SENTINEL^OPERATOR",
    "StudyID": "SENTINELSTUDY",
    "StudyDescription": "SENTINEL study description",
    "DeviceSerialNumber": "SENTINEL-SERIAL",
}
#: What must never be found anywhere: every sentinel contains one of these.
SENTINEL_MARKERS = ("SENTINEL", "19010203")


def photo(width: int = 96, height: int = 72, seed: int = 0, *, red: tuple[int, int, int] = (200, 40, 40),
          blue: tuple[int, int, int] = (40, 40, 200)) -> np.ndarray:
    """Smooth RGB pixels whose orientation shows (lossy codecs keep them close): a gradient, a ``red``
    top-left and a ``blue`` bottom-right block."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = (60 + 120 * x / max(width - 1, 1)).astype(np.uint8)
    pixels[..., 1] = (60 + 120 * y / max(height - 1, 1)).astype(np.uint8)
    pixels[..., 2] = (90 + seed * 7) % 256
    pixels[: height // 3, : width // 3] = red
    pixels[height - height // 3:, width - width // 3:] = blue
    return pixels


def grey(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels, "RGB").convert("L"), dtype=np.uint8)


def dataset(pixels: np.ndarray | None, *, sop_class: str = DERMOSCOPIC, syntax: str = ExplicitVRLittleEndian,
            photometric: str | None = None, bits: int = 8, frames: int = 1, uid: str | None = None,
            identifiers: bool = True, dermoscopy: bool = True) -> Dataset:
    """An uncompressed single image (``pixels``: HxWx3 RGB or HxW grey, 8 or 16 bit) with sentinels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DMS" if sop_class == DERMOSCOPIC else "XC"
    ds.BodyPartExamined = "ARM"
    ds.Laterality = "L"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "14975008", "SCT", "Forearm"
    ds.AnatomicRegionSequence = Sequence([region])
    if dermoscopy:
        ds.LightSourcePolarization = "POLARIZED"
        ds.ContactMethod = "CONTACT"
        ds.ImmersionMedia = ["ULTRASOUND_GEL"]
        ds.EmitterColorTemperature = "5500"
        ds.OpticalMagnificationFactor = "10"
    if identifiers:
        for keyword, value in SENTINELS.items():
            setattr(ds, keyword, value)
    if pixels is not None:
        colour = pixels.ndim == 3
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
        if colour:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated = 16 if bits > 8 else 8
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
        data = pixels.astype("<u2" if bits > 8 else np.uint8)
        if frames > 1:
            ds.NumberOfFrames = frames
            data = np.stack([data] * frames)
        ds.PixelData = data.tobytes()
    return ds


def save(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def rgb_file(pixels: np.ndarray | None = None, **options) -> bytes:
    return save(dataset(photo() if pixels is None else pixels, **options))


def monochrome_file(pixels: np.ndarray | None = None, *, bits: int = 8, inverted: bool = False, **options) -> bytes:
    """Greyscale from RGB pixels; 16-bit stores v * 257; MONOCHROME1 stores 255 - v (0 is white)."""
    values = grey(photo() if pixels is None else pixels).astype(np.uint16)
    if inverted:
        values = 255 - values
    if bits == 16:
        values = values * 257
    return save(dataset(values, bits=bits, photometric="MONOCHROME1" if inverted else "MONOCHROME2", **options))


def jpeg_file(pixels: np.ndarray | None = None, **options) -> bytes:
    """JPEG Baseline: a Pillow JPEG (YCbCr, 4:2:0) encapsulated as pydicom.encaps does."""
    pixels = photo() if pixels is None else pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=95)
    ds = dataset(pixels, syntax=JPEGBaseline8Bit, photometric="YBR_FULL_422", **options)
    ds.PixelData = encaps.encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return save(ds)


def jpeg2000_file(pixels: np.ndarray | None = None, **options) -> bytes:
    """JPEG 2000 lossless, encoded by pydicom with pylibjpeg-openjpeg."""
    ds = dataset(photo() if pixels is None else pixels, **options)
    ds.compress(JPEG2000Lossless)
    return save(ds)


def multiframe_file() -> bytes:
    return rgb_file(frames=3)


def truncated_file() -> bytes:
    whole = rgb_file()
    return whole[: len(whole) - 2000]


def no_pixel_data_file() -> bytes:
    return save(dataset(None))


def dicomdir_file() -> bytes:
    """A DICOMDIR: the directory of a DICOM disc, one patient record."""
    ds = dataset(None, sop_class=DICOMDIR_CLASS, dermoscopy=False)
    del ds.SOPClassUID
    ds.FileSetID = "DISC"
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    record.PatientName, record.PatientID = SENTINELS["PatientName"], SENTINELS["PatientID"]
    ds.DirectoryRecordSequence = Sequence([record])
    return save(ds)


def unsupported_syntax_file() -> bytes:
    """Declares MPEG-2 video (encapsulated bytes that are not a picture we decode)."""
    ds = dataset(photo(), syntax=MPEG2MPML)
    ds.PixelData = encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    return save(ds)


def ct_file() -> bytes:
    return rgb_file(grey(photo()), sop_class=CT_IMAGE)


def declared_2gb_file() -> bytes:
    """A complete file whose Pixel Data element declares 2 GB (the value is the real, small data)."""
    whole = rgb_file()
    at = whole.index(b"\xe0\x7f\x10\x00OB\x00\x00") if b"\xe0\x7f\x10\x00OB" in whole else whole.index(b"\xe0\x7f\x10\x00OW")
    return whole[: at + 8] + struct.pack("<I", 0x7FFFFFF0) + whole[at + 12:]


# --- Where an identifier could end up ---------------------------------------------------------
def database_text() -> str:
    """Every row of every table, as text."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the introspection
            parts += [repr(row) for row in cursor.fetchall()]
    assert len(parts) > 10  # the tables were read (users, groups, cases, ...)
    return "\n".join(parts)


def media_bytes(media_root) -> bytes:
    files = [path for path in media_root.rglob("*") if path.is_file()]
    assert files
    return b"\n".join(path.read_bytes() for path in files)


def assert_no_identifier(text: str | bytes, where: str, *extra: str) -> None:
    for marker in (*SENTINEL_MARKERS, *extra):
        needle = marker.encode() if isinstance(text, bytes) else marker
        assert needle.lower() not in text.lower(), f"{marker!r} found in {where}"
        if isinstance(text, bytes):  # also as UTF-16, as some formats write text
            assert marker.encode("utf-16-le") not in text, f"{marker!r} (UTF-16) found in {where}"
