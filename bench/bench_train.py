"""Training throughput (images/s) of our loop against the original's way, in the same run.

Both variants train the same model (same backbone, seed and initial weights, AdamW) on the same
images for the same number of timed steps, after the same warm-up steps:

- baseline, as the original did it: PIL decode, `Resize((S, S))` (aspect ratio lost),
  `ToTensor`, no normalisation, fp32, contiguous memory format, a default DataLoader
  (`shuffle=True`, no workers, no pinning);
- ours, `dogbreed.train.loop`'s pieces: the dataset with draft JPEG decoding, RandomResizedCrop
  + flip + jitter + ImageNet normalisation, the tuned DataLoader (workers from the CPU count,
  pinned memory and prefetch on GPU), channels_last, bf16 autocast on GPU.

Images/s counts the whole step: waiting for the batch, copy to the device, forward, backward,
optimizer step, synchronised on GPU. The variants alternate (`--repeats` rounds, each from the
same initial weights) and the median is reported, so that load from other processes on the
machine hits both alike.

    python bench/bench_train.py --backbone resnet18 --image-size 224 --batch-size 16 --steps 8
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from dogbreed.config import TrainConfig
from dogbreed.data.dataset import build_datasets
from dogbreed.data.layout import Sample, find_splits
from dogbreed.data.sample import generate_sample
from dogbreed.model.build import build_model
from dogbreed.train.loop import (
    autocast,
    default_workers,
    make_loader,
    memory_format,
    to_device,
)


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


def measure(
    loader: DataLoader,
    model: nn.Module,
    device: torch.device,
    cfg: TrainConfig,
    warmup: int,
    steps: int,
) -> float:
    """Images per second over `steps` training steps after `warmup` untimed ones."""
    model.to(device, memory_format=memory_format(cfg))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epochs back to back
    images_done = 0
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            images_done = 0
        images, labels = next(batches)
        images, labels = to_device(images, labels, device, cfg)
        with autocast(device, cfg):
            loss = loss_fn(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images_done += labels.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images_done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dogImages root (default: generated sample)")
    parser.add_argument("--classes", type=int, default=5, help="generated sample: classes")
    parser.add_argument("--per-class", type=int, default=32, help="generated sample: images")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--workers", type=int, help="our DataLoader workers (default: auto)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; median")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate_sample(data, classes=args.classes, per_class=args.per_class, seed=0)
        layout = find_splits(data)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        ours_cfg = TrainConfig(
            backbone=args.backbone,
            image_size=args.image_size,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        workers = args.workers if args.workers is not None else default_workers(1)
        baseline_cfg = ours_cfg.replace(amp=False, channels_last=False)
        train_samples = layout.samples["train"]
        baseline_loader = DataLoader(
            OriginalStyleDataset(train_samples, args.image_size),
            batch_size=args.batch_size,
            shuffle=True,
        )
        dataset = build_datasets(layout, args.image_size)["train"]
        ours_loader = make_loader(
            dataset, ours_cfg, RandomSampler(dataset), device, workers, drop_last=True
        )
        variants = (
            ("baseline (original)", baseline_cfg, baseline_loader, 0),
            ("ours (dogbreed)", ours_cfg, ours_loader, workers),
        )
        rates: dict[str, list[float]] = {name: [] for name, *_ in variants}
        for _ in range(args.repeats):
            for name, cfg, loader, _ in variants:
                torch.manual_seed(0)
                model = build_model(args.backbone, len(layout.classes))
                rates[name].append(measure(loader, model, device, cfg, args.warmup, args.steps))
        rows = []
        for name, cfg, _, n_workers in variants:
            amp = "bf16" if cfg.amp and device.type == "cuda" else "fp32"
            layout_name = "channels_last" if cfg.channels_last else "contiguous"
            rows.append((name, amp, layout_name, n_workers, rates[name]))

    print(
        f"device={device} backbone={args.backbone} image_size={args.image_size} "
        f"batch_size={args.batch_size} steps={args.steps} warmup={args.warmup} "
        f"repeats={args.repeats} "
        f"train_images={len(train_samples)} torch_threads={torch.get_num_threads()}"
    )
    header = f"{'variant':<22} {'precision':<9} {'memory':<14} {'workers':>7}"
    print(f"{header} {'images/s (median)':>18} {'min-max':>12}")
    for name, amp, layout_name, n_workers, runs in rows:
        spread = f"{min(runs):.1f}-{max(runs):.1f}"
        print(
            f"{name:<22} {amp:<9} {layout_name:<14} {n_workers:>7} "
            f"{statistics.median(runs):>18.1f} {spread:>12}"
        )
    ratio = statistics.median(rows[1][4]) / statistics.median(rows[0][4])
    print(f"speed-up ours/baseline (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
