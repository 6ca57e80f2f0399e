"""retrieval.dicom: DICOM bytes -> RGB pixels and the whitelisted acquisition attributes, or a clear refusal."""
from __future__ import annotations

import logging
import tracemalloc
import warnings

import numpy as np
import pytest

from retrieval import dicom as d
from retrieval.api.serializers import QueryAcquisitionSerializer
from retrieval.views import ACQUISITION_LABELS
from tests import dicom_files as f
from tests.hostile import mutate

GREY = np.repeat(f.grey(f.photo())[..., None], 3, axis=2)


@pytest.mark.parametrize("build, expected, tolerance", [
    (f.rgb_file, f.photo(), 0),
    (lambda: f.rgb_file(sop_class=f.VL_PHOTOGRAPHIC, dermoscopy=False), f.photo(), 0),
    (f.jpeg_file, f.photo(), 2),
    (f.jpeg2000_file, f.photo(), 0),
    (f.monochrome_file, GREY, 0),
    (lambda: f.monochrome_file(bits=16), GREY, 0),
    (lambda: f.monochrome_file(inverted=True), GREY, 0),
], ids=["rgb", "vl-photographic", "jpeg-baseline-ybr", "jpeg2000", "monochrome2", "monochrome-16-bit", "monochrome1"])
def test_accepted_files_decode_to_the_upright_rgb_pixels(build, expected, tolerance):
    image = d.dicom_decode(build())
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == expected.shape
    assert np.abs(image.pixels.astype(int) - expected).mean() <= tolerance
    assert image.png().startswith(b"\x89PNG")


def test_only_whitelisted_attributes_are_kept_and_no_identifier():
    image = d.dicom_decode(f.jpeg_file())
    assert image.acquisition == {
        "sop_class": "Dermoscopic Photography Image", "transfer_syntax": "JPEG Baseline",
        "photometric_interpretation": "YBR_FULL_422", "rows": 72, "columns": 96, "bits_stored": 8,
        "modality": "DMS", "body_part_examined": "ARM", "laterality": "L", "light_source_polarization": "POLARIZED",
        "contact_method": "CONTACT", "immersion_media": "ULTRASOUND_GEL", "emitter_color_temperature_k": 5500.0,
        "optical_magnification_factor": 10.0, "anatomic_region": "Forearm",
    }
    assert set(image.acquisition) <= set(d.KEPT)
    assert not any(marker in repr(image.acquisition) for marker in f.SENTINEL_MARKERS)


def test_every_kept_attribute_is_documented_in_the_api_and_labelled_on_the_page():
    assert set(QueryAcquisitionSerializer().fields) == set(d.KEPT) == set(ACQUISITION_LABELS)


def test_a_coded_value_that_is_not_a_code_is_dropped_without_a_warning_or_log_that_shows_it(caplog):
    ds = f.dataset(f.photo())
    ds.BodyPartExamined = "arm of SENTINEL"  # free text where a code belongs (pydicom would warn with the value)
    data = f.save(ds)
    caplog.clear()  # building the file warned (pydicom checks values it is given); reading it must not
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "body_part_examined" not in d.dicom_decode(data).acquisition
    assert not [w for w in caught if "SENTINEL" in str(w.message)] and "SENTINEL" not in caplog.text


def test_dicom_is_told_by_content_not_by_name():
    assert d.is_dicom(f.rgb_file()) and not d.is_dicom(b"\xff\xd8\xff\xe0" + b"\x00" * 200) and not d.is_dicom(b"")


@pytest.mark.parametrize("build, fragment", [
    (f.multiframe_file, "holds 3 frames"),
    (f.truncated_file, "damaged or truncated"),
    (f.no_pixel_data_file, "no pixel data"),
    (f.dicomdir_file, "DICOMDIR"),
    (f.unsupported_syntax_file, "transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) is not "
                                "supported"),
    (f.declared_2gb_file, "declares 2,147,483,632 bytes but the file holds"),
    (f.ct_file, "CT Image Storage (1.2.840.10008.5.1.4.1.1.2) object; only VL Photographic Image and Dermoscopic"),
    (lambda: f.rgb_file()[:132] + b"\x00" * 64, "damaged or truncated"),
    (lambda: f.rgb_file()[:300], "no pixel data (or it is truncated before them)"),
    (lambda: b"\x00" * 128 + b"DICM" + b"not a dataset at all" * 10, "damaged or truncated"),
    (lambda: b"", "empty"),
], ids=["multiframe", "truncated", "no-pixel-data", "dicomdir", "mpeg2", "declares-2gb", "ct", "header-only",
        "cut-in-header", "garbage-after-magic", "empty"])
def test_malformed_or_unsupported_files_are_refused_with_a_clear_message(build, fragment):
    with pytest.raises(d.DicomRejected) as refused:
        d.dicom_decode(build())
    assert fragment in str(refused.value)
    assert not any(marker in str(refused.value) for marker in f.SENTINEL_MARKERS)


def test_a_declared_2gb_length_allocates_nothing_like_it():
    data = f.declared_2gb_file()
    tracemalloc.start()
    try:
        with pytest.raises(d.DicomRejected):
            d.dicom_decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_the_size_and_pixel_limits_apply():
    with pytest.raises(d.DicomRejected, match="larger than 0 MB"):
        d.dicom_decode(f.rgb_file(), max_bytes=1000)
    with pytest.raises(d.DicomRejected, match=r"too large \(96x72 pixels; at most 1,000\)"):
        d.dicom_decode(f.rgb_file(), max_pixels=1000)


def test_signed_pixels_are_refused():
    ds = f.dataset(f.grey(f.photo()))
    ds.PixelRepresentation = 1
    with pytest.raises(d.DicomRejected, match="signed pixel values"):
        d.dicom_decode(f.save(ds))


def test_mutated_dicom_files_are_refused_with_a_reason_or_decoded_to_pixels():
    """Byte flips, cuts and insertions in valid files of every encoding: only DicomRejected, or RGB pixels."""
    import random

    seeds = [f.rgb_file(), f.jpeg_file(), f.jpeg2000_file(), f.monochrome_file(bits=16), f.monochrome_file(inverted=True)]
    rng = random.Random(11)
    outcomes = {"refused": 0, "decoded": 0}
    for _ in range(1500):
        data = mutate(rng.choice(seeds), rng, edits=4, keep=d.PREAMBLE_LENGTH + len(d.MAGIC))
        try:
            image = d.dicom_decode(data)
        except d.DicomRejected as exc:
            assert str(exc)
            outcomes["refused"] += 1
            continue
        assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 3 and image.pixels.shape[2] == 3
        assert image.png().startswith(b"\x89PNG")
        outcomes["decoded"] += 1
    assert outcomes["refused"] > 200 and outcomes["decoded"] > 200, outcomes
