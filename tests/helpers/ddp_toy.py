"""Train a tiny regression with lapnet.train.fit; under torchrun each rank dumps its weights.

Usage: python ddp_toy.py OUT_DIR [MINUTES]   (or: torchrun --nproc_per_node=2 ddp_toy.py OUT_DIR [MINUTES])
With MINUTES, training runs for that time budget instead of 20 epochs (the learning rate then
follows the clock).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from lapnet import distributed
from lapnet.train import TorchLearner, TrainConfig, fit


class Batches:
    def __init__(self, n=96, batch=16):
        g = np.random.default_rng(0)
        self.x = torch.tensor(g.normal(size=(n, 4)), dtype=torch.float64)
        self.y = torch.sin(self.x.sum(1, keepdim=True)) + 0.1
        self.batch = batch

    def steps_per_epoch(self):
        return len(self.x) // self.batch

    def epoch(self, e):  # the same global batches on every rank; TorchLearner shards them
        order = np.random.default_rng((7, e)).permutation(len(self.x))
        for i in range(self.steps_per_epoch()):
            idx = torch.as_tensor(order[i * self.batch:(i + 1) * self.batch])
            yield self.x[idx], self.y[idx]


def main(out: Path, minutes: float | None = None) -> None:
    distributed.init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    data = Batches()

    def loss_fn(net, batch, carry):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x), y), None, len(x)

    def evaluate(m):
        return {"val_loss": torch.nn.functional.mse_loss(m(data.x), data.y).item()}

    cfg = TrainConfig(epochs=20, lr=0.05, progress=False) if minutes is None else \
        TrainConfig(epochs=None, minutes=minutes, lr=0.05, eval_every=20, progress=False)
    res = fit(TorchLearner(model, loss_fn, evaluate, cfg), data, cfg)
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    losses = np.array([h["val_loss"] for h in res.history])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"rank{distributed.rank()}_of{distributed.world_size()}.npz", losses=losses, **arrays)
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None)
