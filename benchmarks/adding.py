"""The adding problem, long runs: how many steps each architecture needs to solve it
(test MSE < 0.01, against the 0.167 variance baseline) at T = 50, 100, 200.

`lapnet adding` runs the same experiment with a short budget (a few minutes on 2 cores);
this script gives each (architecture, T) a budget large enough for the slow learners, so
"not solved" becomes a number of steps wherever the budget allows. It prints the table,
and writes the figures and metrics.json into --out.

    python benchmarks/adding.py                          # everything, up to 20000 steps each
    python benchmarks/adding.py --archs rnn --lengths 50,100 --max-steps 30000

Timings are wall-clock on whatever else the machine is running: compare steps, not seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from lapnet.experiments.adding import AddingConfig, assemble, train_adding  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="rnn,lstm,gru")
    p.add_argument("--lengths", default="50,100,200")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=20000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_adding")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = AddingConfig(archs=tuple(a.archs.split(",")), lengths=tuple(int(t) for t in a.lengths.split(",")),
                       hidden=a.hidden, batch_size=a.batch, max_steps=a.max_steps, eval_every=a.eval_every,
                       lr=a.lr, clip=a.clip, seed=a.seed)
    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"adding problem, H={a.hidden}, batch {a.batch}, Adam lr {a.lr}, clip {a.clip}, budget {a.max_steps} steps")
    print(f"{'arch':6} {'T':>5} {'steps to MSE<0.01':>18} {'final test MSE':>15} {'seconds':>8}", flush=True)
    runs: dict[str, dict[str, dict]] = {}
    for arch in cfg.archs:  # one (arch, T) at a time, each written as soon as it ends
        for T in cfg.lengths:
            _, r = train_adding(arch, T, cfg, progress=False)
            runs.setdefault(arch, {})[str(T)] = r
            with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"arch": arch, "T": T, **r}) + "\n")
            steps = r["steps_to_solve"] if r["steps_to_solve"] is not None else f"> {a.max_steps}"
            print(f"{arch.upper():6} {T:>5} {steps!s:>18} {r['final_test_mse']:>15.4f} {r['seconds']:>8.0f}", flush=True)
    by = {(a_, int(T)): r["steps_to_solve"] for a_, d in runs.items() for T, r in d.items()}
    for T in cfg.lengths:
        lstm, rnn = by.get(("lstm", T)), by.get(("rnn", T))
        if lstm and rnn:
            print(f"T={T}: the RNN needed {rnn / lstm:.1f}x the LSTM's steps")
    result = assemble(runs, cfg)
    result.save(out)
    print(f"total {time.perf_counter() - t0:.0f} s; figures and metrics.json in {out}")


if __name__ == "__main__":
    main()
