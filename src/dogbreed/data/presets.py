"""The input convention of the ImageNet-trained backbones, shared by training's transforms and
the model directory's metadata (which serving reads). Imports nothing."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize_size(image_size: int) -> int:
    """torchvision's convention: resize the shorter side to size / 0.875 (224 -> 256)."""
    return round(image_size / 0.875)
