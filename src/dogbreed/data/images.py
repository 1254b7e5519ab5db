"""The one place where image bytes become an RGB picture (training and serving share it).

Torch-free: the CPU serving image imports this module.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 50 megapixels (about 7000 x 7000): far above any photo worth classifying, far below what
# would exhaust memory (decoded RGB is 3 bytes a pixel).
DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WHITE = (255, 255, 255, 255)
# What Pillow raises on corrupt data (truncation is OSError("image file is truncated ...")).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class ImageError(ValueError):
    """Bytes that are not a usable image; the message says why."""


def is_image_file(path: Path) -> bool:
    """By extension, case-insensitive; hidden files (`._x.jpg` from macOS) never count."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


Source = bytes | bytearray | memoryview | str | Path


def _open(fp: IO[bytes], name: str, max_pixels: int) -> Image.Image:
    """Open (headers only) and check the declared size before any pixel is decoded."""
    try:
        image = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image in a known format") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name} has a corrupt header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"{name} declares {width}x{height} = {width * height} pixels, more than the limit "
            f"of {max_pixels} (a decompression bomb or a needlessly large image)"
        )
    return image


@contextlib.contextmanager
def _stream(source: Source) -> Iterator[tuple[IO[bytes], str]]:
    """A readable stream over `source` and a name for messages; empty data is an ImageError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            raise ImageError("image data is empty")
        yield io.BytesIO(source), "image data"
        return
    name = str(source)
    try:
        fp = open(source, "rb")  # noqa: SIM115 -- closed below, after the caller is done
    except OSError as exc:
        raise ImageError(f"cannot read {name}: {exc.strerror or exc}") from None
    with fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise ImageError(f"{name} is empty")
        yield fp, name


def image_size(source: Source, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the headers alone: a cheap check that a file is a usable image."""
    with _stream(source) as (fp, name):
        return _open(fp, name, max_pixels or DEFAULT_MAX_PIXELS).size


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode == "F":
        # Pillow's own conversion clips 16-bit values at 255; scale them down instead.
        values = np.asarray(image, dtype=np.float32)
        if mode != "F":
            values = values / 257.0
        grey = np.clip(values, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        # Transparent pixels often hold arbitrary colours: composite on white, as viewers do.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(
    source: Source,
    draft_size: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode `source` (bytes or a file path) into an upright 8-bit RGB image.

    - EXIF orientation is applied; greyscale, palette, CMYK, 16-bit and alpha images (composited
      on white) all become RGB; animated images give their first frame.
    - `draft_size`: JPEGs much larger than that are decoded at a reduced scale (1/2, 1/4, 1/8)
      whose shorter side is still at least `draft_size`; much faster for big photos.
    - Images declaring more than `max_pixels` (default DEFAULT_MAX_PIXELS) are refused before
      decoding. Unreadable, truncated or bomb images raise ImageError.
    """
    with _stream(source) as (fp, name):
        image = _open(fp, name, max_pixels or DEFAULT_MAX_PIXELS)
        try:
            if draft_size and image.format == "JPEG":
                image.draft(None, (draft_size, draft_size))
            image.load()
            # A broken EXIF block leaves the pixels fine: keep them as stored.
            with contextlib.suppress(*_DECODE_ERRORS, KeyError, TypeError):
                ImageOps.exif_transpose(image, in_place=True)  # no copy when upright
            # The pixels are loaded: the image stays usable after the file closes.
            return _to_rgb(image)
        except _DECODE_ERRORS as exc:
            raise ImageError(f"cannot decode {name}: {exc}") from None


def resize_center_crop(image: Image.Image, resize_size: int, crop_size: int) -> Image.Image:
    """Evaluation geometry shared by training and serving; pixel-identical to torchvision's
    `Resize(resize_size, BILINEAR, antialias=True)` then `CenterCrop(crop_size)` on PIL images."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize_size * long / short)  # torchvision truncates, so do we
    size = (resize_size, new_long) if width <= height else (new_long, resize_size)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    if crop_size > width or crop_size > height:
        raise ValueError(f"crop {crop_size} is larger than the resized image {width}x{height}")
    left = round((width - crop_size) / 2.0)
    top = round((height - crop_size) / 2.0)
    return image.crop((left, top, left + crop_size, top + crop_size))
