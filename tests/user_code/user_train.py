"""A user's own training script, as a team brings it to AWS's PyTorch training image.

Run by the tests through the SageMaker SDKs (script mode) in the dogbreed training image:
reads its hyperparameters as arguments and the job from the toolkit's SM_* variables, trains a
tiny model with DDP when torchrun started several processes, and writes its model and a record
of what it saw to SM_MODEL_DIR.
"""

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--learning-rate", "--learning_rate", type=float, default=0.1)
    args = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(rank)
    model = torch.nn.Linear(4, 1)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    for _ in range(args.steps):
        x = torch.randn(16, 4)
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seen = torch.tensor([1.0])
    if world > 1:
        dist.all_reduce(seen)  # every rank took part
    if rank == 0:
        out = Path(os.environ["SM_MODEL_DIR"])
        torch.save(model.state_dict(), out / "user_model.pt")
        record = {
            "world_size": world,
            "ranks_seen": int(seen.item()),
            "steps": args.steps,
            "learning_rate": args.learning_rate,
            "hosts": json.loads(os.environ.get("SM_HOSTS", "[]")),
            "channels": json.loads(os.environ.get("SM_CHANNELS", "[]")),
        }
        (out / "user_record.json").write_text(json.dumps(record))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
