"""Checking untrusted image bytes before anything is stored. Pillow only, no database."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

#: Formats accepted into the library and for queries, with the extension files are stored under.
#: MPO is a JPEG whose primary image comes first, followed by extra views (phone cameras write
#: it); the primary image is the photo, and browsers show it.
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp", "BMP": "bmp"}
DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6000 dermoscope photo fits; a decompression bomb does not
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Pixel modes with no agreed mapping to 0-255 colours (TIFF float and 32-bit integer images).
UNSHOWABLE_MODES = {"F": "floating-point", "I": "32-bit integer"}


class ImageRejected(ValueError):
    """The bytes are not an image we accept; the message says why in plain words."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    extension: str
    width: int
    height: int
    sha256: str


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Validate image bytes fully (header, size limits, and a complete decode).

    Raises :class:`ImageRejected` for empty, oversize, unreadable, truncated, unsupported,
    multi-image (pages, animation frames), floating-point or decompression-bomb input.
    """
    if not data:
        raise ImageRejected("the file is empty")
    if len(data) > max_bytes:
        raise ImageRejected(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                if fmt not in FORMAT_EXTENSIONS:
                    raise ImageRejected(f"unsupported image format {fmt or 'unknown'!r}; use JPEG, PNG, TIFF, WebP or BMP")
                if width < 1 or height < 1:
                    raise ImageRejected("the image has no pixels")
                if width * height > max_pixels:
                    raise ImageRejected(f"the image is too large ({width}x{height} pixels; at most {max_pixels:,})")
                if probe.mode in UNSHOWABLE_MODES:
                    raise ImageRejected(f"the image has {UNSHOWABLE_MODES[probe.mode]} pixels, which are not a photo's "
                                        "colours; save it as an 8- or 16-bit image")
                try:
                    frames = getattr(probe, "n_frames", 1)
                except (EOFError, KeyError, TypeError) as exc:  # Pillow's errors for a damaged next page
                    raise ImageRejected(f"the image is damaged or truncated ({exc or type(exc).__name__})") from None
                if frames > 1 and fmt != "MPO":  # which page or frame was meant is a guess: refuse rather than pick one
                    raise ImageRejected(f"the file holds {frames} images (pages or animation frames); "
                                        "upload a single image")
                probe.verify()
            # verify() does not decode pixel data; a full load catches truncated files. A JPEG is
            # decoded at 1/8 scale (libjpeg's DCT scaling): every entropy-coded block is still
            # read and checked, so a truncated or corrupt scan fails as it would at full size, in
            # about half the time (the worker decodes it again for the network anyway).
            with Image.open(io.BytesIO(data)) as full:
                if fmt == "JPEG":
                    full.draft(full.mode, (max(1, width // 8), max(1, height // 8)))
                full.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("the image declares more pixels than allowed (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageRejected("the file is not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt data
        raise ImageRejected(f"the image is damaged or truncated ({exc})") from None
    return ImageInfo(fmt, FORMAT_EXTENSIONS[fmt], width, height, hashlib.sha256(data).hexdigest())
