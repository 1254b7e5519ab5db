"""build_model: heads, freeze policies, pretrained weights from a file, the cache, or nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from dogbreed.model.build import ModelError, build_model


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("backbone", "head"),
    [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"), ("densenet121", "classifier")],
)
def test_new_head_for_n_classes(backbone: str, head: str) -> None:
    model = build_model(backbone, num_classes=7)
    assert model.get_submodule(head).out_features == 7
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)


def test_freeze_backbone_trains_the_head_only() -> None:
    model = build_model("resnet18", 5, freeze="backbone")
    assert _trainable(model) == {"fc.weight", "fc.bias"}


def test_freeze_layer3_trains_layer3_layer4_and_head() -> None:
    model = build_model("resnet18", 5, freeze="layer3")
    stages = {name.split(".")[0] for name in _trainable(model)}
    assert stages == {"layer3", "layer4", "fc"}


def test_freeze_none_trains_everything() -> None:
    model = build_model("resnet18", 5)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_backbone_works_for_other_families() -> None:
    model = build_model("mobilenet_v3_small", 5, freeze="backbone")
    assert _trainable(model) == {"classifier.3.weight", "classifier.3.bias"}


def test_freeze_stage_on_a_non_resnet_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="ResNet-style"):
        build_model("mobilenet_v3_small", 5, freeze="layer2")


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ModelError, match=r"unknown backbone 'resnet5000'.*resnet18"):
        build_model("resnet5000", 5)


def _imagenet_state(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A stand-in for the ImageNet file: a torchvision resnet18 state_dict with its 1000-class
    head (the real one cannot be downloaded here; the format is the same)."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_from_a_local_file(tmp_path: Path) -> None:
    path, state = _imagenet_state(tmp_path)
    model = build_model("resnet18", 5, weights_path=path, freeze="backbone")
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    assert torch.equal(loaded["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert loaded["fc.weight"].shape == (5, 512)  # the new head, not the 1000-class one


def test_pretrained_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision reads $TORCH_HOME/hub/checkpoints/<file name of the weights URL> when present.
    path, state = _imagenet_state(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    model = build_model("resnet18", 5, pretrained=True)
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])


def test_pretrained_without_cache_or_network_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty cache and a proxy on a closed loopback port: the download fails at once, on any
    # machine, without touching the network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ModelError, match=r"not in the cache .*could not be downloaded.*--weights"):
        build_model("resnet18", 5, pretrained=True)


def test_missing_corrupt_or_mismatched_weights_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        build_model("resnet18", 5, weights_path=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read pretrained weights"):
        build_model("resnet18", 5, weights_path=junk)
    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), other)
    with pytest.raises(ModelError, match="do not fit resnet18"):
        build_model("resnet18", 5, weights_path=other)
