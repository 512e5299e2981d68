"""Character LM benchmarks: quality in a time budget, training speed, sampling speed.

    python benchmarks/text.py FILE [--minutes 1] [--threads 2] [--only quality speed sampling]

1. quality   `lapnet text train FILE --minutes M` with the default settings, on each engine:
             the validation loss in nats/char (targets: torch <= 1.55, numpy <= 1.70 for
             about 1 MB of English prose in one minute on 2 CPU cores).
2. speed     characters/s of the torch engine (lapnet.train.fit + TorchLearner + TextBatches)
             beside a minimal hand-written PyTorch loop over the same model and data,
             interleaved and repeated, medians and the ratio (target >= 0.95).
3. sampling  characters/s from one stream of the default model: lapnet's sampler on both
             engines beside a naive per-step torch loop (module call + torch.multinomial),
             interleaved, medians (target >= 20,000/s). Also beside it: the same sampler
             stepping one character at a time (`step_one` + `Chooser.one`, what it did before
             the LSTM's fused loop `stream`), torch's own fused cells, and the same-size GRU
             and vanilla RNN on the NumPy sampler (a step per character: no fused loop).

On a machine shared with other jobs the absolute numbers move a lot; the ratios, measured
side by side, are the fair comparison. The report prints the load average and the CPU time
the quality runs actually got.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _steps_per_cpu_second(file: Path, engine: str, short: int = 4, long: int = 16) -> float:
    """Training steps per CPU-second of the default model: two probe runs of different
    lengths, so start-up and the final evaluation cancel out of the difference."""
    from lapnet.text_runs import train_text, text_train_config

    cpu = []
    for steps in (2, short, long):  # the first run only warms up (allocator, first-call costs)
        with tempfile.TemporaryDirectory() as tmp:
            c0 = time.process_time()
            train_text(file, Path(tmp) / "probe", train=text_train_config(max_steps=steps, progress=False),
                       engine=engine, samples=False)
            cpu.append(time.process_time() - c0)
    return (long - short) / max(cpu[2] - cpu[1], 1e-9)


def quality(file: Path, minutes: float, engines: list[str], cpu_budget: bool = False) -> list[dict]:
    """Train with the defaults for `minutes` of wall clock; with `cpu_budget`, instead for as
    many steps as `minutes` of CPU time buys (measured by a probe run): on a machine shared
    with other jobs this estimates what a run gets on an idle core."""
    from lapnet.text_runs import train_text, text_train_config

    rows = []
    for engine in engines:
        if cpu_budget:
            rate = _steps_per_cpu_second(file, engine)
            steps = int(minutes * 60 * rate)
            print(f"# {engine}: {rate:.2f} steps per CPU-second -> {steps} steps", file=sys.stderr, flush=True)
            tcfg = text_train_config(max_steps=max(steps, 1), progress=False)
        else:
            tcfg = text_train_config(minutes=minutes, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            c0, w0 = time.process_time(), time.perf_counter()
            m = train_text(file, Path(tmp) / "run", train=tcfg, engine=engine, samples=False)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        target = 1.55 if engine == "torch" else 1.70
        rows.append({"engine": engine, "budget": f"{minutes} min of {'CPU time' if cpu_budget else 'wall clock'}",
                     "val_loss": round(m["val_loss"], 4), "val_bpc": round(m["val_bpc"], 4),
                     "target": target, "ok": m["val_loss"] <= target, "steps": m["steps"],
                     "epochs": m["epochs"], "chars_per_sec": m["chars_per_sec"], "wall_s": round(wall, 1),
                     "cpu_s": round(cpu, 1), "load": _load()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def speed(file: Path, steps: int, repeats: int) -> dict:
    """lapnet's torch training path vs a minimal hand-written loop, same model, same chunks."""
    import torch
    import torch.nn.functional as F

    from lapnet.data.text import TextBatches, Vocab, read_text, split_ids
    from lapnet.models.charlm import CharLM, CharLMConfig
    from lapnet.text_runs import TextDataConfig, tbptt_loss_fn, text_train_config
    from lapnet.train import TorchLearner, fit

    text = read_text(file)
    vocab = Vocab.from_text(text)
    train_ids, _ = split_ids(vocab.encode(text), 0.1)
    d = TextDataConfig()
    batches = TextBatches(train_ids, d.batch, d.seq_len, seed=0)
    chunks = list(batches.epoch(0))[:steps]
    cfg = CharLMConfig(len(vocab))  # the CLI's defaults (see CharLMConfig and cli/text.py)

    n_chars = steps * d.batch * d.seq_len

    def lapnet_run() -> tuple[float, float]:
        torch.manual_seed(0)
        model = CharLM(cfg)
        tcfg = text_train_config(max_steps=steps, progress=False)
        learner = TorchLearner(model, tbptt_loss_fn("cpu"), lambda m: {"val_loss": 0.0}, tcfg)
        t, c = time.perf_counter(), time.process_time()
        fit(learner, batches, tcfg)
        return n_chars / (time.perf_counter() - t), n_chars / (time.process_time() - c)

    def minimal_run() -> tuple[float, float]:
        torch.manual_seed(0)
        model = CharLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        state = None
        t, c = time.perf_counter(), time.process_time()
        for x, y in chunks:
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            state = tuple(s.detach() for s in state)
        return n_chars / (time.perf_counter() - t), n_chars / (time.process_time() - c)

    lap, mini = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        mini.append(minimal_run())
        lap.append(lapnet_run())
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    out = {"wall": {"lapnet_chars_per_sec": round(med(lap, 0)), "minimal_chars_per_sec": round(med(mini, 0)),
                    "ratio": round(med(lap, 0) / med(mini, 0), 3)},
           "cpu_time": {"lapnet_chars_per_cpu_sec": round(med(lap, 1)), "minimal_chars_per_cpu_sec": round(med(mini, 1)),
                        "ratio": round(med(lap, 1) / med(mini, 1), 3)},
           "pairwise_wall_ratios": [round(a[0] / b[0], 3) for a, b in zip(lap, mini)], "steps": steps,
           "repeats": repeats, "target": 0.95, "threads": torch.get_num_threads(), "load": _load()}
    print(json.dumps(out), flush=True)
    return out


def sampling(length: int, repeats: int, vocab_size: int = 75) -> dict:
    import torch

    from lapnet.data.text import Vocab
    from lapnet.models.charlm import CharLM, CharLMConfig, TorchStepper
    from lapnet.models.numpy_charlm import NumpyCharLM, NumpyStepper
    from lapnet.sampling import SampleConfig, generate

    vocab = Vocab("".join(chr(32 + i) for i in range(vocab_size)))
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size)).eval()
    npm = NumpyCharLM(model.cfg, {k: v.detach().numpy() for k, v in model.state_dict().items()})
    others = {}  # the other cells at the same size, on the NumPy sampler (no fused loop: a step per character)
    for arch in ("gru", "rnn"):
        torch.manual_seed(0)
        m = CharLM(CharLMConfig(vocab_size, arch=arch)).eval()
        others[arch] = NumpyCharLM(m.cfg, {k: v.detach().numpy() for k, v in m.state_dict().items()})

    def naive() -> tuple[float, float]:
        x, hidden = torch.tensor([[1]]), None
        t, c = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for _ in range(length):
                logits, hidden = model(x, hidden)
                x = torch.multinomial(torch.softmax(logits[0, -1] / 0.8, dim=0), 1)[None]
        return length / (time.perf_counter() - t), length / (time.process_time() - c)

    def ours(stepper) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        generate(stepper, vocab, prime="a", length=length, cfg=SampleConfig(0.8), seed=0)
        return length / (time.perf_counter() - t), length / (time.process_time() - c)

    class Stepwise:  # the numpy stepper without its fused loop: one step_one call per character
        def __init__(self, s):
            self.prime, self.step, self.step_one = s.prime, s.step, s.step_one

    res: dict[str, list] = {"naive_torch_loop": [], "lapnet_torch": [], "lapnet_torch_cells": [], "lapnet_numpy": [],
                            "lapnet_numpy_stepwise": [], "lapnet_numpy_gru": [], "lapnet_numpy_rnn": []}
    for _ in range(repeats):  # interleaved, so all see the same machine load
        res["naive_torch_loop"].append(naive())
        res["lapnet_torch"].append(ours(TorchStepper(model)))
        res["lapnet_torch_cells"].append(ours(TorchStepper(model, numpy_steps=False)))
        res["lapnet_numpy"].append(ours(NumpyStepper(npm)))
        res["lapnet_numpy_stepwise"].append(ours(Stepwise(NumpyStepper(npm))))
        for arch, m in others.items():
            res[f"lapnet_numpy_{arch}"].append(ours(NumpyStepper(m)))
    wall = {k: round(statistics.median(r[0] for r in v)) for k, v in res.items()}
    cpu = {k: round(statistics.median(r[1] for r in v)) for k, v in res.items()}
    out = {"chars_per_sec": wall, "chars_per_cpu_sec": cpu,
           "vs_naive_wall": {k: round(v / wall["naive_torch_loop"], 2) for k, v in wall.items()},
           "vs_naive_cpu": {k: round(v / cpu["naive_torch_loop"], 2) for k, v in cpu.items()},
           "target": 20000, "length": length, "repeats": repeats, "threads": torch.get_num_threads(), "load": _load()}
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path, help="~1 MB of English prose (UTF-8)")
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--only", nargs="+", default=["quality", "speed", "sampling"],
                    choices=["quality", "speed", "sampling"])
    ap.add_argument("--engines", nargs="+", default=["torch", "numpy"])
    ap.add_argument("--cpu-budget", action="store_true",
                    help="quality: --minutes of CPU time (steps from a probe) instead of wall clock")
    ap.add_argument("--speed-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {_load()}",
          file=sys.stderr)
    results: dict = {"file": str(args.file), "bytes": args.file.stat().st_size}
    if "quality" in args.only:
        results["quality"] = quality(args.file, args.minutes, args.engines, args.cpu_budget)
    if "speed" in args.only:
        results["speed"] = speed(args.file, args.speed_steps, args.repeats)
    if "sampling" in args.only:
        results["sampling"] = sampling(10_000, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
