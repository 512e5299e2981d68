"""A training run that checkpoints at every step, for the crash-safety tests.

Usage: python crash_toy.py OUT_DIR STEPS [--resume] [--slow-writes]
With --slow-writes every fsync sleeps, so most of the run's time is spent inside
checkpoint writes and a random SIGKILL lands in the middle of one.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

import lapnet.checkpoint as ckpt
from lapnet.train import TorchLearner, TrainConfig, fit


class Batches:
    def __init__(self):
        g = np.random.default_rng(0)
        self.x = torch.tensor(g.normal(size=(256, 64)), dtype=torch.float32)
        self.y = self.x[:, :1] * 2.0

    def steps_per_epoch(self):
        return 8

    def epoch(self, e):
        order = np.random.default_rng((1, e)).permutation(256)
        for i in range(8):
            idx = torch.as_tensor(order[i * 32:(i + 1) * 32])
            yield self.x[idx], self.y[idx]


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    if "--slow-writes" in sys.argv:
        real_fsync = ckpt.os.fsync

        def slow_fsync(fd):
            time.sleep(0.05)
            real_fsync(fd)

        ckpt.os.fsync = slow_fsync
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.Tanh(), torch.nn.Linear(512, 1))  # ~35k params
    data = Batches()

    def loss_fn(net, batch, carry):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x), y), None, len(x)

    def evaluate(m):
        return {"val_loss": torch.nn.functional.mse_loss(m(data.x), data.y).item()}

    cfg = TrainConfig(epochs=None, max_steps=steps, eval_every=1, lr=1e-3, progress=False)
    res = fit(TorchLearner(model, loss_fn, evaluate, cfg), data, cfg, out=out, resume="--resume" in sys.argv)
    print(f"stopped={res.stopped} steps={res.steps}", flush=True)


if __name__ == "__main__":
    main()
