"""`dogbreed serve`: the SageMaker `serve` contract (/ping, /invocations) on one model.

Imports nothing heavy at module level: the serving modules load onnxruntime (or torch) only
when `main` runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dogbreed.serve.settings import add_server_arguments

    parser.add_argument(
        "--model",
        "--model-dir",
        dest="model",
        type=Path,
        default=None,
        help="model directory or model.tar.gz (default: $SAGEMAKER_BASE_DIR/model, /opt/ml/model)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    add_server_arguments(parser)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="writable directory for MMS config, logs, temp files and an extracted tarball "
        "(default: a fresh temporary directory, removed on exit)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only load the model and run a warm-up batch, then exit (0: servable)",
    )


def main(args: argparse.Namespace) -> int:
    import tempfile

    from dogbreed.config import base_dir
    from dogbreed.model.artifact import ArtifactError
    from dogbreed.serve import server
    from dogbreed.serve.settings import ServeSettings, server_flag_values
    from dogbreed.settings import SettingError

    try:
        settings = (
            ServeSettings.from_env().replace(port=args.port, **server_flag_values(args)).validated()
        )
    except SettingError as exc:
        log.error("bad serving setting: %s", exc)
        return 2
    model = args.model or base_dir() / "model"
    if not args.check:
        return server.serve(model, settings, host=args.host, workdir=args.workdir)
    with tempfile.TemporaryDirectory(prefix="dogbreed-check-") as work:
        try:
            model_dir = server.resolve_model(model, Path(work))
            server.validate_model(model_dir, settings.replace(threads=settings.threads or 1))
        except (ArtifactError, server.ServeFailure, OSError) as exc:
            log.error("%s", exc)
            return 1
    log.info("model %s is servable", model)
    return 0
