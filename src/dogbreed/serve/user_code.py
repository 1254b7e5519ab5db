"""A model that brings its own code: `code/inference.py` in the model directory, with the
SageMaker PyTorch serving convention's `model_fn`, `input_fn`, `predict_fn`, `output_fn` (or
`transform_fn`), served through sagemaker-inference's own handler service and Transformer,
as AWS's PyTorch inference image serves it. The MMS entry point: `dogbreed.serve.user_code:handle`.

Differences from AWS's image, on purpose: the public front stays ours (honest /ping, bounded
connections, our error bodies for a failure, never a traceback); the CPU serving image has no
torch, so `model_fn` is the user's (the toolkit's default says so) and code needing torch wants
the GPU flavour; `code/requirements.txt` is not installed at start (endpoints often have no
network): bake dependencies into an image built FROM ours.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dogbreed.serve import mms

HANDLER = "dogbreed.serve.user_code:handle"
CODE_DIR = "code"
ENTRY_POINT = "inference.py"

_service: Any = None


def has_user_code(model_dir: Path) -> bool:
    return (model_dir / CODE_DIR / ENTRY_POINT).is_file()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    global _service
    if _service is None:
        from sagemaker_inference.default_handler_service import DefaultHandlerService

        # The toolkit puts code/ on PYTHONPATH for processes started later; this worker
        # imports inference.py itself, so code/ goes on its own path.
        sys.path.insert(0, str(Path(context.system_properties["model_dir"]) / CODE_DIR))
        service = DefaultHandlerService()
        service.initialize(context)
        _service = service
    if data is None:
        return None
    mms.restore_client_content_type(context)
    return _service.handle(data, context)
