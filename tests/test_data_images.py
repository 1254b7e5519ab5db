"""open_rgb on real encoded bytes: every mode becomes upright RGB, bad bytes raise ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    image_size,
    is_image_file,
    open_rgb,
    resize_center_crop,
)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def red_left_half(width: int = 120, height: int = 80) -> Image.Image:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_rgb_jpeg_from_bytes_and_path(tmp_path: Path) -> None:
    data = encode(red_left_half(), "JPEG", quality=95)
    path = tmp_path / "x.JPG"
    path.write_bytes(data)
    for source in (data, path, str(path), bytearray(data)):
        image = open_rgb(source)
        assert image.mode == "RGB" and image.size == (120, 80)
        r, _, b = image.getpixel((10, 40))
        assert r > 180 and b < 60


def test_cmyk_jpeg_keeps_its_colours() -> None:
    image = open_rgb(encode(red_left_half().convert("CMYK"), "JPEG", quality=95))
    assert image.mode == "RGB"
    left, right = np.asarray(image)[40, 10], np.asarray(image)[40, 110]
    assert left[0] > 150 and left[2] < 90  # still red, not inverted
    assert right[2] > 150 and right[0] < 90


def test_greyscale_and_palette() -> None:
    grey = open_rgb(encode(red_left_half().convert("L"), "JPEG"))
    pixel = grey.getpixel((10, 40))
    assert grey.mode == "RGB" and pixel[0] == pixel[1] == pixel[2]
    palette = open_rgb(encode(red_left_half().convert("P"), "GIF"))
    assert palette.mode == "RGB" and palette.getpixel((10, 40))[0] > 180


def test_alpha_is_composited_on_white() -> None:
    rgba = red_left_half().convert("RGBA")
    alpha = np.full((80, 120), 255, np.uint8)
    alpha[:, 60:] = 0  # the blue half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    image = open_rgb(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((110, 40)) == (255, 255, 255)
    assert image.getpixel((10, 40)) == (220, 20, 20)
    la = open_rgb(encode(Image.new("LA", (4, 4), (0, 0)), "PNG"))
    assert la.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.full((10, 10), 32768, np.uint16)  # mid-grey in 16 bits
    image = open_rgb(encode(Image.fromarray(values), "PNG"))
    assert image.mode == "RGB"
    assert 120 <= image.getpixel((0, 0))[0] <= 135


def test_exif_orientation_is_applied() -> None:
    upright = red_left_half()  # red on the left, 120 wide, 80 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    image = open_rgb(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (120, 80)
    assert image.getpixel((10, 40))[0] > 180  # red is back on the left


def test_draft_decodes_big_jpegs_smaller_but_not_below_the_size() -> None:
    data = encode(red_left_half(1600, 1200), "JPEG")
    assert open_rgb(data).size == (1600, 1200)
    small = open_rgb(data, draft_size=256)
    assert small.size == (400, 300)  # 1/4 scale: shorter side 300 >= 256; 1/8 would be 150
    assert open_rgb(data, draft_size=1000).size == (1600, 1200)
    # draft_size has no effect on PNGs (no reduced decoding)
    assert open_rgb(encode(red_left_half(), "PNG"), draft_size=10).size == (120, 80)


def test_truncated_jpeg_raises() -> None:
    data = encode(red_left_half(400, 300), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        open_rgb(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, "image"),  # a JPEG start, then nothing
    ],
)
def test_garbage_raises(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        open_rgb(data)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        open_rgb(tmp_path / "nope.jpg")


def test_bomb_is_refused_before_decoding() -> None:
    # 60000 x 60000 = 3.6 gigapixels declared, a few dozen bytes of data: refused from the
    # header alone (decoding would need over 10 GB).
    bomb = png_header_only(60_000, 60_000)
    with pytest.raises(ImageError, match="decompression bomb"):
        open_rgb(bomb)
    # Just over our own limit but under Pillow's: our check, not Pillow's, catches it.
    side = int(DEFAULT_MAX_PIXELS**0.5) + 10
    with pytest.raises(ImageError, match="more than the limit"):
        image_size(png_header_only(side, side))
    with pytest.raises(ImageError, match="more than the limit of 1000"):
        open_rgb(encode(red_left_half(), "PNG"), max_pixels=1000)


def test_image_size_reads_headers_only() -> None:
    assert image_size(png_header_only(300, 200)) == (300, 200)  # no valid pixel data needed


def test_is_image_file() -> None:
    assert is_image_file(Path("a/b.JPEG")) and is_image_file(Path("x.webp"))
    assert not is_image_file(Path("._b.jpg")) and not is_image_file(Path("notes.txt"))


def test_resize_center_crop_geometry() -> None:
    out = resize_center_crop(red_left_half(120, 80), 73, 64)
    assert out.size == (64, 64)
    assert resize_center_crop(red_left_half(80, 200), 73, 64).size == (64, 64)
    with pytest.raises(ValueError, match="larger"):
        resize_center_crop(red_left_half(), 32, 64)
