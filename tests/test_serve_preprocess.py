"""Serving's numpy/PIL preprocessing equals the trainer's torchvision eval transform, and the
serving stack runs with no torch installed (the CPU image has none)."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.data.images import is_image_file, open_rgb
from dogbreed.data.presets import IMAGENET_STD, eval_resize_size
from dogbreed.data.transforms import eval_transform
from dogbreed.model.artifact import ModelMetadata, read_metadata
from dogbreed.serve.errors import InvalidImage
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.preprocess import Preprocessor


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photo, unlike a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def cases(sample_data: Path) -> dict[str, bytes]:
    files = sorted(p for p in (sample_data / "test").rglob("*") if is_image_file(p))[:4]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rgba = photo(300, 220, 1).convert("RGBA")
    rgba.putalpha(128)
    return {
        **{f"sample {p.name}": p.read_bytes() for p in files},
        "photo 500x375 jpeg": encode(photo(500, 375), "JPEG", quality=90),
        "photo 1600x1200 jpeg": encode(photo(1600, 1200, 6), "JPEG", quality=90),
        "camera 4000x3000 jpeg": encode(photo(4000, 3000, 7), "JPEG", quality=85),
        "portrait exif-rotated jpeg": encode(photo(480, 320, 2), "JPEG", exif=exif),
        "rgba png": encode(rgba, "PNG"),
        "greyscale jpeg": encode(photo(400, 300, 3).convert("L"), "JPEG"),
        "palette png": encode(photo(256, 256, 4).convert("P"), "PNG"),
    }


# One 8-bit level in normalised units (1 / (255 * smallest std) = 0.0175): serving resizes only
# the box the centre crop keeps, with the same filter at the same source positions; float
# rounding of the box origin can tip a value over a .5, never more (measured here: 0.01-0.5% of
# values on landscape photos, up to ~20% on portraits, always exactly one level). A level is
# below the JPEG quantisation noise of any photo.
ONE_LEVEL = 1 / (255 * min(IMAGENET_STD)) + 1e-5


@pytest.mark.parametrize("image_size", [64, 224])
def test_preprocessing_matches_the_trainers_eval_transform(
    sample_data: Path, image_size: int
) -> None:
    meta = ModelMetadata("resnet18", 5, image_size, eval_resize_size(image_size))
    preprocess = Preprocessor(meta)
    reference = eval_transform(image_size)
    for name, data in cases(sample_data).items():
        ours = preprocess(data)
        # Same decoded pixels (serving decodes JPEGs at reduced size when they are large).
        theirs = reference(open_rgb(data, draft_size=meta.resize_size)).numpy()
        assert ours.shape == theirs.shape == (3, image_size, image_size), name
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=ONE_LEVEL, rtol=0, err_msg=name)


def test_reduced_size_decoding_stays_close_to_a_full_decode() -> None:
    """A 2000x1500 photo decoded at 1/8 scale for a 64 px model, 1/2 for 224: the model input
    barely moves (normalised units; one 8-bit step is about 0.017)."""
    data = encode(photo(2000, 1500, 5), "JPEG", quality=92)
    for image_size in (64, 224):
        meta = ModelMetadata("resnet18", 5, image_size, eval_resize_size(image_size))
        fast = Preprocessor(meta)(data)
        full = eval_transform(image_size)(open_rgb(data)).numpy()
        assert np.abs(fast - full).mean() < 0.03, image_size


def test_bad_bytes_raise_invalid_image() -> None:
    meta = ModelMetadata("resnet18", 5, 64, eval_resize_size(64))
    with pytest.raises(InvalidImage):
        Preprocessor(meta)(b"definitely not an image")


def test_extreme_aspect_ratio_is_refused_before_resizing() -> None:
    """An 88-byte 1x800 PNG would resize to 256x204800 (~208 MB): refused as InvalidImage."""
    meta = ModelMetadata("resnet18", 5, 224, eval_resize_size(224))
    sliver = encode(Image.new("RGB", (1, 800), (10, 20, 30)), "PNG")
    with pytest.raises(InvalidImage, match="aspect ratio too extreme"):
        Preprocessor(meta)(sliver)
    with pytest.raises(InvalidImage, match="aspect ratio too extreme"):
        Preprocessor(meta, max_pixels=10_000_000)(encode(Image.new("RGB", (200, 1), 0), "PNG"))
    # A merely long image (a 4:1 panorama) is still served.
    wide = Preprocessor(meta)(encode(photo(1600, 400), "JPEG"))
    assert wide.shape == (3, 224, 224)


def test_an_unexpected_decode_error_fails_only_its_image() -> None:
    def decode(data: bytes) -> np.ndarray:
        if data == b"bad":
            raise MemoryError("out of memory resizing")
        return np.zeros((4, 4, 3), np.uint8)

    predictor = Predictor.__new__(Predictor)  # decode_all needs only these two attributes
    predictor.preprocessor = types.SimpleNamespace(decode=decode)  # type: ignore[assignment]
    predictor._pool = None
    good, bad = predictor.decode_all([b"good", b"bad"])
    assert isinstance(good, np.ndarray)
    assert isinstance(bad, InvalidImage) and bad.status == 400
    assert "MemoryError" in bad.message


def test_serving_runs_without_torch(trained_model_dir: Path) -> None:
    """The CPU serving image has no torch: import every serving module and predict with torch
    made unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import io
from PIL import Image
import dogbreed.serve.cli, dogbreed.serve.gateway, dogbreed.serve.handler, dogbreed.serve.server
import dogbreed.serve.mms, dogbreed.serve.privileges, dogbreed.serve.user_code
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.settings import ServeSettings
buffer = io.BytesIO()
Image.new("RGB", (500, 375), (10, 200, 30)).save(buffer, "JPEG")
for precision in ("fp32", "auto"):  # auto: bf16 (OpenVINO) on a CPU that runs it fast
    p = Predictor({str(trained_model_dir)!r}, ServeSettings(backend="auto", precision=precision))
    pixels = p.decode_all([buffer.getvalue()] * 3)
    print(precision, p.logits(p.batch(pixels)).shape, p.backend.description)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    classes = read_metadata(trained_model_dir).num_classes
    assert f"fp32 (3, {classes}) onnxruntime" in result.stdout
    assert f"auto (3, {classes}) " in result.stdout


def test_onnx_and_torchscript_backends_agree(trained_model_dir: Path) -> None:
    from dogbreed.serve.predictor import Predictor
    from dogbreed.serve.settings import ServeSettings

    data = [encode(photo(500, 375, s), "JPEG") for s in range(4)]
    outputs = {}
    for backend in ("onnx", "torch"):
        settings = ServeSettings(backend=backend, threads=1, precision="fp32")
        predictor = Predictor(trained_model_dir, settings)
        outputs[backend] = predictor.logits(predictor.batch(predictor.decode_all(data)))
    np.testing.assert_allclose(outputs["onnx"], outputs["torch"], atol=1e-4)
