"""Training and evaluation transforms, in the style of torchvision's references/presets.py.

Geometry runs on PIL images (faster than on tensors on CPU); the evaluation geometry is
`images.resize_center_crop`, the very function serving uses, so both see the same pixels.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from dogbreed.data.images import resize_center_crop
from dogbreed.data.presets import IMAGENET_MEAN, IMAGENET_STD, eval_resize_size


def _to_normalised_tensor() -> list[v2.Transform]:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        v2.ToPureTensor(),
    ]


def train_transform(image_size: int, min_scale: float = 0.25) -> v2.Compose:
    """Random crop of 25-100% of the area (torchvision's 8% loses the dog too often on small
    datasets), horizontal flip, mild colour jitter, ImageNet normalisation."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            *_to_normalised_tensor(),
        ]
    )


class ResizeCenterCrop:
    """Shorter side to `resize_size` (bilinear, antialiased), centre crop `crop_size`."""

    def __init__(self, resize_size: int, crop_size: int) -> None:
        self.resize_size = resize_size
        self.crop_size = crop_size

    def __call__(self, image: Image.Image) -> Image.Image:
        return resize_center_crop(image, self.resize_size, self.crop_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize_size={self.resize_size}, crop_size={self.crop_size})"


def eval_transform(image_size: int) -> v2.Compose:
    """What serving does (see dogbreed.model.artifact): resize, centre crop, normalise."""
    return v2.Compose(
        [ResizeCenterCrop(eval_resize_size(image_size), image_size), *_to_normalised_tensor()]
    )
