"""inspect_image refuses what it cannot fully decode, with a reason a person can read."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from retrieval.images import ImageRejected, inspect_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "BMP"])
def test_accepts_supported_formats(fmt):
    info = inspect_image(encode(Image.new("RGB", (32, 24), (120, 80, 60)), fmt))
    assert (info.width, info.height) == (32, 24) and len(info.sha256) == 64


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "the file is empty"),
    (b"hello, I am text named .jpg", "not a readable image"),
    (encode(Image.new("RGB", (64, 64), "red"), "JPEG")[:200], "damaged or truncated"),
    (encode(Image.new("RGB", (64, 64), "red"), "GIF"), "unsupported image format 'GIF'"),
    (png_with_declared_size(100_000, 100_000), "decompression bomb"),
    (png_with_declared_size(9_000, 9_000), "too large"),
])
def test_refuses_bad_input_with_a_reason(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        inspect_image(data)


def test_refuses_oversize_files():
    with pytest.raises(ImageRejected, match="larger than 1 MB"):
        inspect_image(b"\xff" * (1024 * 1024 + 1), max_bytes=1024 * 1024)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_greyscale_keeps_its_high_byte_everywhere_images_are_read(tmp_path, mode):
    """Pillow's convert("RGB") clips 16-bit values above 255 to white; the models read the high byte."""
    from retrieval import loaders
    from retrieval.ml.features import as_rgb, resize_rgb

    ramp = (np.arange(64, dtype=np.int64)[None, :].repeat(8, axis=0) * 1024)  # 0 .. 64512
    image = Image.fromarray(ramp.astype(np.uint16 if mode == "I;16" else np.int32))
    assert image.mode == mode
    expected = (ramp >> 8).astype(np.uint8)
    rgb = np.asarray(as_rgb(image))
    assert rgb.shape == (8, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    path = tmp_path / ("deep.png" if mode == "I;16" else "deep.tif")
    image.save(path)
    loaded = loaders.load_rgb(str(path))
    assert np.array_equal(loaded[..., 1], expected)
    assert resize_rgb(image, 16).mean() == pytest.approx(expected.mean(), abs=2)
    eight_bit = Image.fromarray(np.full((4, 4), 200, np.int32))  # an 'I' image of 8-bit values stays as it is
    assert np.asarray(as_rgb(eight_bit)).max() == 200
