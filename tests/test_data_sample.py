"""The sample-data generator: layout, encodings, determinism."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from dogbreed.data.sample import breed_name, class_attributes, generate_sample, split_counts


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_counts_and_names(sample_data: Path) -> None:
    for split, count in split_counts(24).items():
        folders = sorted(p.name for p in (sample_data / split).iterdir())
        assert folders == [
            "001.Affenpinscher",
            "002.Afghan_hound",
            "003.Airedale_terrier",
            "004.Akita",
            "005.Alaskan_malamute",
        ]
        for folder in folders:
            assert len(list((sample_data / split / folder).iterdir())) == count
    assert split_counts(24) == {"train": 24, "valid": 6, "test": 6}
    assert breed_name(0) == "Affenpinscher" and breed_name(199) == "Breed_200"


def test_images_are_real_and_varied(sample_data: Path) -> None:
    modes: Counter[str] = Counter()
    sizes = set()
    rotated = 0
    for path in (p for p in sample_data.rglob("*") if p.is_file()):
        with Image.open(path) as image:
            image.load()  # really decodes
            modes[f"{image.format}/{image.mode}"] += 1
            sizes.add(image.size)
            rotated += image.getexif().get(0x0112, 1) != 1
            assert min(image.size) >= 80 and max(image.size) <= 400
    total = sum(modes.values())
    assert total == 5 * (24 + 6 + 6)
    assert modes["JPEG/RGB"] > total / 2  # mostly JPEG
    for kind in ("PNG/RGB", "PNG/RGBA", "JPEG/L", "JPEG/CMYK"):
        assert modes[kind] > 0, modes
    assert rotated > 0
    assert len(sizes) > total / 2  # varied sizes and aspect ratios
    assert any(w > 1.3 * h for w, h in sizes) and any(h > 1.3 * w for w, h in sizes)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = _digest(generate_sample(tmp_path / "a", classes=2, per_class=4, seed=7))
    b = _digest(generate_sample(tmp_path / "b", classes=2, per_class=4, seed=7))
    c = _digest(generate_sample(tmp_path / "c", classes=2, per_class=4, seed=8))
    # More classes do not change the images of the first ones.
    d = _digest(generate_sample(tmp_path / "d", classes=3, per_class=4, seed=7))
    assert a == b
    assert a != c
    assert {k.rsplit(".", 1)[0] for k in a} == {k.rsplit(".", 1)[0] for k in c}
    assert {k: v for k, v in d.items() if not k.split("/")[1].startswith("003.")} == a


def test_classes_differ_in_every_attribute_at_first() -> None:
    attrs = [class_attributes(i) for i in range(5)]
    for k in range(3):
        assert len({a[k] for a in attrs}) == 5
    assert len({class_attributes(i) for i in range(280)}) == 280


def test_refuses_to_overwrite_and_bad_arguments(tmp_path: Path) -> None:
    out = generate_sample(tmp_path / "s", classes=3, per_class=1)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_sample(out, classes=3, per_class=1)
    generate_sample(out, classes=2, per_class=1, overwrite=True)
    assert len(list((out / "train").iterdir())) == 2
    with pytest.raises(ValueError, match="classes"):
        generate_sample(tmp_path / "x", classes=0)
    with pytest.raises(ValueError, match="classes must be between 2"):
        generate_sample(tmp_path / "x", classes=1)
    with pytest.raises(ValueError, match="per_class"):
        generate_sample(tmp_path / "x", per_class=0)
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_overwrite_keeps_the_old_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dogbreed.data import sample

    out = generate_sample(tmp_path / "s", classes=2, per_class=1)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = 0
    real_save = sample._save

    def failing_save(*args: object, **kwargs: object) -> Path:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(sample, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        generate_sample(out, classes=3, per_class=1, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_refuses_one_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dogbreed.cli import main

    assert main(["data", "sample", str(tmp_path / "one"), "--classes", "1"]) == 1
    assert "classes must be between 2" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dogbreed.cli import main

    out = tmp_path / "cli"
    assert main(["data", "sample", str(out), "--classes", "2", "--per-class", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["data", "check", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "2 classes, images: train=4, valid=6, test=6"
    assert main(["data", "sample", str(out), "--classes", "2"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "sample", str(out), "--classes", "3", "--per-class", "1", "--force"]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 1
    assert "missing: train, valid, test" in capsys.readouterr().err
