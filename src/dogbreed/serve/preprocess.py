"""Image bytes -> the model's input, with PIL and numpy only (the CPU image has no torch).

Geometry is `dogbreed.data.images.resize_center_crop`, the function the trainer's
`eval_transform` uses; normalisation is done here in numpy, fused into one multiply-add.
"""

from __future__ import annotations

import numpy as np

from dogbreed.data.images import DEFAULT_MAX_PIXELS, ImageError, open_rgb, resize_center_crop
from dogbreed.model.artifact import ModelMetadata
from dogbreed.serve.errors import InvalidImage


class Preprocessor:
    """Decode (reduced-size JPEG decoding when the photo is large), resize, crop, normalise."""

    def __init__(self, meta: ModelMetadata, max_pixels: int | None = None) -> None:
        if meta.interpolation != "bilinear":
            raise ValueError(f"unsupported interpolation {meta.interpolation!r} in metadata")
        self.image_size = meta.image_size
        self.resize_size = meta.resize_size
        self.max_pixels = max_pixels
        std = np.asarray(meta.std, dtype=np.float32)
        # (x / 255 - mean) / std  ==  x * scale + offset
        self.scale = 1.0 / (255.0 * std)
        self.offset = -np.asarray(meta.mean, dtype=np.float32) / std

    def decode(self, data: bytes) -> np.ndarray:
        """HWC uint8, already resized and cropped; bad bytes raise InvalidImage."""
        try:
            image = open_rgb(data, draft_size=self.resize_size, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise InvalidImage(str(exc)) from None
        # A tiny image with an extreme aspect ratio (1x800) passes the declared-size check but
        # resizes to a huge one (256x204800): refuse it before resizing.
        width, height = image.size
        short, long = min(width, height), max(width, height)
        limit = self.max_pixels or DEFAULT_MAX_PIXELS
        if short < 1 or self.resize_size * int(self.resize_size * long / short) > limit:
            raise InvalidImage(
                f"aspect ratio too extreme: a {width}x{height} image resized to "
                f"{self.resize_size} px on its shorter side exceeds {limit} pixels"
            )
        return np.asarray(resize_center_crop(image, self.resize_size, self.image_size))

    def normalise(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """HWC uint8 -> CHW float32, written into `out` (one slot of a batch) when given."""
        chw = pixels.transpose(2, 0, 1)
        if out is None:
            out = np.empty(chw.shape, dtype=np.float32)
        np.multiply(chw, self.scale[:, None, None], out=out, casting="unsafe")
        out += self.offset[:, None, None]
        return out

    def __call__(self, data: bytes) -> np.ndarray:
        return self.normalise(self.decode(data))

    def empty_batch(self, n: int) -> np.ndarray:
        return np.empty((n, 3, self.image_size, self.image_size), dtype=np.float32)
