"""A corpus of hostile and odd uploads, built in code (no binary files in the repository).

Each :class:`Upload` is one file a clinician or an integration could send as a query image:
what it is called, its bytes (built on first use), and what the product must do with it:

* ``refuse=(status, fragment)``: a 4xx whose message contains the fragment, nothing stored;
* ``expect``: accepted; the stored query image, decoded as the worker decodes it, must show
  these upright RGB pixels (within ``tolerance`` mean absolute difference, for lossy formats)
  and carry the extension ``stored_ext``.

``REQUESTS`` are malformed requests rather than odd files (no file, two files, a JSON body...).
"""
from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from tests import dicom_files as dicom

#: What the query of a DICOM upload is listed under (``retrieval.services.queries.DICOM_NAME``).
DICOM_NAME = "DICOM image"
#: The upload limit the tests run under (MB), so that "oversize" needs only a little memory.
LIMIT_MB = 1
BOUNDARY = "----hostile-upload-boundary-7d1f"


# --- Pixels ------------------------------------------------------------------------------------
def mutate(seed: bytes, rng: random.Random, *, edits: int, keep: int = 0) -> bytes:
    """``seed`` after 1 to ``edits`` random edits: a byte flip (60 %), a cut of the tail (20 %) or an
    insertion of 1-16 random bytes (20 %). The first ``keep`` bytes are never cut or shifted (a
    DICOM file's preamble and magic, so that the decoder, not the sniffer, meets the damage)."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, edits)):
        roll = rng.random()
        if roll < 0.6 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif roll < 0.8:
            del data[rng.randrange(keep, len(data) + 1):]
        else:
            at = rng.randrange(keep, len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def pattern(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image whose orientation shows: a gradient, a red top-left and a blue bottom-right block."""
    return Image.fromarray(dicom.photo(width, height, seed, red=(230, 30, 30), blue=(30, 30, 230)), "RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG written chunk by chunk: lets a header declare what the data does not hold."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def zero_png(side: int) -> bytes:
    """A real, complete all-black greyscale PNG of side x side pixels: kilobytes on disk, side**2 bytes decoded."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_raw(side, side, colour_type=0, idat=body)


def png_48bit(image: Image.Image) -> bytes:
    """16 bits per channel RGB (Pillow cannot write it): each 8-bit value v stored as v * 257."""
    pixels = rgb(image).astype(">u2") * 257
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    return png_raw(image.width, image.height, bit_depth=16, colour_type=2, idat=zlib.compress(rows))


def grey16(image: Image.Image) -> Image.Image:
    """The image's 8-bit grey values v as a 16-bit greyscale image (v * 257: full 16-bit range)."""
    return Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))


def with_orientation(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG whose pixels are stored rotated, with the EXIF orientation that makes them upright."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(upright.transpose(stored), "JPEG", quality=95, exif=exif.tobytes())


def corrupt_exif(jpeg: bytes) -> bytes:
    """An APP1 Exif segment whose IFD claims an entry it does not hold, spliced after SOI."""
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\x05\x00" + b"\x12\x01\x03\x00"  # 5 entries announced, 1 half-written
    segment = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


def frames(image: Image.Image, fmt: str, count: int = 3) -> bytes:
    images = [image.rotate(90 * i) for i in range(count)]
    return encode(images[0], fmt, save_all=True, append_images=images[1:])


def _mpo(primary: Image.Image) -> bytes:
    buffer = io.BytesIO()
    primary.save(buffer, "MPO", quality=95, save_all=True, append_images=[Image.new("RGB", primary.size, (0, 0, 255))])
    return buffer.getvalue()


def flip_idat_byte(png: bytes) -> bytes:
    """Corrupt one byte of the first IDAT chunk's data (its CRC no longer matches)."""
    start = png.index(b"IDAT") + 4 + 10
    return png[:start] + bytes([png[start] ^ 0xFF]) + png[start + 1:]


def zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80">'
       b'<script>alert(document.cookie)</script><rect width="120" height="80" fill="#c33"/></svg>\n')
SCRIPT = b"<html><body><script>alert(document.cookie)</script></body></html>"
GIF_POLYGLOT = b"GIF89a/*\x00\x00\x80\x00\x00*/=1;" + SCRIPT  # parses as JavaScript and sniffs as HTML


# --- The corpus --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    id: str
    filename: str
    build: Callable[[], bytes]
    content_type: str = "image/jpeg"
    refuse: tuple[int, str] | None = None
    expect: Callable[[], np.ndarray] | None = None
    stored_ext: str = "png"
    tolerance: float = 2.0
    original_name: str | None = None  # what the query must record as the file's name (default: filename)


class Corpus:
    """The entries by id; bytes are built once per test session, on first use."""

    def __init__(self, uploads: list[Upload]):
        ids = [u.id for u in uploads]
        assert len(ids) == len(set(ids)), "duplicate corpus ids"
        self.uploads = {u.id: u for u in uploads}
        self._data: dict[str, bytes] = {}
        self._expected: dict[str, np.ndarray] = {}

    def data(self, entry_id: str) -> bytes:
        if entry_id not in self._data:
            self._data[entry_id] = self.uploads[entry_id].build()
        return self._data[entry_id]

    def expected(self, entry_id: str) -> np.ndarray:
        if entry_id not in self._expected:
            self._expected[entry_id] = self.uploads[entry_id].expect()
        return self._expected[entry_id]

    def ids(self, *, refused: bool) -> list[str]:
        return [u.id for u in self.uploads.values() if (u.refuse is not None) == refused]


def _jpeg(seed: int = 0, size=(96, 72)) -> bytes:
    return encode(pattern(*size, seed=seed), "JPEG", quality=95)


def _png(size=(96, 72)) -> bytes:
    return encode(pattern(*size), "PNG")


def _noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5) + 1
    return encode(Image.fromarray(np.random.default_rng(5).integers(0, 256, (side, side, 3), dtype=np.uint8)), "PNG",
                  compress_level=0)


def _just_over_limit() -> bytes:
    """A valid JPEG padded (after its end marker) to one byte over the limit."""
    jpeg = _jpeg(3)
    return jpeg + b"\x00" * (LIMIT_MB * 1024 * 1024 + 1 - len(jpeg))


def _palette_with_transparency() -> Image.Image:
    image = pattern(96, 72).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return image


def _rgba() -> Image.Image:
    image = pattern(96, 72).convert("RGBA")
    alpha = np.full((72, 96), 255, dtype=np.uint8)
    alpha[:, :20] = 0
    image.putalpha(Image.fromarray(alpha))
    return image


def _pattern_rgb(*size) -> Callable[[], np.ndarray]:
    return lambda: rgb(pattern(*size))


EMPTY, NOT_IMAGE, DAMAGED = "the file is empty", "not a readable image", "damaged or truncated"
BOMB, TOO_MANY_PIXELS = "decompression bomb", "too large"
SEVERAL = "holds 3 images"
TOO_BIG = f"larger than {LIMIT_MB} MB"

CORPUS = Corpus([
    # --- Not images at all
    Upload("zero-bytes", "empty.jpg", lambda: b"", refuse=(400, "empty")),
    Upload("text-named-jpg", "notes.jpg", lambda: b"Patient notes: lesion on the left forearm.\n" * 20,
           refuse=(400, NOT_IMAGE)),
    Upload("null-bytes", "zeros.jpg", lambda: b"\x00" * 4096, refuse=(400, NOT_IMAGE)),
    Upload("svg-with-script", "lesion.svg", lambda: SVG, "image/svg+xml", refuse=(400, NOT_IMAGE)),
    Upload("svg-named-png", "lesion.png", lambda: SVG, "image/png", refuse=(400, NOT_IMAGE)),
    Upload("html-named-jpg", "lesion.jpg", lambda: SCRIPT, refuse=(400, NOT_IMAGE)),
    Upload("gif-html-polyglot", "lesion.gif", lambda: GIF_POLYGLOT, "image/gif", refuse=(400, NOT_IMAGE)),
    Upload("pdf", "report.pdf", lambda: PDF, "application/pdf", refuse=(400, NOT_IMAGE)),
    Upload("zip-with-a-jpeg", "lesion.jpg", lambda: zip_of("lesion.jpg", _jpeg()), refuse=(400, NOT_IMAGE)),
    # --- Damaged images
    Upload("truncated-jpeg", "cut.jpg", lambda: _jpeg()[: len(_jpeg()) // 2], refuse=(400, DAMAGED)),
    Upload("jpeg-without-end-marker", "cut.jpg", lambda: _jpeg()[:-40], refuse=(400, DAMAGED)),
    Upload("truncated-png", "cut.png", lambda: _png()[: len(_png()) // 2], "image/png", refuse=(400, DAMAGED)),
    Upload("png-bad-crc", "crc.png", lambda: flip_idat_byte(_png()), "image/png", refuse=(400, DAMAGED)),
    Upload("png-header-0x0", "empty.png", lambda: png_raw(0, 0), "image/png", refuse=(400, NOT_IMAGE)),
    # --- Decompression bombs: a small file that declares (or decodes to) a huge image
    Upload("bomb-png-header-50000x50000", "bomb.png", lambda: png_raw(50_000, 50_000), "image/png",
           refuse=(400, BOMB)),
    Upload("bomb-png-header-10000x10000", "bomb.png", lambda: png_raw(10_000, 10_000), "image/png",
           refuse=(400, BOMB)),
    Upload("bomb-png-real-7000x7000", "bomb.png", lambda: zero_png(7000), "image/png", refuse=(400, TOO_MANY_PIXELS)),
    # --- Formats the product does not take, and several images in one file
    Upload("animated-gif", "lesion.gif", lambda: frames(pattern(64, 64), "GIF"), "image/gif", refuse=(400, "'GIF'")),
    Upload("ico", "favicon.ico", lambda: encode(pattern(64, 64), "ICO"), "image/x-icon", refuse=(400, "'ICO'")),
    Upload("multi-page-tiff", "pages.tif", lambda: frames(pattern(64, 64), "TIFF"), "image/tiff",
           refuse=(400, SEVERAL)),
    Upload("animated-png", "anim.png", lambda: frames(pattern(64, 64), "PNG"), "image/png", refuse=(400, SEVERAL)),
    Upload("animated-webp", "anim.webp", lambda: frames(pattern(64, 64), "WEBP"), "image/webp",
           refuse=(400, SEVERAL)),
    Upload("float32-tiff", "float.tif", lambda: encode(Image.fromarray(rgb(pattern(64, 48))[..., 0].astype(np.float32)
                                                                       / 255), "TIFF"), "image/tiff",
           refuse=(400, "floating-point")),
    # --- Too big (the tests run with QUERY_MAX_UPLOAD_MB = LIMIT_MB)
    Upload("oversize-png", "huge.png", lambda: _noise_png(LIMIT_MB * 1.5), "image/png", refuse=(413, TOO_BIG)),
    Upload("one-byte-over-limit", "padded.jpg", _just_over_limit, refuse=(413, TOO_BIG)),
    # --- Odd but valid: must give a correct result
    Upload("cmyk-jpeg", "cmyk.jpg", lambda: encode(pattern(96, 72).convert("CMYK"), "JPEG", quality=95),
           expect=_pattern_rgb(96, 72), stored_ext="jpg", tolerance=6),
    Upload("grayscale-jpeg", "grey.jpg", lambda: encode(pattern(96, 72).convert("L"), "JPEG", quality=95),
           expect=lambda: rgb(pattern(96, 72).convert("L")), stored_ext="jpg", tolerance=4),
    Upload("grayscale-alpha-png", "grey.png", lambda: encode(pattern(96, 72).convert("LA"), "PNG"), "image/png",
           expect=lambda: rgb(pattern(96, 72).convert("L"))),
    Upload("png-16bit-grey", "deep.png", lambda: encode(grey16(pattern(96, 72)), "PNG"), "image/png",
           expect=lambda: rgb(pattern(96, 72).convert("L"))),
    Upload("tiff-16bit-grey", "deep.tif", lambda: encode(grey16(pattern(96, 72)), "TIFF"), "image/tiff",
           expect=lambda: rgb(pattern(96, 72).convert("L"))),
    Upload("png-48bit-rgb", "deep-rgb.png", lambda: png_48bit(pattern(96, 72)), "image/png",
           expect=_pattern_rgb(96, 72)),
    Upload("palette-png-with-transparency", "palette.png", lambda: encode(_palette_with_transparency(), "PNG",
                                                                         transparency=0), "image/png",
           expect=lambda: rgb(_palette_with_transparency().convert("RGBA"))),
    Upload("rgba-png", "alpha.png", lambda: encode(_rgba(), "PNG"), "image/png", expect=lambda: rgb(_rgba())),
    Upload("bilevel-png", "bw.png", lambda: encode(pattern(96, 72).convert("1"), "PNG"), "image/png",
           expect=lambda: rgb(pattern(96, 72).convert("1"))),
    Upload("1x1-png", "dot.png", lambda: encode(pattern(1, 1), "PNG"), "image/png", expect=_pattern_rgb(1, 1)),
    Upload("20000x10-png", "strip.png", lambda: encode(pattern(20_000, 10), "PNG"), "image/png",
           expect=_pattern_rgb(20_000, 10)),
    Upload("png-named-jpg", "lesion.jpg", _png, expect=_pattern_rgb(96, 72)),
    Upload("jpeg-named-png", "lesion.png", _jpeg, "image/png", expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4),
    Upload("exif-orientation-6", "rotated6.jpg", lambda: with_orientation(pattern(96, 72), 6),
           expect=_pattern_rgb(96, 72), tolerance=4),
    Upload("exif-orientation-8", "rotated8.jpg", lambda: with_orientation(pattern(96, 72), 8),
           expect=_pattern_rgb(96, 72), tolerance=4),
    Upload("jpeg-corrupt-exif", "exif.jpg", lambda: corrupt_exif(_jpeg()), expect=_pattern_rgb(96, 72),
           stored_ext="jpg", tolerance=4),
    Upload("jpeg-trailing-garbage", "tail.jpg", lambda: _jpeg() + bytes(range(256)) * 8, expect=_pattern_rgb(96, 72),
           stored_ext="jpg", tolerance=4),
    Upload("jpeg-html-polyglot", "lesion.jpg", lambda: _jpeg() + SCRIPT, expect=_pattern_rgb(96, 72),
           stored_ext="jpg", tolerance=4),
    Upload("progressive-jpeg", "prog.jpg", lambda: encode(pattern(96, 72), "JPEG", quality=95, progressive=True),
           expect=_pattern_rgb(96, 72), stored_ext="jpg", tolerance=4),
    # A phone camera's MPO: the primary JPEG image first, then an extra view (here a blue one).
    Upload("mpo-phone-jpeg", "phone.jpg", lambda: _mpo(pattern(96, 72)), expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4),
    Upload("webp", "lesion.webp", lambda: encode(pattern(96, 72), "WEBP", lossless=True), "image/webp",
           expect=_pattern_rgb(96, 72)),
    Upload("bmp", "lesion.bmp", lambda: encode(pattern(96, 72), "BMP"), "image/bmp", expect=_pattern_rgb(96, 72)),
    Upload("rgb-tiff", "lesion.tif", lambda: encode(pattern(96, 72), "TIFF"), "image/tiff",
           expect=_pattern_rgb(96, 72)),
    Upload("content-type-lies", "lesion.jpg", _jpeg, "text/html", expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4),
    # --- Odd file names on a valid JPEG
    Upload("name-path-traversal", "../../x.jpg", _jpeg, expect=_pattern_rgb(96, 72), stored_ext="jpg", tolerance=4,
           original_name="x.jpg"),
    Upload("name-windows-path", "C:\\Users\\dr\\..\\lesion.jpg", _jpeg, expect=_pattern_rgb(96, 72),
           stored_ext="jpg", tolerance=4, original_name="lesion.jpg"),
    Upload("name-600-characters", "a" * 600 + ".jpg", _jpeg, expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4, original_name="a" * 251 + ".jpg"),
    # Over Django's limit on a multipart part's headers (1024 bytes): the form cannot be read.
    Upload("name-1000-characters", "a" * 1000 + ".jpg", _jpeg, refuse=(400, "header size")),
    Upload("name-unicode", "läsion-病变-🔬.jpg", _jpeg, expect=_pattern_rgb(96, 72), stored_ext="jpg", tolerance=4),
    Upload("name-control-characters", "le\x00si\x07on\r.jpg", _jpeg, expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4, original_name="lesion.jpg"),
    Upload("name-html", "<img src=x onerror=alert(1)>.jpg", _jpeg, expect=_pattern_rgb(96, 72), stored_ext="jpg",
           tolerance=4),
    Upload("name-without-extension", "lesion", _jpeg, "application/octet-stream", expect=_pattern_rgb(96, 72),
           stored_ext="jpg", tolerance=4),
    # --- DICOM (told by content, not name): stored as the PNG of its pixels, never under its file name
    Upload("dicom-rgb", "SENTINEL^PATIENT.dcm", lambda: dicom.rgb_file(rgb(pattern(96, 72))), "application/dicom",
           expect=_pattern_rgb(96, 72), original_name=DICOM_NAME),
    Upload("dicom-monochrome-16bit", "IM000001", lambda: dicom.monochrome_file(rgb(pattern(96, 72)), bits=16),
           "application/octet-stream", expect=lambda: rgb(Image.fromarray(dicom.grey(rgb(pattern(96, 72))))),
           original_name=DICOM_NAME),
    Upload("dicom-jpeg-baseline", "scan.dcm", lambda: dicom.jpeg_file(rgb(pattern(96, 72))), "application/dicom",
           expect=_pattern_rgb(96, 72), tolerance=4, original_name=DICOM_NAME),
    Upload("dicom-jpeg2000", "lesion.jpg", lambda: dicom.jpeg2000_file(rgb(pattern(96, 72))),
           expect=_pattern_rgb(96, 72), original_name=DICOM_NAME),
    Upload("dicom-multiframe", "cine.dcm", dicom.multiframe_file, "application/dicom", refuse=(400, "3 frames")),
    Upload("dicom-truncated", "cut.dcm", dicom.truncated_file, "application/dicom", refuse=(400, DAMAGED)),
    Upload("dicom-no-pixel-data", "empty.dcm", dicom.no_pixel_data_file, "application/dicom",
           refuse=(400, "no pixel data")),
    Upload("dicomdir", "DICOMDIR", dicom.dicomdir_file, "application/dicom", refuse=(400, "DICOMDIR")),
    Upload("dicom-unsupported-transfer-syntax", "video.dcm", dicom.unsupported_syntax_file, "application/dicom",
           refuse=(400, "transfer syntax")),
    Upload("dicom-declares-2gb", "big.dcm", dicom.declared_2gb_file, "application/dicom",
           refuse=(400, "declares 2,147,483,632 bytes")),
    Upload("dicom-ct-image", "ct.dcm", dicom.ct_file, "application/dicom", refuse=(400, "CT Image Storage")),
])


# --- Requests built by hand (full control over file names and parts) -----------------------
def part(name: str, data: bytes, *, filename: str | None = None, content_type: str | None = None) -> bytes:
    """One multipart/form-data part; ``filename`` is written as given (raw UTF-8, as browsers send it)."""
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + data + b"\r\n"


def multipart(*parts: bytes) -> tuple[bytes, str]:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def upload_body(entry_id: str) -> tuple[bytes, str]:
    upload = CORPUS.uploads[entry_id]
    return multipart(part("image", CORPUS.data(entry_id), filename=upload.filename,
                          content_type=upload.content_type), part("k", b"6"))


@dataclass(frozen=True)
class BadRequest:
    """A malformed request: (body, content type), and the status and message fragment the search
    page and the API must answer with."""

    id: str
    body: Callable[[], tuple[bytes, str]]
    web: tuple[int, str]
    api: tuple[int, str]


NO_FILE_WEB = "Choose a dermoscopic image to upload."
ONE_IMAGE = "one image"
REQUESTS = [
    BadRequest("file-part-without-filename", lambda: multipart(part("image", _jpeg(), filename="")),
               (400, NO_FILE_WEB), (400, "image: ")),
    BadRequest("image-sent-as-text-field", lambda: multipart(part("image", b"lesion.jpg")),
               (400, NO_FILE_WEB), (400, "image: ")),
    BadRequest("missing-image-field", lambda: multipart(part("k", b"6"), part("photo", _jpeg(), filename="a.jpg")),
               (400, NO_FILE_WEB), (400, "image: ")),
    BadRequest("two-files-in-image-field", lambda: multipart(part("image", _jpeg(1), filename="a.jpg"),
                                                             part("image", _jpeg(2), filename="b.jpg")),
               (400, ONE_IMAGE), (400, ONE_IMAGE)),
    BadRequest("empty-multipart", lambda: multipart(), (400, NO_FILE_WEB), (400, "image: ")),
    BadRequest("json-body", lambda: (b'{"image": "data:image/jpeg;base64,/9j/4AAQ", "k": 6}', "application/json"),
               (400, NO_FILE_WEB), (415, "application/json")),
    BadRequest("urlencoded-body", lambda: (b"image=lesion.jpg&k=6", "application/x-www-form-urlencoded"),
               (400, NO_FILE_WEB), (400, "image: ")),
    BadRequest("multipart-without-boundary", lambda: (_jpeg(), "multipart/form-data"),
               (400, "boundary"), (400, "boundary")),
    BadRequest("multipart-cut-short", lambda: (upload_body_for(_jpeg())[0][:300], upload_body_for(_jpeg())[1]),
               (400, NO_FILE_WEB), (400, "image: ")),
]


def upload_body_for(data: bytes, filename: str = "lesion.jpg") -> tuple[bytes, str]:
    return multipart(part("image", data, filename=filename, content_type="image/jpeg"))
