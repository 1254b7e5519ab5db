"""save_model_dir writes what serving reads; every export gives the same logits as the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from dogbreed.data.presets import eval_resize_size
from dogbreed.model import artifact
from dogbreed.model.build import build_model

CLASSES = ["Affenpinscher", "Beagle", "Borzoi"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("resnet18", len(CLASSES)).to(memory_format=torch.channels_last)
    model.train()  # the trainer hands over a model in train mode; the export must not care
    meta = artifact.ModelMetadata(
        architecture="resnet18",
        num_classes=3,
        image_size=64,
        resize_size=eval_resize_size(64),
        metrics={"test_acc": 0.5},
        versions={"torch": torch.__version__},
    )
    out = tmp_path_factory.mktemp("saved") / "model"
    artifact.save_model_dir(out, model, CLASSES, meta)
    return out, model


def test_directory_holds_exactly_the_contract_files(saved: tuple[Path, torch.nn.Module]) -> None:
    out, _ = saved
    expected = {"weights.pt", "model.onnx", "model.torchscript", "classes.json", "metadata.json"}
    assert {p.name for p in out.iterdir()} == expected
    meta = artifact.read_metadata(out)
    assert (meta.architecture, meta.num_classes, meta.image_size, meta.resize_size) == (
        "resnet18",
        3,
        64,
        73,
    )
    assert meta.metrics == {"test_acc": 0.5}
    assert artifact.read_classes(out, meta.num_classes) == CLASSES


def test_exports_agree_with_the_model(saved: tuple[Path, torch.nn.Module]) -> None:
    out, model = saved
    batch = torch.randn(3, 3, 64, 64)  # batch 3 != the export's example batch 1: dynamic axis
    reference = build_model("resnet18", 3)
    reference.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    reference.eval()
    with torch.no_grad():
        expected = reference(batch).numpy()
        scripted = torch.jit.load(str(out / "model.torchscript"))(batch).numpy()
    assert model.training, "save_model_dir must not change the caller's model"
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input"]
    (onnx_logits,) = session.run(["logits"], {"input": batch.numpy()})
    np.testing.assert_allclose(onnx_logits, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(scripted, expected, rtol=1e-4, atol=1e-5)


def test_class_count_must_match(tmp_path: Path) -> None:
    meta = artifact.ModelMetadata("resnet18", num_classes=4, image_size=64, resize_size=73)
    with pytest.raises(artifact.ArtifactError, match="3 class names for 4 outputs"):
        artifact.save_model_dir(tmp_path, build_model("resnet18", 4), CLASSES, meta)
    assert not (tmp_path / "weights.pt").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("metadata.json", None, "not found: is .* a dogbreed model directory"),
        ("metadata.json", "{", "metadata.json is not valid JSON"),
        ("metadata.json", "[1, 2]", "metadata.json must be a JSON object"),
        ("metadata.json", '{"architecture": "resnet18"}', "lacks image_size, num_classes"),
        ("classes.json", '{"a": 1}', "classes.json must be a JSON list of class names"),
        ("classes.json", "", "classes.json is not valid JSON"),
    ],
)
def test_a_broken_model_file_is_an_artifact_error(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for part in ("metadata.json", "classes.json"):
        (model_dir / part).write_bytes((saved[0] / part).read_bytes())
    if text is None:
        (model_dir / name).unlink()
    else:
        (model_dir / name).write_text(text)
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.read_classes(model_dir, artifact.read_metadata(model_dir).num_classes)


def test_metadata_is_plain_json(saved: tuple[Path, torch.nn.Module]) -> None:
    data = json.loads((saved[0] / "metadata.json").read_text())
    assert data["mean"] == list(artifact.IMAGENET_MEAN)
    assert data["format_version"] == artifact.FORMAT_VERSION


def test_validation_images_make_the_export_record_the_agreement_gate(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    """The gate (the end of training, after save_model_dir) measures every reduced-precision
    path against fp32 and writes the verdict into metadata.json next to the rest."""
    from PIL import Image

    from dogbreed.model import precision

    images = []
    for i in range(6):
        path = tmp_path / f"valid_{i}.jpg"
        Image.new("RGB", (96, 80), (40 * i, 90, 200 - 30 * i)).save(path)
        images.append(path)
    out = tmp_path / "model"
    _, model = saved
    meta = artifact.ModelMetadata("resnet18", 3, 64, eval_resize_size(64))
    artifact.save_model_dir(out, model, CLASSES, meta)
    precision.gate_in_subprocess(out, images)
    record = artifact.read_metadata(out).precisions["bf16"]
    if record["measured"]:
        assert record["images"] == 6
        assert record["passed"] == (record["top1_agreement"] >= precision.MIN_AGREEMENT)
    else:  # a CPU without hardware bf16 says so instead of measuring fp32 against itself
        assert record == {"passed": False, "measured": False, "reason": record["reason"]}
        assert "amx_bf16" in record["reason"] or "openvino" in record["reason"]
