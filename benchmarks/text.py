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
             interleaved, medians (target >= 20,000/s).

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


def quality(file: Path, minutes: float, engines: list[str]) -> list[dict]:
    from lapnet.text_runs import train_text, text_train_config

    rows = []
    for engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            c0, w0 = time.process_time(), time.perf_counter()
            m = train_text(file, Path(tmp) / "run", train=text_train_config(minutes=minutes, progress=False),
                           engine=engine, samples=False)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        target = 1.55 if engine == "torch" else 1.70
        rows.append({"engine": engine, "val_loss": round(m["val_loss"], 4), "val_bpc": round(m["val_bpc"], 4),
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

    def lapnet_run() -> float:
        torch.manual_seed(0)
        model = CharLM(cfg)
        tcfg = text_train_config(max_steps=steps, progress=False)
        learner = TorchLearner(model, tbptt_loss_fn("cpu"), lambda m: {"val_loss": 0.0}, tcfg)
        t = time.perf_counter()
        fit(learner, batches, tcfg)
        return steps * d.batch * d.seq_len / (time.perf_counter() - t)

    def minimal_run() -> float:
        torch.manual_seed(0)
        model = CharLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        state = None
        t = time.perf_counter()
        for x, y in chunks:
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            state = tuple(s.detach() for s in state)
        return steps * d.batch * d.seq_len / (time.perf_counter() - t)

    lap, mini = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        mini.append(minimal_run())
        lap.append(lapnet_run())
    out = {"lapnet_chars_per_sec": round(statistics.median(lap)), "minimal_chars_per_sec": round(statistics.median(mini)),
           "ratio": round(statistics.median(lap) / statistics.median(mini), 3),
           "pairwise_ratios": [round(a / b, 3) for a, b in zip(lap, mini)], "steps": steps, "repeats": repeats,
           "target": 0.95, "load": _load()}
    print(json.dumps(out), flush=True)
    return out


def sampling(length: int, repeats: int, vocab_size: int = 75) -> dict:
    import numpy as np
    import torch

    from lapnet.data.text import Vocab
    from lapnet.models.charlm import CharLM, CharLMConfig, TorchStepper
    from lapnet.models.numpy_charlm import NumpyCharLM, NumpyStepper
    from lapnet.sampling import SampleConfig, generate

    vocab = Vocab("".join(chr(32 + i) for i in range(vocab_size)))
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size)).eval()
    npm = NumpyCharLM(model.cfg, {k: v.detach().numpy() for k, v in model.state_dict().items()})

    def naive() -> float:
        x, hidden = torch.tensor([[1]]), None
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(length):
                logits, hidden = model(x, hidden)
                x = torch.multinomial(torch.softmax(logits[0, -1] / 0.8, dim=0), 1)[None]
        return length / (time.perf_counter() - t)

    def ours(stepper) -> float:
        t = time.perf_counter()
        generate(stepper, vocab, prime="a", length=length, cfg=SampleConfig(0.8), seed=0)
        return length / (time.perf_counter() - t)

    res: dict[str, list[float]] = {"naive_torch_loop": [], "lapnet_torch": [], "lapnet_torch_cells": [], "lapnet_numpy": []}
    for _ in range(repeats):
        res["naive_torch_loop"].append(naive())
        res["lapnet_torch"].append(ours(TorchStepper(model)))
        res["lapnet_torch_cells"].append(ours(TorchStepper(model, numpy_steps=False)))
        res["lapnet_numpy"].append(ours(NumpyStepper(npm)))
    med = {k: round(statistics.median(v)) for k, v in res.items()}
    out = {"chars_per_sec": med, "vs_naive": {k: round(v / med["naive_torch_loop"], 2) for k, v in med.items()},
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
        results["quality"] = quality(args.file, args.minutes, args.engines)
    if "speed" in args.only:
        results["speed"] = speed(args.file, args.speed_steps, args.repeats)
    if "sampling" in args.only:
        results["sampling"] = sampling(2000, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
