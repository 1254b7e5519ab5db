"""The original project's inference, as an MMS handler: the baseline of bench_serve.py.

Written the way the original `inference2.py` did it: PIL opens the bytes, torchvision
`Resize((S, S))` (aspect ratio squashed) and `ToTensor` (no normalisation), torch eager fp32,
one request at a time in a Python loop, raw logits returned. Only the model loading is ours
(weights.pt of the same model directory), so both sides of the benchmark run the same network.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from dogbreed.model.artifact import WEIGHTS_FILE, read_metadata
from dogbreed.model.build import build_model

_state: dict[str, Any] = {}


def _load(model_dir: str) -> None:
    meta = read_metadata(model_dir)
    model = build_model(meta.architecture, meta.num_classes)
    model.load_state_dict(torch.load(f"{model_dir}/{WEIGHTS_FILE}", map_location="cpu"))
    _state["model"] = model.eval()
    _state["transform"] = transforms.Compose(
        [transforms.Resize((meta.image_size, meta.image_size)), transforms.ToTensor()]
    )


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    if not _state:
        _load(context.system_properties["model_dir"])
    if data is None:
        return None
    outputs = []
    for item in data:  # one at a time, as the toolkit's Transformer does
        image = Image.open(io.BytesIO(item.get("body")))
        tensor = _state["transform"](image).unsqueeze(0)
        with torch.no_grad():
            logits = _state["model"](tensor)
        outputs.append(json.dumps(logits[0].tolist()))
    return outputs
