"""The robust Dataset and the train/eval transforms."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2

from dogbreed.data.dataset import ImageDataset, build_datasets, check_headers
from dogbreed.data.images import open_rgb
from dogbreed.data.layout import DataError, find_splits
from dogbreed.data.presets import IMAGENET_MEAN, IMAGENET_STD, eval_resize_size
from dogbreed.data.transforms import eval_transform, train_transform


@pytest.fixture()
def damaged(sample_data: Path, tmp_path: Path) -> Path:
    """A copy of the sample data with a truncated JPEG, a text file posing as a JPEG and an
    empty PNG in train/001."""
    root = Path(shutil.copytree(sample_data, tmp_path / "damaged"))
    folder = root / "train" / "001.Affenpinscher"
    jpeg = folder / "Affenpinscher_00001.jpg"
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    (folder / "zz_fake.jpg").write_text("<html>not found</html>")
    (folder / "zz_empty.png").write_bytes(b"")
    return root


def test_bad_files_are_dropped_at_scan_and_replaced_at_load(
    damaged: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = find_splits(damaged).samples["train"]
    assert len(samples) == 5 * 24 + 2
    with caplog.at_level(logging.WARNING, "dogbreed.data.dataset"):
        dataset = ImageDataset(samples, split="train")
    assert "skipped 2 unreadable image(s) of 122 in split 'train'" in caplog.text
    assert len(dataset) == 120  # the truncated JPEG has a good header: caught at load time
    truncated = next(
        i for i, (p, _) in enumerate(dataset.samples) if p.name == "Affenpinscher_00001.jpg"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, "dogbreed.data.dataset"):
        images = [dataset[i] for i in range(len(dataset))]
    assert all(img.mode == "RGB" for img, _ in images)
    assert dataset.skipped == 1
    assert "skipping unreadable image" in caplog.text and "truncated" in caplog.text
    # The replacement is the next sample, so the batch keeps its size.
    assert images[truncated][1] == dataset.samples[truncated + 1][1]


def test_skipped_count_is_shared_with_worker_processes(damaged: Path) -> None:
    splits = find_splits(damaged)
    dataset = build_datasets(splits, 32)["train"]
    loader = DataLoader(dataset, batch_size=32, num_workers=2, shuffle=False)
    seen = 0
    for images, labels in loader:
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
        seen += labels.numel()
    assert seen == 120
    assert dataset.skipped == 1


def test_distributed_sampler_splits_the_data(sample_data: Path) -> None:
    dataset = build_datasets(find_splits(sample_data), 32)["valid"]
    parts = [
        list(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=1))
        for r in range(2)
    ]
    assert sorted(parts[0] + parts[1]) == list(range(len(dataset)))
    batch = next(iter(DataLoader(dataset, batch_size=4, sampler=parts[0])))
    assert batch[0].shape == (4, 3, 32, 32)


def test_all_unreadable_or_too_many_in_a_row(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_text("nope")
    with pytest.raises(DataError, match="none of its 1 images can be read"):
        ImageDataset([(bad, 0)], split="valid")
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    truncated = data[: len(data) // 2]
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"t{i}.jpg")
        paths[-1].write_bytes(truncated)
    dataset = ImageDataset([(p, 0) for p in paths], split="train")
    with pytest.raises(DataError, match="unreadable images in a row"):
        dataset[0]


def test_eval_transform_matches_the_serving_contract(sample_data: Path) -> None:
    """artifact.py: resize the shorter side to resize_size (bilinear), centre crop, scale to
    [0, 1], normalise, CHW float32 -- computed here independently with numpy."""
    path = sorted((sample_data / "test").rglob("*.jpg"))[0]
    image = open_rgb(path)
    tensor = eval_transform(64)(image)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    reference = v2.CenterCrop(64)(v2.Resize(eval_resize_size(64), antialias=True)(image))
    expected = (np.asarray(reference, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(tensor.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_train_transform_is_random_and_normalised(sample_data: Path) -> None:
    image = open_rgb(sorted((sample_data / "train").rglob("*.jpg"))[0])
    transform = train_transform(48)
    torch.manual_seed(0)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 48, 48)
    assert not torch.equal(a, b)
    assert float(a.min()) > -3 and float(a.max()) < 3  # normalised, not [0, 255]


def test_check_headers_keeps_order(sample_data: Path) -> None:
    samples = find_splits(sample_data).samples["test"]
    assert check_headers(samples, "test") == samples


def test_skipped_count_with_spawned_workers(damaged: Path) -> None:
    # forkserver is Python 3.14's default on Linux; spawn has the same pickling rules.
    samples = find_splits(damaged).samples["train"][:3]  # the truncated JPEG comes first
    dataset = ImageDataset(samples, eval_transform(32), split="train")
    loader = DataLoader(dataset, batch_size=3, num_workers=1, multiprocessing_context="spawn")
    assert [labels.tolist() for _, labels in loader] == [[0, 0, 0]]
    assert dataset.skipped == 1
