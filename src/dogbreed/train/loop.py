"""The training recipe: one job from a TrainConfig and JobPaths to a model directory.

AdamW or SGD, linear warm-up then cosine decay per step, label smoothing, bf16 autocast where
the hardware runs it fast (a GPU, a CPU with AMX or AVX512-BF16), channels_last, optionally
torch.compile, a DataLoader sized to the machine, validation each epoch with early stopping and
best-weights selection on valid_loss, a final test evaluation of the best weights (test is never
used for selection). Data parallel under torchrun. Laid out like torchvision's
references/classification: `train_one_epoch`, `evaluate`, and a loop over epochs around them.

The hot loop never waits for the device: running sums stay on it and are read once per epoch,
and the ranks agree on a SIGTERM only every few seconds (`StopPoll`), not at every step.

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
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from dogbreed import hostcpu
from dogbreed.config import ConfigError, TrainConfig
from dogbreed.data.dataset import ImageDataset, build_datasets
from dogbreed.data.layout import DataError, find_channel_splits
from dogbreed.data.presets import eval_resize_size
from dogbreed.model import artifact, precision
from dogbreed.model.build import build_model, trainable_parameters
from dogbreed.train import checkpoint, distributed
from dogbreed.train import report as reporting
from dogbreed.train.checkpoint import TrainState
from dogbreed.train.environment import EXIT_ERROR, JobPaths, write_failure

log = logging.getLogger(__name__)

ReportFn = Callable[[int, dict[str, float]], None]

# Ranks agree on a SIGTERM about this often: the bound on the stop's delay is this plus one step
# and the checkpoint write, far inside the 120 s before SIGKILL.
STOP_POLL_SECONDS = 5.0


class TrainingStopped(Exception):
    """SIGTERM arrived; a checkpoint was written and a restart resumes from it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage, no model is written."""


class _StopFlag:
    """Set by SIGTERM; the loop polls it between steps (never interrupts a step midway)."""

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


class StopPoll:
    """Whether all ranks stop now; every rank must call `stop_now` after each step.

    One process reads its flag at every step (free). Ranks agree in one all-reduce, held only
    at the steps due for it (about every STOP_POLL_SECONDS): the interval comes from the
    all-reduced seconds per step, so every rank computes the same next step and all ranks
    meet in the same collective.
    """

    def __init__(
        self,
        flag: _StopFlag,
        info: distributed.DistInfo,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.flag = flag
        self.info = info
        self.clock = clock
        self.polls = 0
        self.start_epoch(0)

    def start_epoch(self, first_step: int) -> None:
        self.first_step = first_step
        self.next_step = first_step + 1
        self.started = self.clock()

    def stop_now(self, step: int) -> bool:
        if not self.info.enabled:
            return self.flag.requested
        if step < self.next_step:
            return False
        self.polls += 1
        seen = torch.tensor([float(self.flag.requested), self.clock() - self.started])
        flag_sum, seconds_sum = distributed.all_reduce_sum(seen, self.info).tolist()
        per_step = seconds_sum / self.info.world_size / (step - self.first_step)
        self.next_step = step + max(1, int(STOP_POLL_SECONDS / max(per_step, 1e-6)))
        return flag_sum > 0

    def stop_any(self) -> bool:
        """All ranks agree now (an epoch boundary: one collective per epoch)."""
        return distributed.any_true(self.flag.requested, self.info)


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
    """Decode/augment workers per process: its share of the CPUs (cgroup quota honoured) minus
    one for the main process (which runs the model on CPU or feeds the GPU), at most 8."""
    return max(0, min(8, hostcpu.available_cpus() // max(local_world_size, 1) - 1))


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when `amp` is on and the device runs it fast, else None (fp32).

    A CPU without AMX or AVX512-BF16 emulates bf16 and is slower than in fp32, so it stays fp32.
    """
    if not cfg.amp:
        return None
    if device.type == "cuda" or (device.type == "cpu" and hostcpu.fast_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _log_precision(cfg: TrainConfig, device: torch.device, dtype: torch.dtype | None) -> None:
    if dtype is not None:
        why = "GPU" if device.type == "cuda" else "CPU flags include amx_bf16 or avx512_bf16"
        log.info("precision: bf16 autocast (%s)", why)
    elif not cfg.amp:
        log.info("precision: fp32 (amp off)")
    else:
        log.info("precision: fp32 (this CPU has neither amx_bf16 nor avx512_bf16)")


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def to_device(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True, memory_format=memory_format(cfg))
    return images, labels.to(device, non_blocking=True)


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


@dataclass
class Job:
    """What one run works with, fixed once it is set up."""

    cfg: TrainConfig
    paths: JobPaths
    info: distributed.DistInfo
    classes: list[str]
    datasets: dict[str, ImageDataset]
    model: nn.Module  # the plain module: evaluation, checkpoints, export
    step_model: nn.Module  # what training steps run: `model`, inside DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    sampler: _ResumableSampler
    train_loader: DataLoader
    valid_loader: DataLoader
    steps_per_epoch: int
    workers: int
    dtype: torch.dtype | None  # autocast dtype, None: fp32

    @property
    def device(self) -> torch.device:
        return self.info.device


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, logits), still on the device (no sync)."""
    with autocast(images.device, dtype):
        logits = model(images)
        loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def train_one_epoch(job: Job, state: TrainState, poll: StopPoll) -> tuple[torch.Tensor, float]:
    """Train `state.epoch` from `state.step` on; returns all ranks' (loss sum, correct, count)
    over the whole epoch (an interrupted start included) and the epoch's seconds.

    Raises TrainingStopped after writing a checkpoint when the ranks agree on a SIGTERM.
    """
    epoch, step = state.epoch, state.step
    job.sampler.set_epoch(epoch, step)
    job.step_model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=job.device)  # this rank's, on the device
    carried = torch.tensor(state.partial, dtype=torch.float64)  # all ranks', before a SIGTERM
    start = time.perf_counter() - state.partial_seconds
    poll.start_epoch(step)
    for images, labels in job.train_loader:
        images, labels = to_device(images, labels, job.device, job.cfg)
        loss, logits = train_step(
            job.step_model, images, labels, job.optimizer, job.loss_fn, job.dtype
        )
        job.scheduler.step()
        step += 1
        sums[0] += loss.detach() * labels.numel()
        sums[1] += (logits.argmax(1) == labels).sum()
        sums[2] += labels.numel()
        if poll.stop_now(step):
            so_far = distributed.all_reduce_sum(sums, job.info) + carried  # every rank is here
            state.epoch, state.step = epoch, step
            state.partial, state.partial_seconds = so_far.tolist(), time.perf_counter() - start
            _save(job, state)
            raise TrainingStopped(
                f"stopped by SIGTERM at epoch {epoch} step {step}/{job.steps_per_epoch}; "
                f"checkpoint written to {job.paths.checkpoint_dir}: rerun to resume"
            )
    if job.info.enabled:  # this rank's share; the shares add up to one pass over the split
        # No `epoch=` here: SageMaker's MetricDefinitions would scrape it as the epoch.
        reporting.emit(f"rank={job.info.rank} train_samples={int(sums[2])} in epoch {epoch}")
    totals = distributed.all_reduce_sum(sums, job.info) + carried  # the epoch's one sync
    return totals, time.perf_counter() - start


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    cfg: TrainConfig,
    info: distributed.DistInfo,
    dtype: torch.dtype | None,
) -> tuple[float, float, torch.Tensor]:
    """(per-sample loss, accuracy, confusion matrix) over the whole split, all ranks summed."""
    model.eval()
    # Summed on the device, read once at the end: no sync per batch.
    totals = torch.zeros(1 + num_classes * num_classes, dtype=torch.float64, device=device)
    for images, labels in loader:
        images, labels = to_device(images, labels, device, cfg)
        with autocast(device, dtype):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        pairs = labels * num_classes + logits.argmax(1)
        totals[1:] += torch.bincount(pairs, minlength=num_classes * num_classes)
    totals = distributed.all_reduce_sum(totals, info)
    matrix = totals[1:].view(num_classes, num_classes)
    count = matrix.sum().item()  # > 0: build_datasets refuses an empty split
    return totals[0].item() / count, matrix.diag().sum().item() / count, matrix.long()


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
    reporting.emit(f"world_size={info.world_size} rank={info.rank} device={info.device}")
    checkpoint.seed_everything(cfg.seed + info.rank)
    job = _setup(cfg, paths, info)
    state = _resume(job)
    poll = StopPoll(stop, info)
    while not state.done and state.epoch <= cfg.epochs:
        totals, seconds = train_one_epoch(job, state, poll)
        metrics = _validate_epoch(job, state, totals, seconds)
        if report is not None:
            report(state.epoch, metrics)
        # After `report`: the tuner prunes a non-finite trial itself (optuna.TrialPruned).
        check_finite(state.epoch, metrics)
        state.epoch, state.step = state.epoch + 1, 0
        state.partial, state.partial_seconds = [0.0, 0.0, 0.0], 0.0
        _save(job, state)
        if poll.stop_any():  # SIGTERM during validation, or after the epoch's last poll
            raise TrainingStopped(
                f"stopped by SIGTERM after epoch {state.epoch - 1}; checkpoint written to "
                f"{paths.checkpoint_dir}: rerun to resume"
            )
    return _finish(job, state)


def _setup(cfg: TrainConfig, paths: JobPaths, info: distributed.DistInfo) -> Job:
    """Data, model, loaders, optimizer and schedule: everything the epochs share."""
    device = info.device
    layout = find_channel_splits(paths.data)
    if info.is_main():
        log.info("data: %s", layout.summary())
    datasets = build_datasets(layout, cfg.image_size)
    if not distributed.all_equal(_data_fingerprint(layout.classes, layout.roots, datasets), info):
        # Indices of the DistributedSampler mean the same image on every rank only if the data
        # is the same (e.g. not S3 ShardedByS3Key, not another dataset version on one host).
        raise DataError("the hosts of this job hold different datasets (classes or image files)")
    model = build_model(cfg.backbone, len(layout.classes), cfg.pretrained, cfg.weights, cfg.freeze)
    model.to(device, memory_format=memory_format(cfg))
    dtype = amp_dtype(cfg, device)
    if info.is_main():
        _log_precision(cfg, device, dtype)
    workers = (
        cfg.workers
        if cfg.workers is not None
        else default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    )
    sampler, train_loader, steps_per_epoch = _train_loader(cfg, datasets["train"], info, workers)
    valid_sampler = _eval_sampler(len(datasets["valid"]), info)
    optimizer = _optimizer(cfg, model)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, min(warmup_steps, total_steps))
    )
    return Job(
        cfg=cfg,
        paths=paths,
        info=info,
        classes=layout.classes,
        datasets=datasets,
        model=model,
        step_model=_step_model(cfg, model, info),
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        sampler=sampler,
        train_loader=train_loader,
        valid_loader=make_loader(datasets["valid"], cfg, valid_sampler, device, workers, False),
        steps_per_epoch=steps_per_epoch,
        workers=workers,
        dtype=dtype,
    )


def _step_model(cfg: TrainConfig, model: nn.Module, info: distributed.DistInfo) -> nn.Module:
    """DDP around the model (several processes), then torch.compile (when asked) around that:
    compiling the DDP module lets the compiler split the graph at DDP's gradient buckets."""
    wrapped: nn.Module = model
    if info.enabled:
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _train_loader(
    cfg: TrainConfig, dataset: ImageDataset, info: distributed.DistInfo, workers: int
) -> tuple[_ResumableSampler, DataLoader, int]:
    """The resumable training sampler, its loader and the number of steps per epoch."""
    if info.enabled:
        base: Sampler[int] = DistributedSampler(
            dataset, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
    else:
        base = RandomSampler(dataset, generator=torch.Generator())
    sampler = _ResumableSampler(base, cfg.batch_size, cfg.seed)
    # drop_last: no tiny final batch (noisy BatchNorm statistics, DDP step mismatch).
    drop_last = len(dataset) // info.world_size >= cfg.batch_size
    loader = make_loader(dataset, cfg, sampler, info.device, workers, drop_last)
    steps = len(base) // cfg.batch_size if drop_last else math.ceil(len(base) / cfg.batch_size)
    if steps == 0:
        raise ConfigError("the training split has no images")
    return sampler, loader, steps


def _resume(job: Job) -> TrainState:
    """The checkpoint's state with the model, optimizer, schedule and RNG restored, or a new one.

    Only rank 0 writes checkpoints, so only its disk is sure to hold one: every rank resumes
    from rank 0's copy (same weights, optimizer state and position, or DDP would diverge).
    """
    info = job.info
    saved = distributed.broadcast_from_main(
        checkpoint.load_checkpoint(job.paths.checkpoint_dir) if info.is_main() else None, info
    )
    if saved is None:
        return TrainState()
    checkpoint.check_compatible(
        saved, job.cfg, job.classes, job.paths.checkpoint_dir, info.world_size
    )
    job.model.load_state_dict(saved["model"])
    job.optimizer.load_state_dict(saved["optimizer"])
    job.scheduler.load_state_dict(saved["scheduler"])
    state = TrainState.from_dict(saved["state"])
    checkpoint.set_rng_state(saved["rng"][0])  # rank 0's: an exact resume on one process
    if info.rank != 0:  # the other ranks must not draw the same augmentations as rank 0
        checkpoint.seed_everything(job.cfg.seed + info.rank + 7919 * state.epoch)
    # No `epoch=` here: that would be scraped as the epoch metric.
    reporting.emit(f"resuming from checkpoint: epoch {state.epoch} step {state.step}")
    return state


def _save(job: Job, state: TrainState) -> None:
    """Rank 0 writes the checkpoint (its RNG: the other ranks reseed on resume); all wait."""
    if job.info.is_main():
        checkpoint.save_checkpoint(
            job.paths.checkpoint_dir,
            {
                "model": job.model.state_dict(),
                "optimizer": job.optimizer.state_dict(),
                "scheduler": job.scheduler.state_dict(),
                "state": state.to_dict(),
                "rng": [checkpoint.rng_state()],
                "config": asdict(job.cfg),
                "classes": job.classes,
                "world_size": job.info.world_size,
            },
        )
    distributed.barrier(job.info)


def _validate_epoch(
    job: Job, state: TrainState, totals: torch.Tensor, seconds: float
) -> dict[str, float]:
    """Validate, print the epoch line, and update the history, the best weights and the
    early-stopping count; returns the epoch's metrics."""
    loss_sum, correct, count = totals.tolist()
    if count == 0:  # cannot happen: steps_per_epoch > 0 and an interrupted epoch carries
        raise RuntimeError(f"epoch {state.epoch} trained no images")
    # The plain module: DDP's forward would sync buffers, and ranks may differ in batches.
    valid_loss, valid_acc, _ = evaluate(
        job.model, job.valid_loader, len(job.classes), job.device, job.cfg, job.info, job.dtype
    )
    metrics = {
        "train_loss": loss_sum / count,
        "train_acc": correct / count,
        "valid_loss": valid_loss,
        "valid_acc": valid_acc,
        "lr": job.scheduler.get_last_lr()[0],
        "images_per_sec": count / max(seconds, 1e-9),
    }
    state.history.append({"epoch": state.epoch, **metrics})
    if job.info.is_main():
        reporting.emit(reporting.epoch_line(state.epoch, metrics))
        reporting.write_history(job.paths.intermediate_dir, state.history)
    if valid_loss < state.best_loss:
        state.best_loss, state.best_epoch, state.bad_epochs = valid_loss, state.epoch, 0
        weights = job.model.state_dict()
        state.best_weights = {k: v.detach().cpu().clone() for k, v in weights.items()}
    else:
        state.bad_epochs += 1
    if state.bad_epochs >= job.cfg.patience:
        if job.info.is_main():
            reporting.emit(f"early stopping: no better valid_loss for {job.cfg.patience} epochs")
        state.done = True
    return metrics


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


def _finish(job: Job, state: TrainState) -> dict[str, float]:
    """Test the best weights, then (rank 0) write model/, metrics.json and the plots."""
    cfg, info, classes, model = job.cfg, job.info, job.classes, job.model
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    test_set = job.datasets["test"]
    test_loader = make_loader(
        test_set, cfg, _eval_sampler(len(test_set), info), job.device, job.workers, False
    )
    test_loss, test_acc, confusion = evaluate(
        model, test_loader, len(classes), job.device, cfg, info, job.dtype
    )
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    final = {
        "valid_loss": best.get("valid_loss", math.nan),
        "valid_acc": best.get("valid_acc", math.nan),
        "test_loss": test_loss,
        "test_acc": test_acc,
    }
    if info.is_main():
        reporting.emit(reporting.final_line(final))
        _write_outputs(job, state, final, confusion.tolist())
    distributed.barrier(info)
    return final


def _write_outputs(
    job: Job, state: TrainState, final: dict[str, float], confusion: list[list[int]]
) -> None:
    """model/ (what serving loads), metrics.json and the plots."""
    cfg = job.cfg
    meta = artifact.ModelMetadata(
        architecture=cfg.backbone,
        num_classes=len(job.classes),
        image_size=cfg.image_size,
        resize_size=eval_resize_size(cfg.image_size),
        metrics={**final, "best_epoch": state.best_epoch},
        hyperparameters=asdict(cfg),
        versions=_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    artifact.save_model_dir(job.paths.model_dir, job.model, job.classes, meta)
    # The gate: reduced-precision serving paths measured against fp32 on the validation
    # images, the verdicts recorded in metadata.json.
    validation = [path for path, _ in job.datasets["valid"].samples]
    precision.gate_in_subprocess(job.paths.model_dir, validation)
    out = job.paths.output_data_dir
    reporting.write_metrics(
        out,
        final,
        state.history,
        best_epoch=state.best_epoch,
        classes=job.classes,
        confusion_matrix=confusion,
        world_size=job.info.world_size,
    )
    if state.history:
        reporting.plot_curves(out, state.history)
    reporting.plot_confusion(out, confusion, job.classes)
