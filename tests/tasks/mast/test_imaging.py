"""Preview validation and the paper's 512x512 preprocessing."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tasks.mast.imaging import ImageRejected, ImageSpec, normalize_preview
from tests.tasks.mast.conftest import encoded_image


def test_landscape_is_resized_and_centred_on_white():
    data, width, height = normalize_preview(encoded_image((1000, 500)), ImageSpec())
    assert (width, height) == (1000, 500)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (512, 512)
    top = image.getpixel((256, 10))
    middle = image.getpixel((256, 256))
    assert min(top) > 245  # white padding above the 512x256 picture
    assert middle[0] > 180 and middle[1] < 40


def test_small_image_is_upscaled_and_padding_colour_is_a_setting():
    data, _, _ = normalize_preview(encoded_image((64, 128), mode="L", fmt="PNG"), ImageSpec(padding=(0, 0, 0)))
    image = Image.open(io.BytesIO(data))
    assert image.size == (512, 512)
    assert max(image.getpixel((10, 256))) < 10  # black padding left of the 256x512 picture
    assert 100 < image.getpixel((256, 256))[0] < 160


def test_processing_is_deterministic():
    raw = encoded_image((300, 200))
    assert normalize_preview(raw, ImageSpec())[0] == normalize_preview(raw, ImageSpec())[0]


@pytest.mark.parametrize(
    "data, status",
    [
        (b"", "decode_error"),
        (b"not an image at all", "decode_error"),
        (encoded_image((200, 200))[:300], "decode_error"),  # truncated JPEG: header fine, pixels missing
        (encoded_image((8, 200)), "too_small"),
    ],
)
def test_bad_previews_are_rejected_with_a_status(data, status):
    with pytest.raises(ImageRejected) as info:
        normalize_preview(data, ImageSpec(min_side=16))
    assert info.value.status == status


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 100_000])  # above PIL's warning, and above its hard limit
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(ImageRejected) as info:
        normalize_preview(_png_header(side, side), ImageSpec(max_pixels=50_000_000))
    assert info.value.status == "too_large"


def test_pixel_limit_is_a_setting_checked_on_the_header():
    with pytest.raises(ImageRejected) as info:
        normalize_preview(encoded_image((2000, 1000)), ImageSpec(max_pixels=1_000_000))
    assert info.value.status == "too_large"
    assert (info.value.width, info.value.height) == (2000, 1000)


def test_large_jpeg_is_decoded_reduced_but_reports_its_original_size():
    big = encoded_image((4096, 2048))
    data, width, height = normalize_preview(big, ImageSpec())
    assert (width, height) == (4096, 2048)
    image = Image.open(io.BytesIO(data))
    assert image.size == (512, 512)
    assert image.getpixel((256, 256))[0] > 180 and min(image.getpixel((256, 20))) > 245
