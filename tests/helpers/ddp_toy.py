"""Train a tiny regression with lapnet.train.fit; under torchrun each rank dumps its weights.

Usage: python ddp_toy.py OUT_DIR [--minutes M] [--batch B] [--numpy]
(or: torchrun --nproc_per_node=2 ddp_toy.py OUT_DIR ...). With --minutes, training runs for
that time budget instead of 20 epochs (the learning rate then follows the clock); --batch sets
the global batch (16; 5 gives the two ranks shards of 3 and 2, 1 leaves one rank empty);
--numpy yields NumPy arrays instead of tensors, as the text model's batches do.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from lapnet import distributed
from lapnet.train import TorchLearner, TrainConfig, fit


class Batches:
    def __init__(self, n=96, batch=16, numpy=False):
        g = np.random.default_rng(0)
        self.x = torch.tensor(g.normal(size=(n, 4)), dtype=torch.float64)
        self.y = torch.sin(self.x.sum(1, keepdim=True)) + 0.1
        self.batch, self.numpy = batch, numpy

    def steps_per_epoch(self):
        return -(-len(self.x) // self.batch)  # the last batch may be short

    def epoch(self, e):  # the same global batches on every rank; TorchLearner shards them
        order = np.random.default_rng((7, e)).permutation(len(self.x))
        for i in range(self.steps_per_epoch()):
            idx = torch.as_tensor(order[i * self.batch:(i + 1) * self.batch])
            x, y = self.x[idx], self.y[idx]
            yield (x.numpy(), y.numpy()) if self.numpy else (x, y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--numpy", action="store_true")
    a = ap.parse_args()
    distributed.init_from_env()
    try:
        run(a)
    finally:  # also on an error: leave the group before exit (shutdown skips the barrier then)
        distributed.shutdown()


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    data = Batches(batch=a.batch, numpy=a.numpy)
    seen = []

    def loss_fn(net, batch, carry):
        x, y = (torch.as_tensor(b) for b in batch)
        seen.append(len(x))
        return torch.nn.functional.mse_loss(net(x), y), None, len(x)

    def evaluate(m):
        return {"val_loss": torch.nn.functional.mse_loss(m(data.x), data.y).item()}

    cfg = TrainConfig(epochs=20, lr=0.05, progress=False) if a.minutes is None else \
        TrainConfig(epochs=None, minutes=a.minutes, lr=0.05, eval_every=20, progress=False)
    res = fit(TorchLearner(model, loss_fn, evaluate, cfg), data, cfg)
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    losses = np.array([h["val_loss"] for h in res.history])
    a.out.mkdir(parents=True, exist_ok=True)
    np.savez(a.out / f"rank{distributed.rank()}_of{distributed.world_size()}.npz", losses=losses,
             seen=np.array(seen[:8]), **arrays)


if __name__ == "__main__":
    main()
