"""Train and serve the dogbreed images with the SageMaker Python SDK's local mode.

Proves the images work where SageMaker users try them first: `Estimator(instance_type="local")`
runs `train` in the training image through the SDK's own docker-compose file, and
`Model(...).deploy(instance_type="local")` serves the resulting model.tar.gz from the serving
image on port 8080. Needs the `sagemaker` SDK v2 (`pip install "sagemaker>=2.257,<3"`; v3
dropped `Estimator`), Docker and `docker compose` or `docker-compose` on PATH. No AWS account:
dummy credentials, file:// inputs and outputs only.

Usage: python scripts/sagemaker_local_mode.py DATA_DIR WORK_DIR [JPEG]
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from sdk_local import ROLE, SERVE_IMAGE, TINY_JOB, TRAIN_IMAGE, v2_local_session


def main(data_dir: Path, work: Path, jpeg: Path | None) -> int:
    session = v2_local_session(work)
    from sagemaker.estimator import Estimator
    from sagemaker.model import Model

    work.mkdir(parents=True, exist_ok=True)
    estimator = Estimator(
        image_uri=TRAIN_IMAGE,
        role=ROLE,
        instance_count=1,
        instance_type="local",
        hyperparameters=TINY_JOB,
        output_path=f"file://{work.resolve()}",
        sagemaker_session=session,
    )
    estimator.fit({"training": f"file://{data_dir.resolve()}"})
    model_data = estimator.model_data
    print(f"model artifact: {model_data}")
    with tarfile.open(model_data.removeprefix("file://")) as tar:
        names = sorted(tar.getnames())
    print(f"model.tar.gz holds: {names}")

    model = Model(
        image_uri=SERVE_IMAGE, model_data=model_data, role=ROLE, sagemaker_session=session
    )
    model.deploy(initial_instance_count=1, instance_type="local")  # a plain Model returns None
    try:
        if jpeg is None:
            jpeg = next((data_dir / "test").rglob("*.jpg"))
        answer = session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=model.endpoint_name,
            Body=jpeg.read_bytes(),
            ContentType="image/jpeg",
            Accept="application/json",
        )
        body = json.loads(answer["Body"].read())
        print(f"/invocations: {json.dumps(body)}")
        return 0 if body.get("top_k") else 1
    finally:
        session.delete_endpoint(model.endpoint_name)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    jpeg_arg = Path(sys.argv[3]) if len(sys.argv) == 4 else None
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), jpeg_arg))
