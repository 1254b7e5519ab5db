"""Training throughput (images/s): fp32 vs bf16, real JPEGs vs synthetic tensors, against the
original's way, all in the same run.

Every variant trains the same model (same backbone, seed and initial weights, AdamW) for the same
number of timed steps after the same untimed warm-up steps, through the trainer's own step
(`dogbreed.train.loop.train_step`):

- baseline, as the original did it: PIL decode, `Resize((S, S))` (aspect ratio lost),
  `ToTensor`, no normalisation, fp32, contiguous memory format, a default DataLoader
  (`shuffle=True`, no workers, no pinning);
- ours, JPEG: `dogbreed.train.loop`'s pieces: the dataset with draft JPEG decoding,
  RandomResizedCrop + flip + jitter + ImageNet normalisation, the tuned DataLoader (workers from
  the cgroup-aware CPU count, pinned memory and prefetch on GPU), channels_last, in fp32 and
  in bf16 autocast;
- ours, synthetic: the same step on random tensors already in memory: the compute ceiling the
  JPEG pipeline is measured against;
- with `--compile`, the bf16 rows again with `torch.compile` (compiled once per backbone, in
  the first round's warm-up steps).

The precision is forced per row (a CPU without AMX/AVX512-BF16 shows how slow bf16 is there);
the header says which one the trainer picks on this machine. Images/s counts the whole step:
waiting for the batch, copy to the device, forward, backward, optimizer step, synchronised on
GPU. The variants alternate (`--repeats` rounds, each from the same initial weights) and the
median is reported, so that load from other processes on the machine hits all alike.

    python bench/bench_train.py --backbones resnet18,resnet50 --image-size 224 --batch-size 16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from dogbreed import hostcpu
from dogbreed.config import TrainConfig
from dogbreed.data.dataset import build_datasets
from dogbreed.data.layout import Sample, find_splits
from dogbreed.data.sample import generate_sample
from dogbreed.model.build import build_model
from dogbreed.train.loop import (
    amp_dtype,
    default_workers,
    make_loader,
    memory_format,
    to_device,
    train_step,
)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class OriginalStyleDataset(Dataset):
    """What the original's ImageFolder + transforms amounted to."""

    def __init__(self, samples: list[Sample], size: int) -> None:
        self.samples = samples
        self.transform = transforms.Compose(
            [transforms.Resize((size, size)), transforms.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(Image.open(path).convert("RGB")), label


@dataclass
class Variant:
    name: str
    cfg: TrainConfig  # memory format
    dtype: torch.dtype | None
    batches: Batches
    workers: int
    compiled: bool = False


def synthetic(cfg: TrainConfig, classes: int, count: int = 4) -> Batches:
    """A few random batches in memory, reused: no decoding at all."""
    generator = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    return [
        (torch.randn(shape, generator=generator), torch.randint(0, classes, (cfg.batch_size,)))
        for _ in range(count)
    ]


def forever(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return itertools.chain.from_iterable(itertools.repeat(batches))  # epochs back to back


def measure(
    variant: Variant, model: nn.Module, device: torch.device, warmup: int, steps: int
) -> float:
    """Images per second over `steps` training steps after `warmup` untimed ones."""
    model.train()
    step_model = torch.compile(model) if variant.compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=variant.cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    batches = forever(variant.batches)
    images_done = 0
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            images_done = 0
        images, labels = to_device(*next(batches), device, variant.cfg)
        train_step(step_model, images, labels, optimizer, loss_fn, variant.dtype)
        images_done += labels.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images_done / (time.perf_counter() - start)


def variants(args: argparse.Namespace, data: Path, device: torch.device) -> list[Variant]:
    layout = find_splits(data)
    ours = TrainConfig(image_size=args.image_size, batch_size=args.batch_size)
    baseline = ours.replace(channels_last=False)
    workers = args.workers if args.workers is not None else default_workers(1)
    dataset = build_datasets(layout, args.image_size)["train"]
    jpeg = make_loader(dataset, ours, RandomSampler(dataset), device, workers, drop_last=True)
    original = DataLoader(
        OriginalStyleDataset(layout.samples["train"], args.image_size),
        batch_size=args.batch_size,
        shuffle=True,
    )
    fake = synthetic(ours, len(layout.classes))
    bf16 = torch.bfloat16
    rows = [
        Variant("baseline (original)", baseline, None, original, 0),
        Variant("ours, JPEG", ours, None, jpeg, workers),
        Variant("ours, JPEG", ours, bf16, jpeg, workers),
        Variant("ours, synthetic", ours, None, fake, 0),
        Variant("ours, synthetic", ours, bf16, fake, 0),
    ]
    if args.compile:
        rows += [
            Variant("ours, JPEG, compiled", ours, bf16, jpeg, workers, compiled=True),
            Variant("ours, synthetic, compiled", ours, bf16, fake, 0, compiled=True),
        ]
    return rows


def run_backbone(
    backbone: str, rows: list[Variant], classes: int, device: torch.device, args: argparse.Namespace
) -> list[list[float]]:
    """Images/s of every row in every round; one model per row, reset to the same weights."""
    torch.manual_seed(0)
    initial = build_model(backbone, classes).state_dict()
    models = []
    for variant in rows:
        model = build_model(backbone, classes)
        models.append(model.to(device, memory_format=memory_format(variant.cfg)))
    rates: list[list[float]] = [[] for _ in rows]
    for _ in range(args.repeats):
        for variant, model, runs in zip(rows, models, rates, strict=True):
            model.load_state_dict(initial)
            runs.append(measure(variant, model, device, args.warmup, args.steps))
    return rates


def print_table(backbone: str, rows: list[Variant], rates: list[list[float]]) -> None:
    print(f"\nbackbone={backbone}")
    print(
        f"{'variant':<26} {'precision':<9} {'memory':<14} {'workers':>7} "
        f"{'images/s (median)':>18} {'min-max':>12} {'x baseline':>10}"
    )
    base = statistics.median(rates[0])
    for variant, runs in zip(rows, rates, strict=True):
        median = statistics.median(runs)
        memory = "channels_last" if variant.cfg.channels_last else "contiguous"
        precision = "bf16" if variant.dtype is not None else "fp32"
        print(
            f"{variant.name:<26} {precision:<9} {memory:<14} {variant.workers:>7} "
            f"{median:>18.1f} {f'{min(runs):.1f}-{max(runs):.1f}':>12} {median / base:>9.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dogImages root (default: generated sample)")
    parser.add_argument("--classes", type=int, default=5, help="generated sample: classes")
    parser.add_argument("--per-class", type=int, default=32, help="generated sample: images")
    parser.add_argument("--backbones", default="resnet18,resnet50", help="comma-separated")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--workers", type=int, help="our DataLoader workers (default: auto)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; median")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = amp_dtype(TrainConfig(), device)
    flags = sorted(hostcpu.FAST_BF16_FLAGS & hostcpu.cpu_flags()) or ["none"]
    print(
        f"device={device} image_size={args.image_size} batch_size={args.batch_size} "
        f"steps={args.steps} warmup={args.warmup} repeats={args.repeats} "
        f"torch_threads={torch.get_num_threads()} cpus={hostcpu.available_cpus()} "
        f"bf16_cpu_flags={','.join(flags)} "
        f"trainer_picks={'bf16' if chosen is not None else 'fp32'}",
        flush=True,  # before DataLoader workers fork: they would flush a copy of the buffer
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = generate_sample(
                Path(tmp) / "data", classes=args.classes, per_class=args.per_class, seed=0
            )
        rows = variants(args, data, device)
        classes = len(find_splits(data).classes)
        for backbone in args.backbones.split(","):
            print_table(backbone, rows, run_backbone(backbone, rows, classes, device, args))


if __name__ == "__main__":
    main()
