"""Layout discovery and validation: good layouts scan, broken ones fail with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dogbreed.data.layout import (
    DataError,
    class_name,
    find_channel_splits,
    find_splits,
    scan_splits,
)


def make_tree(root: Path, spec: dict[str, dict[str, list[str]]]) -> Path:
    """spec: split -> class folder -> file names (contents are irrelevant to the layout)."""
    for split, classes in spec.items():
        for folder, names in classes.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                (root / split / folder / name).write_bytes(b"x")
    return root


def good_spec() -> dict[str, dict[str, list[str]]]:
    classes = {"002.Afghan_hound": ["a.jpg", "b.JPEG"], "001.Affenpinscher": ["c.png", "d.Jpg"]}
    return {s: {k: list(v) for k, v in classes.items()} for s in ("train", "valid", "test")}


def test_sample_data_scans(sample_data: Path) -> None:
    splits = find_splits(sample_data)
    assert splits.classes[:2] == ["Affenpinscher", "Afghan_hound"]
    assert len(splits.samples["train"]) == 5 * 24
    assert {label for _, label in splits.samples["test"]} == set(range(5))
    assert splits.summary() == "5 classes, images: train=120, valid=30, test=30"


def test_classes_in_sorted_folder_order_and_extensions_case_insensitive(tmp_path: Path) -> None:
    spec = good_spec()
    spec["train"]["001.Affenpinscher"] += ["notes.txt", ".DS_Store", "._c.jpg"]
    (tmp_path / "train" / ".hidden").mkdir(parents=True)
    splits = find_splits(make_tree(tmp_path, spec))
    assert splits.classes == ["Affenpinscher", "Afghan_hound"]
    names = [(p.name, label) for p, label in splits.samples["train"]]
    assert names == [("c.png", 0), ("d.Jpg", 0), ("a.jpg", 1), ("b.JPEG", 1)]
    assert splits.roots["valid"] == tmp_path / "valid"


def test_single_top_folder_as_in_the_zip(tmp_path: Path) -> None:
    make_tree(tmp_path / "dogImages", good_spec())
    assert find_splits(tmp_path).roots["train"] == tmp_path / "dogImages" / "train"


def test_channels(tmp_path: Path) -> None:
    make_tree(tmp_path / "training", good_spec())
    assert find_channel_splits({"training": tmp_path / "training"}).classes[0] == "Affenpinscher"
    channels = {s: tmp_path / "training" / s for s in ("train", "valid", "test")}
    assert len(find_channel_splits(channels).samples["valid"]) == 4
    with pytest.raises(DataError, match=r"channel 'training'.*got: train, valid"):
        find_channel_splits({k: channels[k] for k in ("train", "valid")})


def test_class_name() -> None:
    assert class_name("133.Yorkshire_terrier") == "Yorkshire_terrier"
    with pytest.raises(DataError, match=r"'Yorkshire' does not match NNN\.Name"):
        class_name("Yorkshire")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: shutil.rmtree(r / "valid"), "missing: valid"),
        (
            lambda r: shutil.rmtree(r / "test" / "002.Afghan_hound"),
            "only in train: 002.Afghan_hound",
        ),
        (
            lambda r: (r / "valid" / "003.Akita").mkdir(),
            r"differ from 'train': only in train: -; only in valid: 003.Akita",
        ),
        (lambda r: (r / "train" / "Akita").mkdir(), "not matching NNN.Name.*Akita"),
        (
            lambda r: [p.unlink() for p in (r / "test" / "001.Affenpinscher").iterdir()],
            "class folder .*001.Affenpinscher has no images",
        ),
        (
            lambda r: [shutil.rmtree(p) for p in (r / "train").iterdir()],
            "split 'train'.*holds no class folders",
        ),
    ],
)
def test_broken_layouts_fail_with_a_clear_message(
    tmp_path: Path, break_it: object, message: str
) -> None:
    root = make_tree(tmp_path, good_spec())
    break_it(root)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        find_splits(root)


def test_duplicate_class_names_and_missing_root(tmp_path: Path) -> None:
    spec = good_spec()
    for split in spec.values():
        split["003.Afghan_hound"] = ["x.jpg"]
    with pytest.raises(DataError, match="more than one folder: Afghan_hound"):
        find_splits(make_tree(tmp_path / "dup", spec))
    with pytest.raises(DataError, match="does not exist"):
        find_splits(tmp_path / "nowhere")
    with pytest.raises(DataError, match="missing split"):
        scan_splits({"train": tmp_path})
    with pytest.raises(DataError, match="not a directory"):
        scan_splits({s: tmp_path / s for s in ("train", "valid", "test")})
