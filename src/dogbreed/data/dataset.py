"""A torch Dataset over one split that survives bad images.

Two lines of defence (the original "loaded" truncated files silently):
1. When a split is loaded, `check_headers` opens every file's headers (cheap: no pixels are
   decoded) and drops what is not an image or declares a bomb-sized picture; the count and
   the first few paths go to the log.
2. A file that passes the header check but fails to decode (truncated JPEG, corrupt data) is
   replaced at load time by the next readable sample of the split, so batches keep their
   size under any sampler (DistributedSampler included). Each failure is logged once per
   process and counted in `skipped`, which is shared with DataLoader worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch.utils.data

from dogbreed.data.images import ImageError, image_size, open_rgb
from dogbreed.data.layout import DataError, Sample, Splits
from dogbreed.data.presets import eval_resize_size
from dogbreed.data.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)
MAX_CONSECUTIVE_FAILURES = 20  # more bad files in a row than this means the data is broken


def check_headers(samples: Sequence[Sample], split: str = "") -> list[Sample]:
    """The samples whose headers read as a usable image; the others are logged and dropped."""
    good: list[Sample] = []
    bad: list[str] = []
    for path, label in samples:
        try:
            image_size(path)
        except ImageError as exc:
            bad.append(str(exc))
            continue
        good.append((path, label))
    if bad:
        log.warning(
            "skipped %d unreadable image(s) of %d in split %r: %s%s",
            len(bad),
            len(samples),
            split,
            "; ".join(bad[:5]),
            " ..." if len(bad) > 5 else "",
        )
    if samples and not good:
        raise DataError(f"split {split!r}: none of its {len(samples)} images can be read")
    return good


class ImageDataset(torch.utils.data.Dataset):
    """(transform(image), label) pairs over one split's (path, label) list."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Any], Any] | None = None,
        *,
        draft_size: int | None = None,
        check: bool = True,
        split: str = "",
    ) -> None:
        self.samples = check_headers(samples, split) if check else list(samples)
        if not self.samples:
            raise DataError(f"split {split!r} has no images")
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.draft_size = draft_size
        self.split = split
        # Shared memory: workers increment it, the main process reads it. A lock made by the
        # spawn context also works in forked workers; a fork-context one cannot be pickled
        # for spawn/forkserver workers.
        self._skipped = multiprocessing.get_context("spawn").Value("i", 0)
        self._logged: set[int] = set()

    @property
    def skipped(self) -> int:
        """Images that failed to decode and were replaced (each time one was asked for)."""
        return self._skipped.value

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(min(MAX_CONSECUTIVE_FAILURES, len(self.samples))):
            position = (index + attempt) % len(self.samples)
            path, label = self.samples[position]
            try:
                image = open_rgb(path, draft_size=self.draft_size)
            except ImageError as exc:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                if position not in self._logged:
                    self._logged.add(position)
                    log.warning("skipping unreadable image %s: %s", path, exc)
                continue
            return (self.transform(image) if self.transform else image), label
        raise DataError(
            f"split {self.split!r}: {MAX_CONSECUTIVE_FAILURES} unreadable images in a row "
            f"from {self.samples[index][0]}; is the dataset corrupt?"
        )


def build_datasets(splits: Splits, image_size: int) -> dict[str, ImageDataset]:
    """train (augmented), valid and test (evaluation transform) datasets of a scanned layout.

    JPEGs are draft-decoded to a shorter side of at least the evaluation resize size: big
    photos decode several times faster and no split needs more pixels than that.
    """
    draft = eval_resize_size(image_size)
    return {
        split: ImageDataset(
            samples,
            train_transform(image_size) if split == "train" else eval_transform(image_size),
            draft_size=draft,
            split=split,
        )
        for split, samples in splits.samples.items()
    }
