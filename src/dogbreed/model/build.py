"""Build a torchvision classifier for N classes: backbone by name, new head, freeze policy.

Pretrained ImageNet weights come through torchvision's weights API: from torch hub's cache
(`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`) or the network, or
from a local file (`weights_path`) holding the torchvision model's state_dict with its original
1000-class head. The head is replaced after the weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from dogbreed.config import FREEZE_CHOICES


class ModelError(ValueError):
    """A backbone, weights file or freeze policy that cannot be used; the message says why."""


def available_backbones() -> list[str]:
    """Classification models torchvision knows by name (resnet18, resnet50, efficientnet_b0...)."""
    return torchvision.models.list_models(module=torchvision.models)


def _head_name(model: nn.Module) -> str:
    """The classifier head: the last nn.Linear (resnet `fc`, efficientnet `classifier.1`...)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ModelError(f"{type(model).__name__} has no nn.Linear head to replace")
    return linear[-1]


def _replace_head(model: nn.Module, num_classes: int) -> str:
    name = _head_name(model)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    # nn.Sequential children are registered under "0", "1"...: getattr/setattr work for both.
    old = getattr(parent, child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes))
    return name


def _pretrained_state_dict(backbone: str, weights_path: str | Path | None) -> dict:
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise ModelError(f"pretrained weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or non-torch file: say which file
            raise ModelError(f"cannot read pretrained weights {path}: {exc}") from None
        if not isinstance(state, dict):
            raise ModelError(f"{path} does not hold a state_dict")
        return state
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        # Reads torch hub's cache first and downloads only when the file is not there.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib/ssl/hash errors: no network, proxy, truncated file
        raise ModelError(
            f"pretrained {backbone} weights ({weights}) are not in the cache ({cache}) and "
            f"could not be downloaded from {weights.url}: {exc}. Put the file there, or pass "
            "--weights FILE with a local copy, or train without --pretrained."
        ) from None


def build_model(
    backbone: str,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    freeze: str = "none",
) -> nn.Module:
    """A torchvision model with a new `num_classes` head; `weights_path` implies pretrained."""
    if backbone not in available_backbones():
        raise ModelError(
            f"unknown backbone {backbone!r}; torchvision offers: {', '.join(available_backbones())}"
        )
    if num_classes < 2:
        raise ModelError(f"need at least 2 classes, got {num_classes}")
    model = torchvision.models.get_model(backbone, weights=None)
    if pretrained or weights_path is not None:
        state = _pretrained_state_dict(backbone, weights_path)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"weights do not fit {backbone}: {str(exc)[:500]}") from None
    head = _replace_head(model, num_classes)
    apply_freeze(model, freeze, head)
    return model


def apply_freeze(model: nn.Module, freeze: str, head: str | None = None) -> None:
    """Set requires_grad by policy: `none`, `backbone` (head only) or `layerN` (stage N on).

    `layerN` needs a ResNet-style model (`layer1`..`layer4`: resnet*, resnext*, wide_resnet*);
    the stem and the stages before N are frozen. Other families have no common notion of a
    stage, so they are refused with a message pointing to `backbone` or `none`.
    """
    if freeze not in FREEZE_CHOICES:
        raise ModelError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {freeze!r}")
    head = head or _head_name(model)
    for param in model.parameters():
        param.requires_grad = freeze == "none"
    if freeze == "none":
        return
    trainable = [head]
    if freeze.startswith("layer"):
        stage = int(freeze.removeprefix("layer"))
        if not all(hasattr(model, f"layer{i}") for i in range(1, 5)):
            raise ModelError(
                f"freeze={freeze} needs a ResNet-style backbone (layer1..layer4); "
                f"{type(model).__name__} has none: use freeze=backbone or freeze=none"
            )
        trainable += [f"layer{i}" for i in range(stage, 5)]
    for name in trainable:
        for param in model.get_submodule(name).parameters():
            param.requires_grad = True


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
