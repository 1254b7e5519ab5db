"""The SageMaker training contract: where the config, data, model and outputs live.

SageMaker (`docker run IMAGE train`) gives no flags: everything is under `$SAGEMAKER_BASE_DIR`
(default `/opt/ml`):

    input/config/hyperparameters.json   every value a string (JSON-encoded or str(value))
    input/config/resourceconfig.json    {"current_host", "hosts", "network_interface_name"}
    input/config/inputdataconfig.json   one entry per channel
    input/data/training/{train,valid,test}/   or   input/data/{train,valid,test}/
    model/  output/  output/data/  output/intermediate/  output/success|failure  checkpoints/

The sagemaker-training toolkit's variables (`SM_CHANNEL_<NAME>`, `SM_MODEL_DIR`,
`SM_OUTPUT_DIR`, `SM_OUTPUT_DATA_DIR`, `SM_HOSTS`, `SM_CURRENT_HOST`, `SM_NUM_GPUS`) win over
the files when set; command-line flags win over both (EC2, laptop). No torch import here.

Why the built-in trainer reads the job here and not through the toolkit's `Environment` (which
script mode uses, dogbreed.train.toolkit): `Environment()` fails with a bare FileNotFoundError
when any of the three config files is missing (EC2, laptop, a base with hyperparameters only),
fixes /opt/ml when its module is first imported, and knows neither the precedence flags >
SM_* > files, nor a Pipe-mode channel as an error, nor `validation` as `valid`, nor a
checkpoint folder. The names it shares with the toolkit (SM_*, sagemaker_s3_output) are its.

As in AWS's images, the toolkit's `intermediate_output` uploads output/intermediate/ to S3 while
the job runs when the job names an S3 location (hyperparameter `sagemaker_s3_output`), and the
job ends with output/success or output/failure.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dogbreed.config import (
    ConfigError,
    TrainConfig,
    canonical_name,
    config_from_hyperparameters,
)
from dogbreed.hostgpu import gpu_count

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

FAILURE_LIMIT = 1024  # SageMaker keeps the first 1024 characters as FailureReason
# How a job ends (dogbreed.train.cli's docstring says which failure gets which).
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 128 + 15  # what a process killed by SIGTERM reports; here after a checkpoint


class JobError(ConfigError):
    """The job's files or channels are missing or malformed; the message names what and where."""


@dataclass
class JobPaths:
    """Where one training job reads and writes. Only rank 0 writes model/, output/, checkpoints/.

    `data` maps SageMaker channel names to folders: {"training": ROOT} (ROOT holds train/
    valid/ test/) or {"train": ..., "valid": ..., "test": ...}; dogbreed.data.layout reads it.
    """

    data: dict[str, Path]
    model_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    output_data_dir: Path | None = None  # default: output_dir/data

    def __post_init__(self) -> None:
        self.data = {name: Path(folder) for name, folder in self.data.items()}
        for name in ("model_dir", "output_dir", "checkpoint_dir"):
            setattr(self, name, Path(getattr(self, name)))
        self.output_data_dir = Path(self.output_data_dir or self.output_dir / "data")

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def success_file(self) -> Path:
        return self.output_dir / "success"

    @property
    def intermediate_dir(self) -> Path:
        """Files here reach S3 while the job runs (SageMaker's own sync, or the toolkit's)."""
        return self.output_dir / "intermediate"

    @classmethod
    def from_root(
        cls,
        data_root: str | Path,
        model_dir: str | Path,
        output_dir: str | Path,
        checkpoint_dir: str | Path,
    ) -> JobPaths:
        """A job whose data is one folder holding train/ valid/ test/ (or dogImages/ them)."""
        return cls({"training": Path(data_root)}, model_dir, output_dir, checkpoint_dir)


@dataclass
class TrainingEnv:
    """The cluster this process belongs to (read by the multi-host launcher)."""

    hosts: list[str] = field(default_factory=lambda: ["algo-1"])
    current_host: str = "algo-1"
    num_gpus: int = 0
    network_interface: str | None = None

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobError(f"cannot read {path}: {exc}") from None


def decoded(value: Any) -> Any:
    """A hyperparameter as the toolkit reads it: JSON when it parses, the raw string otherwise
    (the SDK's framework estimators JSON-encode every value; a generic Estimator sends str())."""
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def read_hyperparameters(base: Path) -> dict[str, Any]:
    """hyperparameters.json as a dict ({} when the file does not exist: laptop or EC2)."""
    path = base / "input" / "config" / "hyperparameters.json"
    if not path.is_file():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise JobError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def load_config(base: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig from hyperparameters.json, then `overrides` (CLI flags) on top.

    A key given as a flag is not parsed from the file at all: a flag can fix a bad value there.
    """
    overrides = overrides or {}
    replaced = {canonical_name(key) for key in overrides}
    from_file = {
        key: value
        for key, value in read_hyperparameters(base).items()
        if canonical_name(key) not in replaced
    }
    return config_from_hyperparameters(overrides, config_from_hyperparameters(from_file))


def training_env(base: Path) -> TrainingEnv:
    """Hosts from resourceconfig.json (or SM_HOSTS/SM_CURRENT_HOST), GPUs from the machine."""
    path = base / "input" / "config" / "resourceconfig.json"
    resource: dict[str, Any] = _read_json(path) if path.is_file() else {}
    hosts = resource.get("hosts") or ["algo-1"]
    current = resource.get("current_host") or hosts[0]
    if os.environ.get("SM_HOSTS"):
        try:
            hosts = list(json.loads(os.environ["SM_HOSTS"]))
        except (json.JSONDecodeError, TypeError):
            raise JobError(f"SM_HOSTS is not a JSON list: {os.environ['SM_HOSTS']!r}") from None
    current = os.environ.get("SM_CURRENT_HOST") or current
    hosts = sorted(hosts)  # SageMaker sorts them; rank order must agree on every host
    if current not in hosts:
        raise JobError(f"current_host {current!r} is not among hosts {hosts} ({path})")
    gpus = os.environ.get("SM_NUM_GPUS")
    return TrainingEnv(
        hosts=hosts,
        current_host=current,
        num_gpus=int(gpus) if gpus else gpu_count(),
        network_interface=resource.get("network_interface_name"),
    )


def channels(base: Path) -> dict[str, Path]:
    """Channel name -> local folder: input/data/<name>, overridden by SM_CHANNEL_<NAME>.

    When inputdataconfig.json exists it names the channels: a declared channel without its
    folder, or one in Pipe mode (a FIFO, not files), is an error here rather than a confusing
    "no images" later. FastFile mode mounts files at the same place as File mode.
    """
    found: dict[str, Path] = {}
    data_dir = base / "input" / "data"
    config_path = base / "input" / "config" / "inputdataconfig.json"
    if config_path.is_file():
        declared = _read_json(config_path)
        if not isinstance(declared, dict):
            raise JobError(f"{config_path} must hold a JSON object of channels")
        for name, spec in declared.items():
            mode = spec.get("TrainingInputMode", "File") if isinstance(spec, dict) else "File"
            if mode == "Pipe":
                raise JobError(f"channel {name!r} uses Pipe input mode; use File or FastFile")
            found[name] = data_dir / name
    elif data_dir.is_dir():
        found.update({p.name: p for p in data_dir.iterdir() if p.is_dir()})
    for key, value in os.environ.items():
        if key.startswith("SM_CHANNEL_") and value:
            found[key.removeprefix("SM_CHANNEL_").lower()] = Path(value)
    missing = sorted(name for name, folder in found.items() if not folder.is_dir())
    if missing:
        raise JobError(
            f"channel folder(s) missing: {', '.join(str(found[n]) for n in missing)} "
            f"(declared in {config_path} or SM_CHANNEL_*)"
        )
    if "validation" in found and "valid" not in found:
        found["valid"] = found.pop("validation")  # the name SageMaker examples often use
    return found


def job_paths(
    base: Path,
    data: str | Path | None = None,
    model_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> JobPaths:
    """Resolve every location: explicit arguments, then SM_* variables, then `base`."""
    env = os.environ
    out = Path(output_dir or env.get("SM_OUTPUT_DIR") or base / "output")
    out_data = Path(output_dir) / "data" if output_dir else env.get("SM_OUTPUT_DATA_DIR")
    return JobPaths(
        data={"training": Path(data)} if data is not None else channels(base),
        model_dir=Path(model_dir or env.get("SM_MODEL_DIR") or base / "model"),
        output_dir=out,
        checkpoint_dir=Path(checkpoint_dir or base / "checkpoints"),
        output_data_dir=Path(out_data) if out_data else None,
    )


def write_failure(output_dir: Path, reason: str) -> None:
    """output/failure: SageMaker shows its first 1024 characters as the job's FailureReason.

    Written here, not by the toolkit's trainer.train(): that one writes "Framework Error:"
    and a traceback, and the built-in trainer's reason is one line a person can act on."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failure").write_text(reason[:FAILURE_LIMIT])
    except OSError:
        pass  # an unwritable output dir must not hide the original error; it is logged anyway


def write_success(output_dir: Path) -> None:
    """output/success, as the toolkit writes it after a job that succeeded: the intermediate
    sync stops when it appears, and tools that wait for AWS's images' marker find it."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "success").touch()
    except OSError as exc:  # the model is saved: report it, do not fail a finished job
        log.warning("cannot write %s: %s", output_dir / "success", exc)


def start_intermediate_sync(base: Path) -> BaseProcess | None:
    """The toolkit's S3 sync of BASE/output/intermediate/ (a daemon process), started the way
    its `trainer.train` starts it for AWS's images; None when the job names no S3 output or
    the folder already exists (SageMaker itself is syncing it). It stops once output/success or
    output/failure exists. S3_ENDPOINT_URL points it at another S3 (MinIO, moto)."""
    from sagemaker_training import params

    s3_output = decoded(read_hyperparameters(base).get(params.S3_OUTPUT_LOCATION_PARAM))
    if not s3_output:
        return None
    # The toolkit resolves /opt/ml once, when its modules are first imported: nothing in this
    # process imports them before this line.
    os.environ["SAGEMAKER_BASE_DIR"] = str(base)
    from sagemaker_training import intermediate_output

    region = os.environ.get("AWS_REGION", os.environ.get(params.REGION_NAME_ENV))
    endpoint = os.environ.get(params.S3_ENDPOINT_URL)
    try:
        return intermediate_output.start_sync(str(s3_output), region, endpoint_url=endpoint)
    except ValueError as exc:  # not an s3:// URI
        raise JobError(f"hyperparameter {params.S3_OUTPUT_LOCATION_PARAM}: {exc}") from None
