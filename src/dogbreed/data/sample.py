"""Synthetic sample data in exactly the dogImages layout, for demos and tests.

Each class is a distinct combination of shape, colour and texture, drawn at a random position,
scale and rotation over a cluttered, noisy background. The first classes differ in all three
attributes, so a small CNN learns them within a few epochs; colour alone is unreliable (some
images are greyscale, some objects take another class's colour), so it is not trivial.
Every image gets its own random stream, seeded by (seed, split, class, index): the output is
deterministic and does not change when more classes or images are asked for.
"""

from __future__ import annotations

import colorsys
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The first 40 class folders of the real dogImages dataset; generic names after that.
BREEDS = (
    "Affenpinscher Afghan_hound Airedale_terrier Akita Alaskan_malamute American_eskimo_dog "
    "American_foxhound American_staffordshire_terrier American_water_spaniel "
    "Anatolian_shepherd_dog Australian_cattle_dog Australian_shepherd Australian_terrier "
    "Basenji Basset_hound Beagle Bearded_collie Beauceron Bedlington_terrier Belgian_malinois "
    "Belgian_sheepdog Belgian_tervuren Bernese_mountain_dog Bichon_frise "
    "Black_and_tan_coonhound Black_russian_terrier Bloodhound Bluetick_coonhound Border_collie "
    "Border_terrier Borzoi Boston_terrier Bouvier_des_flandres Boxer Boykin_spaniel Briard "
    "Brittany Brussels_griffon Bull_terrier Bulldog"
).split()
MAX_CLASSES = 999  # the folder prefix has three digits
SPLITS = ("train", "valid", "test")
HUES = (0.0, 0.08, 0.16, 0.33, 0.5, 0.64, 0.8)  # 7 colours
TEXTURES = ("solid", "stripes", "dots", "checker", "radial")  # 5 textures


def _regular(n: int, radii: tuple[float, ...] = (1.0,), y_scale: float = 1.0) -> np.ndarray:
    """Unit polygon with n vertices; alternating radii make stars."""
    angles = np.arange(n) * 2 * math.pi / n - math.pi / 2
    r = np.array([radii[i % len(radii)] for i in range(n)])
    return np.stack([r * np.cos(angles), y_scale * r * np.sin(angles)], axis=1)


_CROSS = np.array(
    [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
     (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    dtype=float,
)  # fmt: skip
# name -> (outer polygon, hole polygon or None); 8 shapes
SHAPES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "circle": (_regular(48), None),
    "square": (_regular(4) * 1.2, None),
    "triangle": (_regular(3) * 1.2, None),
    "star": (_regular(10, (1.0, 0.45)), None),
    "ring": (_regular(48), _regular(48) * 0.55),
    "cross": (_CROSS, None),
    "hexagon": (_regular(6), None),
    "ellipse": (_regular(48, y_scale=0.5), None),
}
_SHAPE_NAMES = tuple(SHAPES)


def breed_name(index: int) -> str:
    return BREEDS[index] if index < len(BREEDS) else f"Breed_{index + 1:03d}"


def class_attributes(index: int) -> tuple[str, float, str]:
    """(shape, hue, texture) of class `index`; distinct for the first 280 classes (8*7*5)."""
    return (
        _SHAPE_NAMES[index % len(_SHAPE_NAMES)],
        HUES[index % len(HUES)],
        TEXTURES[index % len(TEXTURES)],
    )


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val)) * 255.0


def _polygon_mask(
    size: tuple[int, int], shape: str, centre: tuple[float, float], radius: float, angle: float
) -> Image.Image:
    outer, hole = SHAPES[shape]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for poly, fill in ((outer, 255), (hole, 0)):
        if poly is not None:
            points = poly @ rot.T * radius + np.array(centre)
            draw.polygon([tuple(p) for p in points], fill=fill)
    return mask


def _texture(
    rng: np.random.Generator, kind: str, w: int, h: int, centre: tuple[float, float], radius: float
) -> np.ndarray:
    """Blend factor in [0, 1] per pixel (H, W): 0 = the main colour, 1 = its dark shade."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = (xx - centre[0]) * math.cos(theta) + (yy - centre[1]) * math.sin(theta)
    v = -(xx - centre[0]) * math.sin(theta) + (yy - centre[1]) * math.cos(theta)
    period = radius * rng.uniform(0.25, 0.45)
    if kind == "stripes":
        return (np.floor(u / period) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return (du**2 + dv**2 < (period * 0.3) ** 2).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "radial":
        return np.clip(np.hypot(u, v) / radius, 0, 1)
    return np.full((h, w), rng.uniform(0.0, 0.25), dtype=np.float32)


def render(class_index: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of class `class_index`."""
    shape, hue, texture = class_attributes(class_index)
    short = int(rng.integers(80, 401))
    aspect = rng.uniform(0.6, 1.7)
    w, h = (short, min(400, int(short * aspect))) if rng.random() < 0.5 else (
        min(400, int(short * aspect)), short)  # fmt: skip
    w, h = max(w, 80), max(h, 80)

    # Background: a muted gradient plus small muted clutter shapes and lines.
    c0 = _rgb(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.3, 0.95))
    c1 = _rgb(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.3, 0.95))
    ramp = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
    canvas = np.broadcast_to(c0 + (c1 - c0) * ramp, (h, w, 3)).copy()
    for _ in range(int(rng.integers(3, 9))):
        r = min(w, h) * rng.uniform(0.04, 0.12)
        mask = _polygon_mask(
            (w, h),
            _SHAPE_NAMES[int(rng.integers(len(_SHAPE_NAMES)))],
            (rng.uniform(0, w), rng.uniform(0, h)),
            r,
            rng.uniform(0, 2 * math.pi),
        )
        colour = _rgb(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.2, 1))
        canvas[np.asarray(mask) > 0] = colour
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        xy = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(2)]
        grey = int(rng.integers(0, 256))
        draw.line(xy, fill=(grey, grey, grey), width=int(rng.integers(1, 4)))

    # The object: the class's shape and texture; 10% of them take a random other colour.
    radius = min(w, h) * rng.uniform(0.28, 0.45)
    centre = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
    if rng.random() < 0.1:
        hue = HUES[int(rng.integers(len(HUES)))]
    main = _rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
    blend = _texture(rng, texture, w, h, centre, radius)[..., None]
    fill = main * (1 - blend) + main * 0.35 * blend
    mask = np.asarray(_polygon_mask((w, h), shape, centre, radius, rng.uniform(0, 2 * math.pi)))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = np.where(mask[..., None] > 0, fill, pixels)
    pixels += rng.normal(0, rng.uniform(2, 12), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image


def _save(image: Image.Image, stem: Path, rng: np.random.Generator) -> Path:
    """Encode like real-world photos: mostly JPEG, some PNG (some with alpha), L and CMYK."""
    kind = rng.random()
    if kind < 0.10:
        path = stem.with_suffix(".png")
        image.save(path)
    elif kind < 0.16:
        # RGBA PNG: the object opaque, the background partly or fully transparent.
        alpha = np.full(image.size[::-1], int(rng.integers(0, 200)), dtype=np.uint8)
        w, h = image.size
        alpha[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        path = stem.with_suffix(".png")
        Image.merge("RGBA", (*image.split(), Image.fromarray(alpha))).save(path)
    elif kind < 0.23:
        path = stem.with_suffix(".jpg")
        image.convert("L").save(path, quality=int(rng.integers(70, 95)))
    elif kind < 0.29:
        path = stem.with_suffix(".jpg")
        image.convert("CMYK").save(path, quality=int(rng.integers(70, 95)))
    elif kind < 0.35:
        # Stored rotated with an EXIF orientation tag (6: rotate 90 degrees clockwise to view),
        # as phone cameras do; readers must apply the tag to see the upright image.
        path = stem.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif.tobytes())
    else:
        path = stem.with_suffix(".jpg")
        image.save(path, quality=int(rng.integers(70, 96)))
    return path


def split_counts(per_class: int) -> dict[str, int]:
    """Images per class and split: `per_class` for train, a quarter (at least 3) for the others."""
    small = max(3, per_class // 4)
    return {"train": per_class, "valid": small, "test": small}


def generate_sample(
    out: Path, classes: int = 10, per_class: int = 30, seed: int = 0, *, overwrite: bool = False
) -> Path:
    """Write `OUT/{train,valid,test}/NNN.Breed_Name/*.jpg|png` and return `out`.

    The tree is built in a temporary folder next to `out` and renamed into place, so `out` is
    either complete or absent. An existing non-empty `out` is an error unless `overwrite`.
    """
    out = Path(out)
    if not 2 <= classes <= MAX_CLASSES:
        # One class is no classification task (the trainer needs at least two).
        raise ValueError(f"classes must be between 2 and {MAX_CLASSES}, got {classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (use overwrite / --force)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split_index, (split, count) in enumerate(split_counts(per_class).items()):
            for c in range(classes):
                name = breed_name(c)
                folder = tmp / split / f"{c + 1:03d}.{name}"
                folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_index, c, i])
                    _save(render(c, rng), folder / f"{name}_{i + 1:05d}", rng)
        if out.exists():  # only now: a failure above leaves the old data in place
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
