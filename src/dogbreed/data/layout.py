"""Find and validate the dogImages layout: `train/ valid/ test/`, each `NNN.Breed_Name/*.jpg`.

Accepted forms (SageMaker channels included):
- one root holding `train/`, `valid/`, `test/` (the `training` channel, or `--data DIR`);
- separate folders for the three splits (channels `train`, `valid`, `test`).
Anything else fails early with a DataError that names what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dogbreed.data.images import IMAGE_EXTENSIONS, is_image_file

SPLITS = ("train", "valid", "test")
CLASS_FOLDER = re.compile(r"^(\d+)\.(.+)$")


class DataError(ValueError):
    """A dataset layout that cannot be used; the message names what is wrong."""


Sample = tuple[Path, int]  # (image path, class index)


@dataclass(frozen=True)
class Splits:
    """A validated dataset: where each split lives, the class names, the samples per split."""

    roots: dict[str, Path]  # split name -> folder holding the class folders
    classes: list[str]  # index = label; folder names without the `NNN.` prefix
    samples: dict[str, list[Sample]]  # split name -> sorted (path, label)

    def summary(self) -> str:
        counts = ", ".join(f"{s}={len(self.samples[s])}" for s in self.samples)
        return f"{len(self.classes)} classes, images: {counts}"


def class_name(folder: str) -> str:
    """`001.Affenpinscher` -> `Affenpinscher`; anything not `NNN.Name` is a DataError."""
    match = CLASS_FOLDER.match(folder)
    if not match:
        raise DataError(f"class folder {folder!r} does not match NNN.Name (e.g. 001.Affenpinscher)")
    return match.group(2)


def _class_folders(split: str, root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"split {split!r}: {root} is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"split {split!r}: {root} holds no class folders (NNN.Breed_Name)")
    bad = [p.name for p in folders if not CLASS_FOLDER.match(p.name)]
    if bad:
        raise DataError(
            f"split {split!r}: folder(s) not matching NNN.Name (e.g. 001.Affenpinscher) in "
            f"{root}: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}"
        )
    return folders


def scan_splits(roots: dict[str, Path]) -> Splits:
    """Validate the given split folders and list their images."""
    missing = [s for s in SPLITS if s not in roots]
    if missing:
        raise DataError(f"missing split(s): {', '.join(missing)}")
    folders = {s: _class_folders(s, Path(roots[s])) for s in SPLITS}
    reference = [p.name for p in folders["train"]]
    for split in SPLITS[1:]:
        names = [p.name for p in folders[split]]
        if names != reference:
            only_train = sorted(set(reference) - set(names))
            only_here = sorted(set(names) - set(reference))
            raise DataError(
                f"class folders of {split!r} differ from 'train': "
                f"only in train: {', '.join(only_train) or '-'}; "
                f"only in {split}: {', '.join(only_here) or '-'}"
            )
    classes = [class_name(n) for n in reference]
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise DataError(f"class name(s) used by more than one folder: {', '.join(duplicates)}")
    samples: dict[str, list[Sample]] = {}
    for split in SPLITS:
        samples[split] = []
        for label, folder in enumerate(folders[split]):
            images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
            if not images:
                raise DataError(
                    f"split {split!r}: class folder {folder} has no images "
                    f"({', '.join(IMAGE_EXTENSIONS)})"
                )
            samples[split].extend((p, label) for p in images)
    return Splits({s: Path(roots[s]) for s in SPLITS}, classes, samples)


def find_splits(root: Path) -> Splits:
    """A root holding `train/ valid/ test/`, or a single subfolder that does (`dogImages/`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    if not any((root / s).is_dir() for s in SPLITS):
        children = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(children) == 1 and all((children[0] / s).is_dir() for s in SPLITS):
            root = children[0]  # the zip unpacks to dogImages/{train,valid,test}
    present = [s for s in SPLITS if (root / s).is_dir()]
    if len(present) < len(SPLITS):
        missing = [s for s in SPLITS if s not in present]
        raise DataError(
            f"{root} must hold the folders train/ valid/ test/; missing: {', '.join(missing)}"
        )
    return scan_splits({s: root / s for s in SPLITS})


def find_channel_splits(channels: dict[str, Path]) -> Splits:
    """SageMaker channels: `training` (holding the three splits) or `train`, `valid`, `test`.

    `channels` maps channel name -> folder, e.g. {"training": Path("/opt/ml/input/data/training")}.
    """
    if "training" in channels:
        return find_splits(channels["training"])
    if all(s in channels for s in SPLITS):
        return scan_splits({s: channels[s] for s in SPLITS})
    raise DataError(
        "need the channel 'training' (holding train/ valid/ test/) or the channels "
        f"'train', 'valid' and 'test'; got: {', '.join(sorted(channels)) or 'none'}"
    )
