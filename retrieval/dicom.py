"""Reading untrusted DICOM files: pixels and a whitelist of acquisition attributes. No database.

A query or library image may come as a DICOM file of the **VL Photographic Image** IOD (SOP
Class 1.2.840.10008.5.1.4.1.1.77.1.4) or the **Dermoscopic Photography Image** IOD
(1.2.840.10008.5.1.4.1.1.77.1.7, DICOM Supplement 221; its Dermoscopic Image Module, PS3.3
C.8.12.13, https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.8.12.13.html,
holds the light source's polarisation, contact method, immersion media and optical magnification).
:func:`dicom_decode` returns the image as upright 8-bit RGB pixels and the attributes listed in
:data:`KEPT`, nothing else: the patient's, study's and institution's identifiers are never read
into a value (pydicom converts an element only when it is accessed), so they cannot reach a row,
a file, a log line or an answer. Anything else gets :class:`DicomRejected` with a plain message.
"""
from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from retrieval.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageRejected

#: The 128-byte preamble, then the magic: how a DICOM file (PS3.10) is told from an image.
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"
SOP_CLASSES = {VL_PHOTOGRAPHIC: "VL Photographic Image", DERMOSCOPIC_PHOTOGRAPHY: "Dermoscopic Photography Image"}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR

#: Transfer syntaxes decoded with pydicom and the pinned pylibjpeg codecs. Deflate is left out
#: (a few kilobytes can inflate to gigabytes before any size is known), and so are video and RLE.
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
UNDEFINED_LENGTH = 0xFFFFFFFF
#: What pydicom raises for a damaged element when its value is converted on access.
HEADER_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, OverflowError,
                 EOFError, struct.error)

#: The attributes kept, by DICOM keyword -> the key they are stored under. A whitelist: what is
#: not named here is never read. None of them identifies the patient; each says how the image
#: was taken or what it shows (the body site), which is what matters when comparing images.
CODED = {  # CS values: short upper-case codes, kept only when they look like one
    "Modality": "modality",
    "BodyPartExamined": "body_part_examined",
    "Laterality": "laterality",
    "ImageLaterality": "image_laterality",
    "LightSourcePolarization": "light_source_polarization",  # (0016,1001) POLARIZED / NON_POLARIZED
    "ContactMethod": "contact_method",  # (0016,1003) CONTACT / NON_CONTACT
    "ImmersionMedia": "immersion_media",  # (0016,1004) ULTRASOUND_GEL, ALCOHOL, WATER, MINERAL_OIL, PLASTIC_CAP
    "PartialView": "partial_view",  # (0028,1350) YES / NO
}
NUMERIC = {  # DS values
    "EmitterColorTemperature": "emitter_color_temperature_k",  # (0016,1002) kelvin
    "OpticalMagnificationFactor": "optical_magnification_factor",  # (0016,1005) times
}
CODE_SEQUENCES = {  # a code sequence's first item's Code Meaning
    "AnatomicRegionSequence": "anatomic_region",
    "PrimaryAnatomicStructureSequence": "primary_anatomic_structure",
}
#: Every key an acquisition dict can hold (the API documents them).
KEPT = ("sop_class", "transfer_syntax", "photometric_interpretation", "rows", "columns", "bits_stored",
        *CODED.values(), *NUMERIC.values(), *CODE_SEQUENCES.values())
_CODE_STRING = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_MEANING_LENGTH = 64


class DicomRejected(ImageRejected):
    """The bytes are a DICOM file we do not accept; the message says why in plain words."""


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray  # height x width x 3, uint8, RGB
    acquisition: dict  # KEPT keys only, those the file has

    def png(self) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.pixels, "RGB").save(buffer, "PNG")
        return buffer.getvalue()


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM file (PS3.10: 128-byte preamble, then ``DICM``), whatever its name."""
    return data[PREAMBLE_LENGTH:PREAMBLE_LENGTH + len(MAGIC)] == MAGIC


def dicom_decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> DicomImage:
    """Decode a single-frame VL Photographic or Dermoscopic Photography image to RGB pixels.

    Raises :class:`DicomRejected` for a file that is not DICOM, too large, damaged or truncated,
    a DICOMDIR, another SOP class, several frames, no pixel data, an unsupported transfer syntax
    or photometric interpretation, signed or oversize pixels, or an element whose declared
    length runs past the end of the file (checked before any value is read, so a declared
    2 GB allocates nothing).
    """
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    if not data:
        raise DicomRejected("the file is empty")
    if len(data) > max_bytes:
        raise DicomRejected(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
    if not is_dicom(data):
        raise DicomRejected("the file is not a DICOM file")
    try:
        # Reading builds raw elements only (declared lengths are clamped to the bytes there are);
        # values are converted on access, and only the whitelisted ones are ever accessed.
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, BytesLengthException, OSError, *HEADER_ERRORS):
        raise DicomRejected("the DICOM file is damaged or truncated") from None
    try:
        return _decoded(dataset, len(data), max_pixels)
    except DicomRejected:
        raise
    except (BytesLengthException, *HEADER_ERRORS):  # a damaged element met while reading the attributes we check
        raise DicomRejected("the DICOM file is damaged or truncated") from None


def _decoded(dataset, size: int, max_pixels: int) -> DicomImage:
    _check_lengths(dataset, size)
    meta = dataset.file_meta
    if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in dataset:
        raise DicomRejected("the DICOM file is a DICOMDIR (the index of a DICOM disc), not an image; upload one of "
                            "the image files it lists")
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if not syntax:
        raise DicomRejected("the DICOM file is damaged or truncated (its header names no transfer syntax)")
    sop_class = str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    if sop_class not in SOP_CLASSES:
        raise DicomRejected(f"the DICOM file holds a {_uid_name(sop_class)} object; only VL Photographic Image and "
                            "Dermoscopic Photography Image objects are accepted")
    if "PixelData" not in dataset:
        raise DicomRejected("the DICOM file has no pixel data (or it is truncated before them)")
    if syntax not in TRANSFER_SYNTAXES:
        raise DicomRejected(f"the DICOM file's transfer syntax {_uid_name(syntax)} is not supported; use "
                            "uncompressed, JPEG, JPEG-LS or JPEG 2000 encoding")
    frames = _int(dataset, "NumberOfFrames", 1)
    if frames > 1:
        raise DicomRejected(f"the DICOM file holds {frames} frames; export the one image you mean as a single-frame "
                            "file")
    rows, columns = _int(dataset, "Rows", 0), _int(dataset, "Columns", 0)
    if rows < 1 or columns < 1:
        raise DicomRejected("the DICOM image has no pixels")
    if rows * columns > max_pixels:
        raise DicomRejected(f"the image is too large ({columns}x{rows} pixels; at most {max_pixels:,})")
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric not in PHOTOMETRIC:
        raise DicomRejected(f"the DICOM image's photometric interpretation {photometric[:16]!r} is not supported "
                            f"(use {', '.join(PHOTOMETRIC)})")
    if _int(dataset, "PixelRepresentation", 0) != 0:
        raise DicomRejected("the DICOM image has signed pixel values, which are not a photo's colours")
    bits_stored = _int(dataset, "BitsStored", 8)
    if not 1 <= bits_stored <= 16 or _int(dataset, "BitsAllocated", 8) not in (8, 16):
        raise DicomRejected("the DICOM image has more than 16 bits per sample; save it with 8 or 16")
    try:
        # pydicom converts YBR_* to RGB (as_rgb, its default) and checks the data against the header.
        array = dataset.pixel_array
    except Exception:  # noqa: BLE001 - the codecs raise anything (ValueError, RuntimeError, their own) on bad data
        raise DicomRejected("the DICOM file's pixel data is damaged or truncated") from None
    pixels = _rgb8(array, photometric, bits_stored)
    if pixels.shape[:2] != (rows, columns):
        raise DicomRejected("the DICOM file's pixel data does not match its declared size")
    return DicomImage(pixels, _acquisition(dataset, sop_class, syntax, photometric, rows, columns, bits_stored))


def _check_lengths(dataset, size: int) -> None:
    """Refuse an element (top level or file meta) that declares more bytes than the file holds."""
    from pydicom.dataelem import RawDataElement

    for group in (dataset.file_meta, dataset):
        for tag in list(group.keys()):
            element = group.get_item(tag)
            if isinstance(element, RawDataElement) and element.length != UNDEFINED_LENGTH:
                if element.value_tell + element.length > size:
                    raise DicomRejected(f"the DICOM file is damaged or truncated: an element declares "
                                        f"{element.length:,} bytes but the file holds {size:,}")


def _int(dataset, keyword: str, default: int) -> int:
    try:
        value = dataset.get(keyword, default)
        return int(default if value in (None, "") else value)
    except (TypeError, ValueError):
        raise DicomRejected(f"the DICOM file's {keyword} is not a number") from None


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return f"{name} ({uid})" if name and name != uid else f"unknown ({uid[:64] or 'none'})"


def _rgb8(array: np.ndarray, photometric: str, bits_stored: int) -> np.ndarray:
    if array.dtype != np.uint8:  # deeper samples: scale the stored range onto 0-255
        top = (1 << bits_stored) - 1
        array = (np.clip(array.astype(np.uint32), 0, top) * 255 // top).astype(np.uint8)
    if photometric == "MONOCHROME1":  # 0 is white
        array = 255 - array
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DicomRejected("the DICOM image is neither greyscale nor three-colour")
    return np.ascontiguousarray(array)


def _acquisition(dataset, sop_class: str, syntax: str, photometric: str, rows: int, columns: int,
                 bits_stored: int) -> dict:
    kept: dict = {"sop_class": SOP_CLASSES[sop_class], "transfer_syntax": TRANSFER_SYNTAXES[syntax],
                  "photometric_interpretation": photometric, "rows": rows, "columns": columns,
                  "bits_stored": bits_stored}
    for keyword, key in CODED.items():
        codes = [code for code in _values(dataset, keyword) if _CODE_STRING.match(code)]
        if codes:
            kept[key] = codes[0] if len(codes) == 1 else codes
    for keyword, key in NUMERIC.items():
        values = _values(dataset, keyword)
        try:
            number = float(values[0]) if values else math.nan
        except ValueError:
            continue
        if math.isfinite(number):
            kept[key] = number
    for keyword, key in CODE_SEQUENCES.items():
        try:
            items = dataset.get(keyword) or []
            meanings = _values(items[0], "CodeMeaning") if len(items) else []
        except Exception:  # noqa: BLE001 - a damaged optional sequence is dropped, the image is still usable
            continue
        meaning = "".join(ch for ch in "\\".join(meanings) if ch.isprintable()).strip()[:_MEANING_LENGTH]
        if meaning:
            kept[key] = meaning
    return kept


def _values(dataset, keyword: str) -> list[str]:
    """A whitelisted element's values as stripped strings ([] when absent).

    Read from the element's raw bytes, not through pydicom's conversion: that one warns and
    logs a value it finds invalid for its VR, with the value in the message (free text where a
    code belongs could be a name)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None or tag not in dataset:
        return []
    value = dataset.get_item(tag).value
    if value is None:
        return []
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:  # an element built in memory: a number, or a list of values
        text = "\\".join(map(str, value)) if hasattr(value, "__iter__") else str(value)
    return [part.strip(" \x00") for part in text.split("\\") if part.strip(" \x00")]
