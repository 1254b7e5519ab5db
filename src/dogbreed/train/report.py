"""Metric lines on stdout (scraped by SageMaker MetricDefinitions), metrics.json and plots.

The line format is a contract (docs/ARCHITECTURE.md):

    epoch=3 train_loss=0.5120 train_acc=0.8010 valid_loss=0.6040 valid_acc=0.8710 lr=0.000812 images_per_sec=123.4
    final valid_loss=0.5980 valid_acc=0.8750 test_loss=0.6210 test_acc=0.8590

The final line repeats the BEST epoch's validation metrics: a SageMaker tuning job scores a
training job by the last value of its objective metric, and the model we keep is the best
epoch's, not the last one's. METRIC_DEFINITIONS is what the AWS launcher and the tuner pass to SageMaker. No torch import.
"""  # noqa: E501

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbreed.model.files import write_file, write_text

# Plain character classes only (no \b, no (?:...)): portable to any regex engine. Names never
# occur inside each other and no other log line contains `name=` for these names.
_NUMBER = r"([0-9.eE+-]+)"
EPOCH_KEYS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "images_per_sec")
TEST_KEYS = ("test_loss", "test_acc")
FINAL_KEYS = ("valid_loss", "valid_acc", *TEST_KEYS)

# SageMaker MetricDefinitions: the first capture group is the value.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "epoch", "Regex": r"epoch=([0-9]+)"},
    *({"Name": key, "Regex": f"{key}={_NUMBER}"} for key in EPOCH_KEYS + TEST_KEYS),
]

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"


def _fmt(key: str, value: float) -> str:
    if key == "lr":
        return f"{value:.6g}"
    if key == "images_per_sec":
        return f"{value:.1f}"
    return f"{value:.4f}"


def epoch_line(epoch: int, metrics: dict[str, float]) -> str:
    parts = [f"epoch={epoch}"] + [f"{k}={_fmt(k, metrics[k])}" for k in EPOCH_KEYS]
    return " ".join(parts)


def final_line(metrics: dict[str, float]) -> str:
    """Best epoch's valid_loss/valid_acc, then the test metrics of those weights."""
    return " ".join(["final", *(f"{k}={_fmt(k, metrics[k])}" for k in FINAL_KEYS)])


def emit(line: str) -> None:
    """Write one whole line and flush: SageMaker and `docker logs` read stdout as it comes.

    One write call, not print(): with PYTHONUNBUFFERED (set in our images) print() writes the
    text and the newline separately, and lines of several ranks could interleave mid-line.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_metric_lines(text: str) -> dict[str, list[float]]:
    """Apply METRIC_DEFINITIONS to log text as SageMaker does: name -> values in order."""
    found: dict[str, list[float]] = {}
    for definition in METRIC_DEFINITIONS:
        values = [float(m) for m in re.findall(definition["Regex"], text)]
        if values:
            found[definition["Name"]] = values
    return found


def write_metrics(
    output_data_dir: Path, final: dict[str, float], history: list[dict[str, float]], **extra: Any
) -> Path:
    """metrics.json: final metrics, per-epoch history and `extra` facts about the run."""
    output_data_dir.mkdir(parents=True, exist_ok=True)
    path = output_data_dir / METRICS_FILE
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in final.items()
    }
    write_text(path, json.dumps({"final": clean, "history": history, **extra}, indent=2))
    return path


def write_history(intermediate_dir: Path, history: list[dict[str, float]]) -> None:
    """output/intermediate/history.json after every epoch, for S3 while the job runs. A plain
    write, not write_text's rename: the sync uploads a file when it is closed after writing
    (inotify CLOSE_WRITE), and a file renamed into place never is."""
    intermediate_dir.mkdir(parents=True, exist_ok=True)
    (intermediate_dir / HISTORY_FILE).write_text(json.dumps(history, indent=2))


def plot_curves(output_data_dir: Path, history: list[dict[str, float]]) -> Path:
    """Loss and accuracy per epoch, train against valid."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a container
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split in ("train", "valid"):
            ax.plot(epochs, [h[f"{split}_{metric}"] for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss (per sample)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = output_data_dir / CURVES_FILE
    write_file(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def plot_confusion(
    output_data_dir: Path, matrix: Sequence[Sequence[int]], classes: list[str]
) -> Path:
    """Row-normalised confusion matrix on the test split (rows: true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + n * 0.35, 40)  # 133 classes still readable when zoomed
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test, row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = output_data_dir / CONFUSION_FILE
    write_file(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
