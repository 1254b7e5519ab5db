"""A user's own script in the dogbreed training image, through SDK v2's PyTorch estimator.

What a team does with AWS's PyTorch training image, with ours instead:
`PyTorch(entry_point=..., source_dir=..., image_uri=OURS)` in local mode; with two or more
hosts, `distribution={"torch_distributed": {"enabled": True}}` (torchrun across the hosts).
Prints the script's own record from the resulting model.tar.gz. Needs SDK v2
(`pip install "sagemaker>=2.257,<3"`), Docker and docker compose.

Usage: python scripts/sagemaker_script_mode.py SOURCE_DIR ENTRY_POINT HOSTS WORK_DIR
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from sdk_local import ROLE, TRAIN_IMAGE, v2_local_session


def main(source_dir: Path, entry_point: str, hosts: int, work: Path) -> int:
    session = v2_local_session(work)
    from sagemaker.pytorch import PyTorch

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "README").write_text("a channel the script does not need to read\n")
    distribution = {"torch_distributed": {"enabled": True}} if hosts > 1 else None
    estimator = PyTorch(
        entry_point=entry_point,
        source_dir=str(source_dir),
        image_uri=TRAIN_IMAGE,
        role=ROLE,
        instance_count=hosts,
        instance_type="local",
        hyperparameters={"steps": 4, "learning_rate": 0.05},
        distribution=distribution,
        output_path=f"file://{work.resolve()}",
        sagemaker_session=session,
    )
    estimator.fit({"training": f"file://{data.resolve()}"})
    with tarfile.open(estimator.model_data.removeprefix("file://")) as tar:
        member = tar.extractfile("user_record.json")
        record = json.loads(member.read()) if member else None
    print(f"user record: {json.dumps(record)}")
    return 0 if record else 1


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
