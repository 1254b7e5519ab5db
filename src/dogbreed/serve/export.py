"""`dogbreed export MODEL_DIR --data DIR`: (re)measure the reduced-precision paths of an existing
model directory against fp32 on DIR's validation split and record them in its metadata.json.

Imports nothing heavy at module level; needs onnxruntime (and openvino for bf16), not torch.
In serve/: the measuring uses serving's backends (dogbreed.serve.precision_gate).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="model directory (model.onnx, metadata.json)")
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset root: its valid/ split is measured"
    )
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")


def main(args: argparse.Namespace) -> int:
    from dogbreed.model.artifact import ArtifactError
    from dogbreed.model.precision import validation_images
    from dogbreed.serve.precision_gate import gate

    try:
        results = gate(args.model_dir, validation_images(args.data), args.threads)
    except (ArtifactError, OSError) as exc:
        log.error("export failed: %s", exc)
        return 1
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0
