"""The training recipe: one job from a TrainConfig and JobPaths to a model directory.

AdamW or SGD, linear warm-up then cosine decay per step, label smoothing, bf16 autocast on GPU,
channels_last (faster on CPU too), a DataLoader sized to the machine, validation each epoch
with early stopping and best-weights selection on valid_loss, a final test evaluation of the
best weights (test is never used for selection). Data parallel under torchrun.

SIGTERM (SageMaker stop, spot interruption, `docker stop`) finishes the current step, writes a
checkpoint and raises TrainingStopped; a restarted job resumes from that exact step.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from dogbreed.config import ConfigError, TrainConfig
from dogbreed.data.dataset import ImageDataset, build_datasets
from dogbreed.data.layout import DataError, find_channel_splits
from dogbreed.model import artifact
from dogbreed.model.build import build_model, trainable_parameters
from dogbreed.train import checkpoint, distributed
from dogbreed.train import report as reporting
from dogbreed.train.cli import EXIT_ERROR
from dogbreed.train.environment import JobPaths, write_failure

log = logging.getLogger(__name__)

ReportFn = Callable[[int, dict[str, float]], None]


class TrainingStopped(Exception):
    """SIGTERM arrived; a checkpoint was written and a restart resumes from it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage, no model is written."""


class _StopFlag:
    """Set by SIGTERM; the loop polls it after each step (never interrupts a step midway)."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        # Signal handlers live in the main thread only (an in-process tuner may use threads).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            log.warning("SIGTERM: stopping after the current step and writing a checkpoint")
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


class _ResumableSampler(Sampler[int]):
    """Wraps the epoch's sampler so that a resumed epoch skips the batches already trained."""

    def __init__(self, base: Sampler[int], batch_size: int, seed: int) -> None:
        self.base = base
        self.batch_size = batch_size
        self.seed = seed
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if isinstance(self.base, DistributedSampler):
            self.base.set_epoch(epoch)
        else:
            # Same permutation for the same (seed, epoch), before and after a restart.
            self.base.generator.manual_seed(self.seed + epoch)
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[int]:
        indices = list(self.base)
        return iter(indices[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return max(len(self.base) - self.skip_batches * self.batch_size, 0)


def default_workers(local_world_size: int) -> int:
    """Decode/augment workers per process: its share of the CPUs minus one for the main
    process (which runs the model on CPU or feeds the GPU), at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cpus or 1) // max(local_world_size, 1) - 1))


def make_loader(
    dataset: Dataset,
    cfg: TrainConfig,
    sampler: Iterable[int],
    device: torch.device,
    workers: int,
    drop_last: bool,
) -> DataLoader:
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4}
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        **extra,
    )


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak, then cosine decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = trainable_parameters(model)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.learning_rate,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _validate(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"hyperparameter {name!r} must be at least 1")
    if cfg.image_size < 32:
        raise ConfigError("hyperparameter 'image_size' must be at least 32 pixels")
    if not cfg.learning_rate > 0:
        raise ConfigError("hyperparameter 'learning_rate' must be positive")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError("hyperparameter 'label_smoothing' must be in [0, 1)")
    if cfg.warmup_epochs < 0 or cfg.weight_decay < 0 or cfg.patience < 1:
        raise ConfigError("warmup_epochs and weight_decay must be >= 0, patience >= 1")


def _eval_sampler(n: int, info: distributed.DistInfo) -> list[int]:
    # Every sample exactly once over all ranks (DistributedSampler would pad with repeats).
    return list(range(info.rank, n, info.world_size))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    cfg: TrainConfig,
    info: distributed.DistInfo,
) -> tuple[float, float, torch.Tensor]:
    """(per-sample loss, accuracy, confusion matrix) over the whole split, all ranks summed."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    for images, labels in loader:
        images, labels = to_device(images, labels, device, cfg)
        with autocast(device, cfg):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        loss_sum += loss.double().cpu()
        pairs = labels.cpu() * num_classes + logits.argmax(1).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes * num_classes).double()
    totals = distributed.all_reduce_sum(torch.cat([loss_sum.view(1), confusion]), info)
    matrix = totals[1:].view(num_classes, num_classes)
    count = matrix.sum().item()  # > 0: build_datasets refuses an empty split
    return totals[0].item() / count, matrix.diag().sum().item() / count, matrix.long()


def autocast(device: torch.device, cfg: TrainConfig) -> Any:
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def to_device(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True, memory_format=memory_format(cfg))
    return images, labels.to(device, non_blocking=True)


def _versions() -> dict[str, str]:
    import platform

    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def train(cfg: TrainConfig, paths: JobPaths, report: ReportFn | None = None) -> dict[str, float]:
    """Run one job; returns the final metrics (best valid_* and test_*).

    `report(epoch, metrics)` runs after each validation on every rank; an exception from it
    (the tuner's optuna.TrialPruned) propagates unchanged after the process group is cleaned up.
    """
    _validate(cfg)
    info = distributed.setup()
    stop = _StopFlag()
    try:
        with stop.installed(), distributed.watch_peers(info, lambda why: _give_up(paths, why)):
            return _train(cfg, paths, report, info, stop)
    except RuntimeError as exc:
        lost = distributed.lost_peer(exc) if info.enabled else None
        if lost is None:
            raise
        raise lost from exc
    finally:
        distributed.cleanup()


def _give_up(paths: JobPaths, reason: str) -> None:
    """A peer fell silent (distributed.watch_peers). This rank may be stuck in a collective
    that nothing interrupts: write the reason and end the process here; torchrun then stops
    this host's other workers."""
    log.error("%s", reason)
    write_failure(paths.output_dir, reason)
    os._exit(EXIT_ERROR)


def _train(
    cfg: TrainConfig,
    paths: JobPaths,
    report: ReportFn | None,
    info: distributed.DistInfo,
    stop: _StopFlag,
) -> dict[str, float]:
    device = info.device
    reporting.emit(f"world_size={info.world_size} rank={info.rank} device={device}")
    checkpoint.seed_everything(cfg.seed + info.rank)
    layout = find_channel_splits(paths.data)
    if info.is_main():
        log.info("data: %s", layout.summary())
    datasets = build_datasets(layout, cfg.image_size)
    if not distributed.all_equal(_data_fingerprint(layout.classes, layout.roots, datasets), info):
        # Indices of the DistributedSampler mean the same image on every rank only if the data
        # is the same (e.g. not S3 ShardedByS3Key, not another dataset version on one host).
        raise DataError("the hosts of this job hold different datasets (classes or image files)")
    classes = layout.classes
    num_classes = len(classes)

    model = build_model(cfg.backbone, num_classes, cfg.pretrained, cfg.weights, cfg.freeze)
    model.to(device, memory_format=memory_format(cfg))
    ddp_model: nn.Module = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    workers = (
        cfg.workers
        if cfg.workers is not None
        else default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    )
    if info.enabled:
        base_sampler: Sampler[int] = DistributedSampler(
            datasets["train"],
            info.world_size,
            info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
    else:
        base_sampler = RandomSampler(datasets["train"], generator=torch.Generator())
    train_sampler = _ResumableSampler(base_sampler, cfg.batch_size, cfg.seed)
    # drop_last: no tiny final batch (noisy BatchNorm statistics, DDP step mismatch).
    drop_last = len(datasets["train"]) // info.world_size >= cfg.batch_size
    train_loader = make_loader(datasets["train"], cfg, train_sampler, device, workers, drop_last)
    valid_loader = make_loader(
        datasets["valid"], cfg, _eval_sampler(len(datasets["valid"]), info), device, workers, False
    )
    steps_per_epoch = (
        len(base_sampler) // cfg.batch_size
        if drop_last
        else math.ceil(len(base_sampler) / cfg.batch_size)
    )
    if steps_per_epoch == 0:
        raise ConfigError("the training split has no images")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, min(warmup_steps, total_steps))
    )

    state: dict[str, Any] = {
        "epoch": 1,
        "step": 0,
        "best_loss": math.inf,
        "best_epoch": 0,
        "best_weights": None,
        "bad_epochs": 0,
        "history": [],
        "done": False,
        # The interrupted epoch's train totals so far (all ranks: loss sum, correct, count)
        # and rank 0's seconds, so that the resumed epoch's train_* cover the whole epoch.
        "partial": [0.0, 0.0, 0.0],
        "partial_seconds": 0.0,
    }
    # Only rank 0 writes checkpoints, so only its disk is sure to hold one: every rank resumes
    # from rank 0's copy (same weights, optimizer state and position, or DDP would diverge).
    saved = distributed.broadcast_from_main(
        checkpoint.load_checkpoint(paths.checkpoint_dir) if info.is_main() else None, info
    )
    if saved is not None:
        _check_compatible(saved, cfg, classes, paths, info.world_size)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        checkpoint.set_rng_state(saved["rng"][0])  # rank 0's: an exact resume on one process
        if info.rank != 0:  # the other ranks must not draw the same augmentations as rank 0
            checkpoint.seed_everything(cfg.seed + info.rank + 7919 * state["epoch"])
        # No `epoch=` here: that would be scraped as the epoch metric.
        reporting.emit(f"resuming from checkpoint: epoch {state['epoch']} step {state['step']}")

    def save(
        position_epoch: int,
        position_step: int,
        partial: list[float] | None = None,
        partial_seconds: float = 0.0,
    ) -> None:
        state.update(
            epoch=position_epoch,
            step=position_step,
            partial=partial or [0.0, 0.0, 0.0],
            partial_seconds=partial_seconds,
        )
        rngs = [checkpoint.rng_state()]  # rank 0's RNG; the other ranks reseed on resume
        if info.is_main():
            checkpoint.save_checkpoint(
                paths.checkpoint_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": state,
                    "rng": rngs,
                    "config": asdict(cfg),
                    "classes": classes,
                    "world_size": info.world_size,
                },
            )
        distributed.barrier(info)

    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    epoch = state["epoch"]
    while not state["done"] and epoch <= cfg.epochs:
        skip = state["step"]  # > 0 only in the epoch a SIGTERM interrupted
        train_sampler.set_epoch(epoch, skip)
        ddp_model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this rank)
        # All ranks' totals from before a SIGTERM in this epoch (zeros otherwise).
        carried = torch.tensor(state.get("partial", [0.0, 0.0, 0.0]), dtype=torch.float64)
        carried_seconds = float(state.get("partial_seconds", 0.0))
        start = time.perf_counter()
        step = skip
        for images, labels in train_loader:
            images, labels = to_device(images, labels, device, cfg)
            with autocast(device, cfg):
                logits = ddp_model(images)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            n = labels.numel()
            sums += torch.tensor(
                [loss.item() * n, (logits.argmax(1) == labels).sum().item(), n],
                dtype=torch.float64,
            )
            if distributed.any_true(stop.requested, info):
                so_far = distributed.all_reduce_sum(sums, info)  # collective: every rank is here
                save(
                    epoch,
                    step,
                    [float(x) for x in (so_far + carried).tolist()],
                    carried_seconds + time.perf_counter() - start,
                )
                raise TrainingStopped(
                    f"stopped by SIGTERM at epoch {epoch} step {step}/{steps_per_epoch}; "
                    f"checkpoint written to {paths.checkpoint_dir}: rerun to resume"
                )
        elapsed = carried_seconds + time.perf_counter() - start
        if info.enabled:  # this rank's share; the shares add up to one pass over the split
            # No `epoch=` here: SageMaker's MetricDefinitions would scrape it as the epoch.
            reporting.emit(f"rank={info.rank} train_samples={int(sums[2].item())} in epoch {epoch}")
        totals = distributed.all_reduce_sum(sums, info) + carried
        count = totals[2].item()
        if count == 0:  # cannot happen: steps_per_epoch > 0 and an interrupted epoch carries
            raise RuntimeError(f"epoch {epoch} trained no images")
        # The plain module: DDP's forward would sync buffers, and ranks may differ in batches.
        valid_loss, valid_acc, _ = evaluate(model, valid_loader, num_classes, device, cfg, info)
        metrics = {
            "train_loss": totals[0].item() / count,
            "train_acc": totals[1].item() / count,
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "lr": scheduler.get_last_lr()[0],
            "images_per_sec": count / max(elapsed, 1e-9),
        }
        if info.is_main():
            reporting.emit(reporting.epoch_line(epoch, metrics))
        state["history"].append({"epoch": epoch, **metrics})
        if valid_loss < state["best_loss"]:
            state.update(best_loss=valid_loss, best_epoch=epoch, bad_epochs=0)
            state["best_weights"] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            }
        else:
            state["bad_epochs"] += 1
        if state["bad_epochs"] >= cfg.patience:
            if info.is_main():
                reporting.emit(f"early stopping: no better valid_loss for {cfg.patience} epochs")
            state["done"] = True
        if report is not None:
            report(epoch, metrics)
        # After `report`: the tuner prunes a non-finite trial itself (optuna.TrialPruned).
        check_finite(epoch, metrics)
        epoch += 1
        save(epoch, 0)
        if distributed.any_true(stop.requested, info):  # SIGTERM during validation
            raise TrainingStopped(
                f"stopped by SIGTERM after epoch {epoch - 1}; checkpoint written to "
                f"{paths.checkpoint_dir}: rerun to resume"
            )

    return _finish(cfg, paths, info, model, datasets, classes, state, workers)


def _data_fingerprint(
    classes: list[str], roots: dict[str, Path], datasets: dict[str, ImageDataset]
) -> str:
    """Hash of the class names and each split's files (relative to the split's folder)."""
    digest = hashlib.sha256("\n".join(classes).encode())
    for split, dataset in sorted(datasets.items()):
        for path, label in dataset.samples:
            digest.update(f"{split}/{Path(path).relative_to(roots[split])}:{label}\n".encode())
    return digest.hexdigest()


def check_finite(epoch: int, metrics: dict[str, float]) -> None:
    """Raise TrainingDiverged when the epoch's train or valid loss is NaN or infinite."""
    for name in ("train_loss", "valid_loss"):
        if not math.isfinite(metrics[name]):
            raise TrainingDiverged(
                f"training diverged: {name} is {metrics[name]} at epoch {epoch}; "
                "lower learning_rate"
            )


def _check_compatible(
    saved: dict[str, Any],
    cfg: TrainConfig,
    classes: list[str],
    paths: JobPaths,
    world_size: int,
) -> None:
    """Refuse a checkpoint from another job: resuming it would silently train something else
    (or crash: another optimizer or freeze has other optimizer state; another world size
    another number of steps per epoch, so another position and LR schedule)."""
    old = {**saved.get("config", {}), "world_size": saved.get("world_size")}
    new = {**asdict(cfg), "world_size": world_size}
    for key in ("backbone", "image_size", "batch_size", "optimizer", "freeze", "world_size"):
        if old.get(key) != new[key]:
            raise ConfigError(
                f"checkpoint in {paths.checkpoint_dir} is from a run with {key}={old.get(key)!r}, "
                f"this run has {new[key]!r}: use another --checkpoint-dir or remove it"
            )
    if saved.get("classes") != classes:
        raise ConfigError(f"checkpoint in {paths.checkpoint_dir} was trained on other classes")


def _finish(
    cfg: TrainConfig,
    paths: JobPaths,
    info: distributed.DistInfo,
    model: nn.Module,
    datasets: dict[str, Dataset],
    classes: list[str],
    state: dict[str, Any],
    workers: int,
) -> dict[str, float]:
    """Test the best weights, then (rank 0) write model/, metrics.json and the plots."""
    device = info.device
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    test_loader = make_loader(
        datasets["test"], cfg, _eval_sampler(len(datasets["test"]), info), device, workers, False
    )
    test_loss, test_acc, confusion = evaluate(model, test_loader, len(classes), device, cfg, info)
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    final = {
        "valid_loss": best.get("valid_loss", math.nan),
        "valid_acc": best.get("valid_acc", math.nan),
        "test_loss": test_loss,
        "test_acc": test_acc,
    }
    if info.is_main():
        reporting.emit(reporting.final_line(final))
        meta = artifact.ModelMetadata(
            architecture=cfg.backbone,
            num_classes=len(classes),
            image_size=cfg.image_size,
            resize_size=artifact.eval_resize_size(cfg.image_size),
            metrics={**final, "best_epoch": state["best_epoch"]},
            hyperparameters=asdict(cfg),
            versions=_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        artifact.save_model_dir(paths.model_dir, model, classes, meta)
        out = paths.output_data_dir
        reporting.write_metrics(
            out,
            final,
            state["history"],
            best_epoch=state["best_epoch"],
            classes=classes,
            confusion_matrix=confusion.tolist(),
            world_size=info.world_size,
        )
        if state["history"]:
            reporting.plot_curves(out, state["history"])
        reporting.plot_confusion(out, confusion.tolist(), classes)
    distributed.barrier(info)
    return final
