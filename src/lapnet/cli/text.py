"""`lapnet text train|sample|eval`: character-level language models on any UTF-8 text.

Each command validates its options and calls one function of `lapnet.text_runs`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from lapnet.cli.common import engine_device
from lapnet.errors import LapnetError

text_app = typer.Typer(help="Character-level language models: train on any UTF-8 text, sample, evaluate.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `text` group to the main app."""
    app.add_typer(text_app, name="text")


# Measured 2026-11-27 on the shared 2-core machine (load 1.7-5.4), the default LSTM 256 on
# kjv_1mb.txt, 15 steps, five runs each interleaved: median 21,300 chars/s with one thread
# against 2,240 with two, and 6 s of CPU against 31 s: two threads wait for each other
# whenever another job holds a core. An idle machine with many cores may gain from more.
THREADS_HELP = ("CPU threads for torch, NumPy's OpenBLAS and the NumPy engine. Default 1: on a busy 2-core "
                "machine 1 thread trained 9x faster than 2; try more only on an idle machine with cores to spare. "
                "It did not change the weights: 1 and 2 threads trained the same model.safetensors, byte for "
                "byte, on both engines, up to the default LSTM 256 (the experiment commands, series and race do "
                "change in the last digits).")
# `sample` and `eval` take the same option, with the same default: on the same machine `text eval`
# of 200 KB took several times as long with torch's default two threads (see docs/guide/text.md)
RUN_THREADS_HELP = ("CPU threads for torch, NumPy's OpenBLAS and the NumPy engine. Default 1, as `text train`: "
                    "on a busy 2-core machine two threads wait for each other; try more only on an idle machine "
                    "with cores to spare.")


def _engine(engine: str) -> str:
    if engine not in ("torch", "numpy"):
        raise LapnetError(f"--engine {engine}: expected torch or numpy")
    return engine


# TrainConfig's fields as `text train` spells them: the library names its fields in its
# errors (for library users); the command line reports the flag the user typed instead
TRAIN_FLAGS = {"epochs": "--epochs", "minutes": "--minutes", "lr": "--lr", "schedule": "--schedule",
               "clip": "--clip", "clip_value": "--clip-value", "eval_every": "--eval-every", "seed": "--seed"}


def _train_config(**options):
    """`text_train_config(**options)`, validated, its errors naming the flags."""
    from lapnet.text_runs import text_train_config

    try:
        cfg = text_train_config(**options)
        cfg.validate()
    except LapnetError as e:
        field, sep, rest = str(e).partition(" must ")
        if not sep or field not in TRAIN_FLAGS:
            raise
        rest = rest.replace("or None (off)", "or 0 (off)")  # --clip 0 / --clip-value 0 turn clipping off
        raise LapnetError(f"{TRAIN_FLAGS[field]} must {rest}") from None
    return cfg


# CharLMConfig's and SampleConfig's fields as the commands spell them (validate(flags=...))
MODEL_FLAGS = {"arch": "--arch", "embed": "--embed", "hidden": "--hidden", "layers": "--layers", "dropout": "--dropout"}
SAMPLE_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"}


def _in_flags(e: LapnetError) -> LapnetError:
    """An error of `lapnet.data.text` (split_ids, TextBatches), which names its arguments
    (val_frac, seq_len, batch), in the words of the flags `text train` set them with."""
    text = str(e)
    for arg, flag in (("val_frac must ", "--val-frac must "),
                      ("seq_len and batch must ", "--seq-len and --batch must ")):
        if text.startswith(arg):
            text = flag + text[len(arg):]
    text = text.replace("(val_frac=0 trains on all of it)", "(--val-frac 0 trains on all of it)")
    return e if text == str(e) else type(e)(text)


@text_app.command("train")
def train_cmd(
    ctx: typer.Context,
    file: Optional[Path] = typer.Argument(None, help="UTF-8 text to learn (- reads standard input); default: the "
                                                       "notebook's Hamlet passage."),
    arch: str = typer.Option("lstm", "--arch", help="rnn, lstm or gru."),
    hidden: int = typer.Option(256, "--hidden", help="Hidden units per layer (H)."),
    layers: int = typer.Option(1, "--layers", help="Stacked recurrent layers."),
    embed: int = typer.Option(64, "--embed", help="Character embedding size (E)."),
    dropout: float = typer.Option(0.0, "--dropout", help="Dropout between stacked layers (needs --layers 2 or more)."),
    seq_len: int = typer.Option(128, "--seq-len", help="Characters per chunk: the truncation length of BPTT."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Parallel streams per step. Default 32, or as many as "
                                                              "the text holds windows of --seq-len + 1 characters "
                                                              "when it is shorter."),
    lr: float = typer.Option(1e-2, "--lr", help="Peak learning rate (Adam), within float32's range "
                                                "(1.18e-38 to 3.4e38)."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine (decays over the planned run) or constant."),
    clip: float = typer.Option(5.0, "--clip", help="Global gradient-norm clip (0: off)."),
    clip_value: float = typer.Option(0.0, "--clip-value", help="Element-wise gradient clip, as char-rnn (0: off)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Train this many epochs (total, also with --resume). "
                                                                "Such a run trains the same weights again for the same "
                                                                "--seed. "
                                                                "The cosine schedule is planned over this total: "
                                                                "--resume with a larger --epochs re-plans it (the lr "
                                                                "rises again), unlike a straight run of that many."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-clock budget; default 1 when --epochs is not "
                                                                    "given. The cosine schedule then follows the clock "
                                                                    "(and so does where training stops): such a run, "
                                                                    "the default one included, does not repeat bit for "
                                                                    "bit, even with the same --seed; --epochs does."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Steps between evaluations (default: every epoch, at least 50 and at most 200 steps apart)."),
    val_frac: float = typer.Option(0.1, "--val-frac", help="Fraction of the text, from its END, held out for "
                                                           "validation; model.safetensors keeps the step with the "
                                                           "lowest validation loss. Each evaluation scores at most "
                                                           "the first 100,000 characters held out "
                                                           "(val_scored_chars in metrics.json; `text eval` scores a "
                                                           "whole file). 0: no validation, train on the whole text "
                                                           "as the notebook does; model.safetensors then holds the "
                                                           "last step's weights (there is no early stopping either "
                                                           "way), and evaluations score the first 100,000 "
                                                           "characters of the training text."),
    engine: str = typer.Option("torch", "--engine", help="torch or numpy (lapnet.scratch). With --resume: the run's "
                                                         "own when not given."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (the torch engine; --engine numpy runs "
                                                        "on the CPU)."),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the weights, the batch offsets and dropout."),
    out: Path = typer.Option(Path("runs/text"), "--out", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out up to the new --epochs/--minutes "
                                                        "(totals). The run keeps its own shape, data and training "
                                                        "settings and engine (a warning names any typed with other "
                                                        "values; another --engine is refused); only --epochs, "
                                                        "--minutes and --eval-every apply. A run that already "
                                                        "reached the totals is left untouched. A larger --epochs "
                                                        "re-plans the cosine decay over the new total."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or samples."),
) -> None:
    """Train a character-level language model on FILE and write a run directory.

    Example: lapnet text train novel.txt --minutes 1 --out runs/novel
    """
    from lapnet.cli.common import emit_metrics, refuse_device, set_threads, summary_table
    from lapnet.models.charlm import CharLMConfig
    from lapnet.text_runs import RESUME_KEEPS, TextDataConfig, recorded_engine, train_text

    refuse_device(file)
    _engine(engine)
    engine_typed = (src := ctx.get_parameter_source("engine")) is not None and src.name == "COMMANDLINE"
    # --resume keeps the run's engine unless one is typed (train_text refuses another)
    run_engine = (recorded_engine(out) or engine) if resume and not engine_typed else engine
    dev = engine_device(device, run_engine)
    # a resumed run keeps its shape, data and training settings: those typed with other values
    # than the run's are named in a warning (train_text compares them)
    typed = tuple(flag for flag in RESUME_KEEPS
                  if (src := ctx.get_parameter_source(flag[2:].replace("-", "_"))) is not None
                  and src.name == "COMMANDLINE") if resume else ()
    set_threads(threads)
    train = _train_config(epochs=epochs, minutes=minutes, lr=lr, schedule=schedule,
                          clip=clip or None, clip_value=clip_value or None, eval_every=eval_every,
                          seed=seed, progress=not quiet)
    model = CharLMConfig(vocab_size=1, arch=arch, embed=embed, hidden=hidden, layers=layers, dropout=dropout)
    if not resume:  # a resumed run keeps its own shape (train_text names the flags it ignores)
        model.validate(flags=MODEL_FLAGS)
    try:
        metrics = train_text(
            file, out, model=model, data=TextDataConfig(seq_len=seq_len, batch=batch, val_frac=val_frac),
            train=train, engine=engine if engine_typed or not resume else None, device=dev, resume=resume,
            force=force, samples=not quiet, typed=typed,
        )
    except LapnetError as e:
        raise _in_flags(e) from None
    if not quiet:
        rows = {k: metrics[k] for k in ("engine", "stopped", "steps", "epochs", "seconds", "chars_per_sec",
                                        "train_loss", "val_loss", "val_bpc", "val_ppl", "text_loss", "text_bpc")
                if k in metrics}
        rows.update(_scored_on(metrics))
        rows.update({k: metrics[k] for k in ("batch", "params") if k in metrics})
        summary_table(f"lapnet text train -> {out}", rows)
        _say_saved(metrics)
    emit_metrics(None, metrics, as_json=json_out)  # train_text already wrote metrics.json
    if metrics["stopped"] == "interrupted":
        # fit has saved the checkpoint and printed the --resume advice: exit as an interrupted
        # program does (128 + SIGINT), so that `train && sample` does not carry on
        raise typer.Exit(130)


def _scored_on(metrics: dict) -> dict:
    """A summary row saying which slice the validation loss (text_loss with --val-frac 0) was
    scored on, when it is not all of its text: {"val scored on": "first 100,000 of 400,000
    chars"}, else {}."""
    for prefix, whole in (("val", "val_chars"), ("text", "train_chars")):
        scored, total = metrics.get(f"{prefix}_scored_chars"), metrics.get(whole)
        if isinstance(scored, int) and isinstance(total, int) and scored < total:
            return {f"{prefix} scored on": f"first {scored:,} of {total:,} chars"}
    return {}


def _say_saved(metrics: dict) -> None:
    """One line on stderr: which step model.safetensors holds, and when that is not the last
    step (validation loss lowest early: a short text learnt by heart), how to get the last."""
    from lapnet import distributed
    from lapnet.cli import one_line

    saved = metrics.get("saved_model") or {}
    step = saved.get("step")
    if step is None or distributed.rank() != 0:  # under torchrun rank 0 saved it and says so
        return
    if metrics.get("validation"):
        val = saved.get("val_loss")
        line = f"saved model: step {step}, val {val:.4f}" if isinstance(val, (int, float)) else f"saved model: step {step}"
        if step < metrics["steps"]:
            line += (f" (the lowest validation loss; the last step, {metrics['steps']}, has val "
                     f"{metrics.get('val_loss', float('nan')):.4f}: --checkpoint last samples and scores its "
                     f"weights, --val-frac 0 trains without validation)")
    else:
        line = f"saved model: step {step}, the last (--val-frac 0: no validation)"
    print(f"lapnet: {one_line(line)}", file=sys.stderr)  # as every message line: no control character goes out raw


CHECKPOINT_HELP = ("best: model.safetensors, the step with the lowest validation loss (with --val-frac 0 the last "
                   "step); last: the final step's weights (last.safetensors).")


@text_app.command("sample")
def sample_cmd(
    run: Path = typer.Argument(..., help="A run directory made by `lapnet text train`."),
    prime: str = typer.Option("", "--prime", help="Text to start from (default: one random character)."),
    length: int = typer.Option(300, "--length", help="Characters to generate after the prime."),
    temperature: float = typer.Option(0.8, "--temperature",
                                      help="Divides the logits; lower is safer. 0 means greedy (always the argmax), "
                                           "and so does any value below 1e-6: sampling there is already the argmax to "
                                           "float32 precision, and dividing by it would overflow."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only among the K most likely characters."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus: the smallest set with probability >= P, in (0, 1]."),
    num_samples: int = typer.Option(1, "--num-samples", help="Independent samples, made in one batch."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Makes the samples reproducible."),
    engine: str = typer.Option("torch", "--engine", help="torch or numpy: either reads any run."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda (torch engine)."),
    json_out: bool = typer.Option(False, "--json", help="Print {prime, start, temperature, ..., samples: [...]} as "
                                                        "JSON instead of streaming the text (each sample whole, "
                                                        "prime included; start: the text each sample started "
                                                        "from, the prime or, with no --prime, its random "
                                                        "character)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help=CHECKPOINT_HELP),
    threads: int = typer.Option(1, "--threads", help=RUN_THREADS_HELP),
) -> None:
    """Generate text from a trained run, streamed to stdout as it is made.

    Example: lapnet text sample runs/text --prime "To be" --length 300 --temperature 0.8
    """
    from lapnet.cli.common import set_threads
    from lapnet.sampling import SampleConfig
    from lapnet.text_runs import sample_text

    _engine(engine)
    dev = engine_device(device, engine)
    if length <= 0:
        raise LapnetError(f"--length must be positive, got {length}")
    if num_samples < 1:
        raise LapnetError(f"--num-samples must be at least 1, got {num_samples}")
    SampleConfig(temperature, top_k, top_p).validate(flags=SAMPLE_FLAGS)
    set_threads(threads)
    stream = num_samples == 1 and not json_out  # one sample streams character by character; several print whole
    live = sys.stdout.isatty()  # a terminal sees each character at once; a pipe gets buffered writes

    def on_chars(chars: list[str]) -> None:
        sys.stdout.write(chars[0])
        if live:
            sys.stdout.flush()

    texts = sample_text(run, prime=prime, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                        num_samples=num_samples, seed=seed, engine=engine, device=dev,
                        on_chars=on_chars if stream else None, checkpoint=checkpoint)
    if json_out:
        # with no --prime each sample starts from a random character: record which
        start = [t[:len(prime)] if prime else t[:1] for t in texts]
        sys.stdout.write(json.dumps({"run": str(run), "prime": prime, "start": start, "length": length,
                                     "temperature": temperature,
                                     "top_k": top_k, "top_p": top_p, "seed": seed, "engine": engine,
                                     "checkpoint": checkpoint,
                                     "samples": list(texts)}, ensure_ascii=False) + "\n")
    elif stream:
        sys.stdout.write("\n")
    else:
        for i, t in enumerate(texts):
            sys.stdout.write(f"--- sample {i + 1}\n{t}\n")
    sys.stdout.flush()


@text_app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="A run directory made by `lapnet text train`."),
    file: Path = typer.Argument(..., help="UTF-8 text to score (- reads standard input)."),
    engine: str = typer.Option("torch", "--engine", help="torch or numpy: either reads any run."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda (torch engine)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown",
                                      help="Leave out characters the model never saw (default: refuse the file); "
                                           "how many is reported as skipped_unknown."),
    checkpoint: str = typer.Option("best", "--checkpoint", help=CHECKPOINT_HELP),
    streams: Optional[int] = typer.Option(None, "--streams",
                                          help="Score the file as N streams side by side, each from a zero state "
                                               "(default: one per 2048 characters, at most 32). 1: the exact "
                                               "score of the file read in one pass, slower on a long file."),
    threads: int = typer.Option(1, "--threads", help=RUN_THREADS_HELP),
) -> None:
    """Score FILE with a trained run: nats per char, bits per char and perplexity.

    How a file is scored: its first character is only read; every later one is predicted
    from the characters before it in its stream, so "chars" is the file's length minus
    one. A file of N characters is cut into S contiguous streams run side by side, S = one
    per 2048 characters (at most 32, at least 1; --streams sets it); each stream starts
    from a zero state, and the last one also scores the (N - 1) mod S characters left over.
    A cold start costs each stream's first characters some context: the bundled passage 40
    times over (31,920 characters) scored 0.09602 nats/char in 15 streams and 0.09102 with
    --streams 1, by the run of `lapnet text train --val-frac 0 --epochs 600 --threads 1`
    (docs/guide/text.md has the commands). The result records S as "streams".

    The result is shown first, then stored as metrics.json["eval"] in RUN; when RUN cannot be
    written, a warning says so and the command still succeeds.

    Example: lapnet text eval runs/text held_out.txt --json
    """
    from lapnet.cli import one_line
    from lapnet.cli.common import emit_metrics, refuse_device, set_threads, summary_table
    from lapnet.data.text import show_chars
    from lapnet.text_runs import eval_text

    refuse_device(file)
    _engine(engine)
    dev = engine_device(device, engine)
    set_threads(threads)
    result = eval_text(run, file, engine=engine, device=dev, skip_unknown=skip_unknown, write=False,
                       checkpoint=checkpoint, streams=streams)
    if result["skipped_unknown"]["count"]:
        gone = result["skipped_unknown"]
        print(one_line(f"lapnet: warning: skipped {gone['count']} occurrence(s) of {len(gone['chars'])} character(s) "
                       f"the model never saw: {show_chars(gone['chars'])}"), file=sys.stderr)
    if not json_out:
        summary_table(f"lapnet text eval {run} {file}", {k: result[k] for k in (
            "checkpoint", "step", "chars", "streams", "nats_per_char", "bits_per_char", "perplexity")})
    emit_metrics(None, result, as_json=json_out)
    _store_eval(run, result)  # after the output: a run we cannot write to must not cost the result


def _store_eval(run: Path, result: dict) -> None:
    """Keep the result as metrics.json["eval"] in the run; if the directory cannot be
    written (read-only, full disk), say so in one warning: the evaluation itself succeeded."""
    from lapnet.cli import one_line
    from lapnet.text_runs import save_eval

    try:
        save_eval(run, result)
    except OSError as e:
        print(one_line(f"lapnet: warning: the result was not stored in {run / 'metrics.json'} ({e.strerror or e}): "
                       f"{run} is unchanged"), file=sys.stderr)
