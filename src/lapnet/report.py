"""A self-contained HTML report of any run directory: `lapnet report RUN`.

One page that opens anywhere, offline, forever: every figure is embedded as a base64 PNG,
the CSS is inline, there is no script and no external link. It works for every kind of run
lapnet writes, because it looks only at the files runs share:

    config.json    the run's configuration, flattened into one key/value table
    metrics.json   the numbers: scalars as a key/value table, a mapping of records
                   (e.g. {"lstm": {...}, "gru": {...}}) or a list of rows as one wide table
    log.jsonl      the training log (one row per evaluation): a loss figure and a table
    *.png / *.jpg / *.svg   every figure, captioned from its file name
    samples.txt / samples.json / sample*.txt   generated text
    other *.json, small *.csv   shown as tables too

A run with sub-runs (the demo's directory, an experiment's output) becomes one section per
directory, in the order the run wrote them (the earliest file time of each directory).
A file that cannot be read is named in a warning on the page; the rest still renders.

The run directory may be someone else's: nothing outside it is shown. lapnet never makes a
symlink in a run, so a link out of the run folder (to a file or a folder: ~/.aws, /usr) is
not followed, and the page and a warning name it; a link to a folder inside the run is not
followed either (that folder is shown where it is, and `d/loop -> ..` would repeat the run).
A link to a file inside the run is shown, as the file it names. Files are read up to a size
(MAX_IMAGE_BYTES, MAX_TEXT_BYTES, MAX_CSV_BYTES), and JSON too deep or with numbers too long
for Python is a warning like any unreadable file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lapnet.checkpoint import atomic_write_bytes
from lapnet.errors import LapnetError
from lapnet.experiments.result import listed_figures
from lapnet.run_dir import UNFINISHED

REPORT_NAME = "report.html"
# every page carries this in its header: `lapnet report` knows a page it may replace by it
REPORT_MARK = "self-contained: figures embedded, no network needed</div>"
MARK_WINDOW = 64 * 1024  # the page's header (CSS, title, run path) comes well within this


def is_lapnet_report(path: str | Path) -> bool:
    """A page an earlier `lapnet report` wrote: regenerated from its run at will, so
    replacing it loses nothing (the usual loop: change the run, write the report again)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MARK_WINDOW)
    except OSError:
        return False
    return head.lstrip().startswith(b"<!DOCTYPE html>") and REPORT_MARK.encode() in head
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
SAMPLE_NAMES = ("samples.txt", "samples.json")
SKIP_JSON = {"config.json", "metrics.json", "vocab.json"}  # vocab: thousands of characters, no insight
MAX_DEPTH = 4  # directories below the run that are still searched
MAX_TABLE_COLUMNS = 14  # wider record tables are shown as key/value pairs instead
MAX_LIST_INLINE = 8  # longer number lists are summarised (count, first -> last, min, max)
MAX_LOG_ROWS = 25
MAX_CSV_BYTES = 64_000
MAX_CSV_ROWS = 30
MAX_IMAGE_BYTES = 20_000_000  # an image embedded as base64 (a 1.5 GB sparse huge.png took 5.7 GB of memory)
MAX_TEXT_BYTES = 20_000_000  # a JSON, log or samples file read whole

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:21px;margin:36px 0 8px;padding-top:12px;border-top:2px solid #d5dae1}
h3{font-size:16px;margin:20px 0 6px;color:#34495e} .meta{color:#5d6b7a;font-size:13px}
nav{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px 16px;margin:16px 0}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 14px;background:#fff;font-size:13.5px;display:block;max-width:100%;overflow-x:auto;width:max-content}
th,td{border:1px solid #d5dae1;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#eef1f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:12px 0 22px;background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:10px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block} figcaption{font-size:13px;color:#34495e;margin-top:6px}
pre{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:10px;white-space:pre-wrap;font-size:13px}
.warn{background:#fff4e5;border:1px solid #f0b35a;border-radius:6px;padding:6px 12px;margin:8px 0}
"""


# ---------------------------------------------------------------------------------------
# public API


def build_report(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write a self-contained HTML page describing a run directory.

    Args:
        run_dir: a directory written by any lapnet command (text run, experiment output,
            race run, the demo's directory); sub-directories are included.
        out: where to write the page (default: run_dir/report.html). An existing file is
            replaced atomically; a directory is refused.
        title: the page title (default: "lapnet report: <directory name>").

    Returns:
        The path of the written HTML file.

    Raises:
        LapnetError: run_dir is missing, is a file, or holds nothing a report can show;
            `out` is a directory or its parent does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise LapnetError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise LapnetError(f"{run_dir}: is a file, not a run directory")
    if (run_dir / UNFINISHED).exists():  # as `lapnet race predict` refuses it: its files are a half-written run
        raise LapnetError(f"{run_dir}: an unfinished run ({UNFINISHED}: its training was interrupted or failed): "
                          "train it again with --force")
    default = out is None
    out = Path(out) if out is not None else run_dir / REPORT_NAME
    if out.is_dir():
        raise LapnetError(f"--out {out}: is a directory; give a file name such as report.html")
    if not out.parent.is_dir():
        raise LapnetError(f"--out {out}: the directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):  # the page's temporary file goes there: said before the work
        raise LapnetError(f"--out {out}: {out.parent} is not writable"
                          + ("; give --out a file in a writable place (the default is RUN/report.html)" if default else ""))
    walked = _run_dirs(run_dir)
    outside = [f"{p.relative_to(run_dir).as_posix()}{'/' if p.is_dir() else ''}"
               for d in walked for p in _links_out(d, run_dir)]
    if outside:
        warnings.warn(f"{run_dir}: links out of the run folder, not followed: {', '.join(outside)}")
    dirs = [d for d in walked if _has_content(d, out, run_dir)]
    if not dirs:
        raise LapnetError(f"{run_dir}: holds no run files (config.json, metrics.json, log.jsonl, figures or samples)")
    page = render_report(run_dir, dirs, title=title or f"lapnet report: {run_dir.resolve().name}", skip=out)
    atomic_write_bytes(out, page.encode("utf-8", "replace"))  # `_esc` has made every string encodable already
    return out


def render_report(root: Path, dirs: Sequence[Path], *, title: str, skip: Path | None = None) -> str:
    """The whole page as a string: a header, a table of contents, one section per directory."""
    sections, toc = [], []
    for i, d in enumerate(dirs):
        rel = d.relative_to(root).as_posix()
        name = "overview" if rel == "." else rel
        anchor = f"s{i}"
        toc.append(f'<a href="#{anchor}">{_esc(name)}</a>')
        sections.append(f'<section id="{anchor}"><h2>{_esc(name)}</h2>{_render_dir(d, skip, root)}</section>')
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_esc(title)}</title>"
        f"<style>{CSS}</style></head><body><main>"
        f"<h1>{_esc(title)}</h1><div class=\"meta\">run directory {_esc(str(root.resolve()))} · written {stamp}"
        f" · {REPORT_MARK}"
        f"<nav>{''.join(toc)}</nav>{''.join(sections)}</main></body></html>\n"
    )


# ---------------------------------------------------------------------------------------
# finding the run's files


def _run_dirs(root: Path) -> list[Path]:
    """root, then its sub-directories depth first (hidden ones, caches and symlinks skipped),
    siblings in the order the run wrote them: by the earliest modification time in their subtree."""
    def children(d: Path) -> list[Path]:
        return [c for c in d.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith((".", "__"))]

    def first_written(d: Path) -> float:
        times = [f.lstat().st_mtime for f in d.rglob("*") if f.is_file() and not f.is_symlink()]
        return min(times) if times else d.stat().st_mtime

    def walk(d: Path, depth: int) -> list[Path]:
        found = [d]
        if depth < MAX_DEPTH:
            for c in sorted(children(d), key=lambda c: (first_written(c), c.name)):
                found += walk(c, depth + 1)
        return found

    return walk(root, 0)


def _inside(p: Path, root: Path) -> bool:
    """Whether `p`, every link in it followed (realpath: a link loop is no error), is within `root`."""
    real, top = os.path.realpath(p), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _links_out(d: Path, root: Path) -> list[Path]:
    """The symlinks in `d` (not hidden) whose target is outside the run folder `root`, by name."""
    return sorted((p for p in d.iterdir() if p.is_symlink() and not p.name.startswith(".") and not _inside(p, root)),
                  key=lambda p: p.name)


def _own(p: Path) -> bool:
    """A file of the run itself, read for what it tells about another (the saved step, the
    listed figures): a regular file, not a link."""
    return p.is_file() and not p.is_symlink()


def _files(d: Path, skip: Path | None, root: Path) -> list[Path]:
    """The files of `d` a report may show: not hidden, not the page itself, not a link out of
    the run folder `root`."""
    skip_res = skip.resolve() if skip is not None else None
    return sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                  and (not f.is_symlink() or _inside(f, root)) and f.resolve() != skip_res and f.name != REPORT_NAME)


def _has_content(d: Path, skip: Path | None, root: Path) -> bool:
    return any(_kind(f) is not None for f in _files(d, skip, root))


def _kind(f: Path) -> str | None:
    name = f.name.lower()
    if name == "config.json":
        return "config"
    if name == "metrics.json":
        return "metrics"
    if name == "log.jsonl":
        return "log"
    if f.suffix.lower() in IMAGE_TYPES:
        return "figure"
    if name in SAMPLE_NAMES or (name.startswith("sample") and f.suffix.lower() in (".txt", ".json")):
        return "samples"
    if f.suffix.lower() == ".json" and name not in SKIP_JSON:
        return "json"
    if f.suffix.lower() == ".csv" and f.stat().st_size <= MAX_CSV_BYTES:
        return "csv"
    return None


# ---------------------------------------------------------------------------------------
# one directory


def _render_dir(d: Path, skip: Path | None, root: Path) -> str:
    files = _files(d, skip, root)
    by_kind: dict[str, list[Path]] = {}
    for f in files:
        k = _kind(f)
        if k is not None:
            by_kind.setdefault(k, []).append(f)
    metrics = _metrics_of(d)
    listed = listed_figures(metrics)
    unlisted: list[str] = []
    if listed is not None:  # the run names its figures: any other image is not this run's
        unlisted = [f.name for f in by_kind.get("figure", []) if f.name not in listed]
        by_kind["figure"] = [f for f in by_kind.get("figure", []) if f.name in listed]
    parts: list[str] = []
    # what a reader looks for first: the numbers, the text, the figures; the set-up last
    for f in by_kind.get("metrics", []):
        parts.append(_guard(f, lambda f=f: "<h3>Metrics</h3>" + _render_value(_load_json(f), depth=0)))
    for f in by_kind.get("samples", []):
        parts.append(_guard(f, lambda f=f: _render_samples(f)))
    for f in by_kind.get("figure", []):
        parts.append(_guard(f, lambda f=f: _figure(_read_capped(f, MAX_IMAGE_BYTES, "embed"),
                                                   IMAGE_TYPES[f.suffix.lower()], caption(f))))
    for f in by_kind.get("log", []):
        parts.append(_guard(f, lambda f=f: _render_log(f, _saved_step(d, metrics))))
    for f in by_kind.get("json", []):
        parts.append(_guard(f, lambda f=f: f"<h3>{_esc(f.name)}</h3>" + _render_value(_load_json(f), depth=0)))
    for f in by_kind.get("csv", []):
        parts.append(_guard(f, lambda f=f: _render_csv(f)))
    for f in by_kind.get("config", []):
        parts.append(_guard(f, lambda f=f: "<h3>Configuration</h3>" + _kv_table(_flatten(_load_json(f)), cls="config")))
    outside = [p.name + ("/" if p.is_dir() else "") for p in _links_out(d, root)]
    if outside:
        parts.append(f'<div class="warn">links out of the run folder, not followed: {_esc(", ".join(outside))} '
                     f'(a run\'s own files are never links: what they point at is not part of it)</div>')
    folder_links = [p.name + "/" for p in d.iterdir() if p.is_symlink() and p.is_dir() and not p.name.startswith(".")
                    and p.name not in {q.rstrip("/") for q in outside}]
    if folder_links:
        parts.append(f'<div class="meta">links to folders of the run, not followed (each folder is shown where it '
                     f'is): {_esc(", ".join(sorted(folder_links)))}</div>')
    other = [f.name for f in files if _kind(f) is None]
    if other:
        parts.append(f'<div class="meta">other files: {_esc(", ".join(other))}</div>')
    if unlisted:
        parts.append(f'<div class="meta">not shown: {_esc(", ".join(unlisted))} (images metrics.json does not list '
                     f'among this run\'s figures: left by an earlier run?)</div>')
    return "".join(parts)


def _metrics_of(d: Path) -> Any:
    """The directory's metrics.json, or None when it has none or it cannot be read."""
    try:
        return _load_json(d / "metrics.json") if _own(d / "metrics.json") else None
    except (OSError, ValueError):
        return None


def _saved_step(d: Path, metrics: Any) -> int | None:
    """The training step model.safetensors holds: metrics.json's saved_model, else the
    checkpoint's own metadata (read from its header only); None when neither says."""
    saved = metrics.get("saved_model") if isinstance(metrics, dict) else None
    step = saved.get("step") if isinstance(saved, dict) else None
    if step is None and _own(d / "model.safetensors"):
        try:
            from safetensors import safe_open

            from lapnet.checkpoint import META_KEY

            with safe_open(str(d / "model.safetensors"), framework="numpy") as fh:
                step = json.loads((fh.metadata() or {}).get(META_KEY, "{}")).get("step")
        except Exception:  # a report never fails on one unreadable file
            step = None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _guard(f: Path, render) -> str:
    """Render one file; a file that cannot be read becomes a warning, not a failed report
    (RecursionError: a structure nested deeper than Python renders)."""
    try:
        return render()
    except _TooLarge as e:
        return f'<div class="warn">{_esc(f.name)} is {_esc(str(e))}</div>'
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
        why = "nested too deeply to show" if isinstance(e, RecursionError) else " ".join(str(e).split())
        return f'<div class="warn">could not read {_esc(f.name)}: {_esc(why)}</div>'


class _TooLarge(LapnetError):
    """A file beyond the size a report reads (`_read_capped`)."""


def _read_capped(f: Path, cap: int, what: str = "show") -> bytes:
    """A file's bytes, refused (LapnetError) when it holds more than `cap`: read at most cap + 1
    bytes, so a file that is bigger than its size said (still growing) is refused too."""
    size = f.stat().st_size
    if size <= cap:
        with open(f, "rb") as fh:
            data = fh.read(cap + 1)
        if len(data) <= cap:
            return data
        size = max(size, len(data))
    raise _TooLarge(f"too large to {what} ({size / 1e6:.1f} MB; at most {cap / 1e6:.0f} MB)")


def _read_text(f: Path) -> str:
    return _read_capped(f, MAX_TEXT_BYTES).decode("utf-8")


def _load_json(f: Path) -> Any:
    text = _read_capped(f, MAX_TEXT_BYTES)
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LapnetError(f"not valid JSON ({e.__class__.__name__})") from None
    except RecursionError:  # `[` * 100000: deeper than Python's parser goes
        raise LapnetError("not valid JSON (nested too deeply)") from None
    except ValueError:  # a 5000-digit integer: beyond Python's int-from-string limit
        raise LapnetError("not valid JSON (a number too long)") from None


def caption(f: Path) -> str:
    """A figure's caption from its file name: 'loss_curves.png' -> 'Loss curves'."""
    words = f.stem.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) if words else f.name


def _figure(data: bytes, mime: str, text: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{b64}" alt="{_esc(text)}">'
            f"<figcaption>{_esc(text)}</figcaption></figure>")


def _fig_to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # lapnet's figures live outside pyplot (`plots.new_figure`): nothing to close
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# log.jsonl, samples, csv


def _render_log(f: Path, saved_step: int | None = None) -> str:
    rows, bad = [], 0
    for line in _read_text(f).splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1  # a crash mid-write can leave a partial last line (or a line is not lapnet's)
            continue
        if isinstance(row, dict):
            rows.append(row)
    if not rows:
        return '<div class="warn">log.jsonl holds no complete rows</div>'
    parts = [f"<h3>Training log ({len(rows)} evaluations)</h3>"]
    curves = {name: [r.get(name) for r in rows] for name in ("train_loss", "val_loss")}
    curves = {k: v for k, v in curves.items() if all(_is_num(x) for x in v) and v}
    if curves:
        from lapnet import plots

        positive = all(x > 0 for v in curves.values() for x in v)
        steps = [r.get("step") for r in rows]
        by_step = all(_is_num(x) for x in steps)
        names = {"train_loss": "train loss", "val_loss": "val loss"}
        if not _has_validation(f.parent):  # --val-frac 0: fit's "val_loss" is the training text's loss
            names["val_loss"] = "training text loss (no validation)"
        mark = saved_step if by_step and saved_step is not None else None
        fig = plots.loss_curves({names[k]: v for k, v in curves.items()}, title="Loss at each evaluation",
                                xlabel="training step" if by_step else "evaluation", ylabel="loss", logy=positive,
                                x=steps if by_step else None, vline=mark,
                                vline_label=None if mark is None else f"saved model (step {mark})")
        parts.append(_figure(_fig_to_png(fig), "image/png", f"{f.parent.name or 'run'}: loss at each evaluation"
                             + ("" if mark is None else "; the dotted line marks the step model.safetensors holds")))
    shown = _even_rows(rows, MAX_LOG_ROWS)
    cols = [c for c in _union_keys(r for _, r in shown)
            if all(not isinstance(r.get(c), (dict, list)) for _, r in shown)]  # nested values: not a log column
    parts.append(_wide_table([(str(i), r) for i, r in shown], cols, key_header="#", cls="log"))
    if len(rows) > len(shown):
        parts.append(f'<div class="meta">{len(shown)} of {len(rows)} rows shown, evenly spaced, '
                     'the last included</div>')
    if bad:
        parts.append(f'<div class="warn">{bad} unreadable line(s) in log.jsonl skipped</div>')
    return "".join(parts)


def _has_validation(d: Path) -> bool:
    """False for a text run trained with --val-frac 0 (config.json's data.val_frac), else True."""
    try:
        config = _load_json(d / "config.json") if _own(d / "config.json") else None
    except (OSError, ValueError):
        return True
    data = config.get("data") if isinstance(config, dict) else None
    return not (isinstance(data, dict) and data.get("val_frac") == 0)


def _even_rows(rows: list[dict], n: int) -> list[tuple[int, dict]]:
    if len(rows) <= n:
        return list(enumerate(rows, 1))
    idx = sorted({round(i * (len(rows) - 1) / (n - 1)) for i in range(n)})
    return [(i + 1, rows[i]) for i in idx]


def _render_samples(f: Path) -> str:
    head = f"<h3>Samples ({_esc(f.name)})</h3>"
    if f.suffix.lower() == ".txt":
        return head + f"<pre>{_esc(_read_capped(f, MAX_TEXT_BYTES).decode('utf-8', errors='replace'))}</pre>"
    data = _load_json(f)
    blocks = []
    for label, texts in _sample_items(data):
        joined = "\n\n".join(str(t) for t in texts)
        blocks.append((f"<h3>{_esc(label)}</h3>" if label else "") + f"<pre>{_esc(joined)}</pre>")
    return head + "".join(blocks)


def _sample_items(data: Any) -> list[tuple[str, list]]:
    """samples.json as (label, texts): a list of strings, a {label: text(s)} mapping, or a
    list of {"temperature": ..., "text": ...} records."""
    if isinstance(data, str):
        return [("", [data])]
    if isinstance(data, Mapping):
        return [(str(k), v if isinstance(v, list) else [v]) for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(x, Mapping) for x in data):
        items = []
        for x in data:
            text = x.get("text", x.get("sample", json.dumps(x)))
            label = ", ".join(f"{k} {v}" for k, v in x.items() if k not in ("text", "sample"))
            items.append((label, [text]))
        return items
    return [("", list(data) if isinstance(data, list) else [data])]


def _render_csv(f: Path) -> str:
    import csv

    with open(f, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    shown = body[:MAX_CSV_ROWS]
    records = [(str(i + 1), dict(zip(header, r))) for i, r in enumerate(shown)]
    note = f" (first {len(shown)} of {len(body)} rows)" if len(body) > len(shown) else ""
    return f"<h3>{_esc(f.name)}{note}</h3>" + _wide_table(records, header, key_header="#", cls="csv")


# ---------------------------------------------------------------------------------------
# nested JSON -> readable tables


def _render_value(value: Any, *, depth: int, name: str = "") -> str:
    """Scalars -> a key/value table; a mapping of records or a list of rows -> a wide
    table; deeper mappings -> a sub-heading each, recursively."""
    if isinstance(value, Mapping):
        scalars = {k: v for k, v in value.items() if not _is_nested(v)}
        nested = {k: v for k, v in value.items() if _is_nested(v)}
        parts = [_kv_table(list(scalars.items()), cls="metrics")] if scalars else []
        for k, v in nested.items():
            label = f"{name}.{k}" if name else str(k)
            if depth >= MAX_DEPTH:
                parts.append(_kv_table(_flatten(v, label), cls="metrics"))
                continue
            table = _records_table(v)
            if table is not None:
                parts.append(f"<h3>{_esc(label)}</h3>{table}")
            else:
                parts.append(f"<h3>{_esc(label)}</h3>" + _render_value(v, depth=depth + 1, name=label))
        return "".join(parts)
    if isinstance(value, list):
        table = _records_table(value)
        if table is not None:
            return table
        return _kv_table([(str(i), v) for i, v in enumerate(value)], cls="metrics")
    return _kv_table([("value", value)], cls="metrics")


def _is_nested(v: Any) -> bool:
    """A value needing its own table: a mapping, or a list holding mappings or lists."""
    if isinstance(v, Mapping):
        return bool(v)
    return isinstance(v, list) and any(isinstance(x, (Mapping, list)) for x in v) and not _is_num_matrix(v)


def _is_num_matrix(v: list) -> bool:
    return all(isinstance(x, list) and all(_is_num(y) or y is None for y in x) for x in v)


def _records_table(value: Any) -> str | None:
    """{row: {col: ...}} or [{col: ...}] -> one wide table, when it reads as one: each
    record flattened to dotted columns ("h1.mae"), at most MAX_TABLE_COLUMNS of them."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(str(i + 1), v) for i, v in enumerate(value)]
    else:
        return None
    if not items or not all(isinstance(v, Mapping) and v for _, v in items):
        return None
    if len(items) == 1 and any(isinstance(x, Mapping) for x in items[0][1].values()):
        return None  # one row of nested columns reads worse than the level below
    flat = [(k, dict(_flatten(v))) for k, v in items]
    if any(isinstance(x, list) and any(isinstance(y, Mapping) for y in x) for _, r in flat for x in r.values()):
        return None  # a list of records inside a record: its own table reads better
    cols = _union_keys(r for _, r in flat)
    if len(cols) > MAX_TABLE_COLUMNS:
        return None
    return _wide_table(flat, cols, key_header="" if isinstance(value, Mapping) else "#", cls="metrics")


def _union_keys(records: Iterable[Mapping]) -> list[str]:
    cols: list[str] = []
    for r in records:
        cols += [str(k) for k in r if str(k) not in cols]
    return cols


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings -> [("a.b.c", scalar or list)]."""
    if isinstance(value, Mapping) and value:
        rows = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    return [(prefix or "value", value)]


def _kv_table(rows: Sequence[tuple[str, Any]], *, cls: str) -> str:
    body = "".join(f"<tr><th>{_esc(str(k))}</th>{_cell(v)}</tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


def _wide_table(items: Sequence[tuple[str, Mapping]], cols: Sequence[str], *, key_header: str, cls: str) -> str:
    head = f"<th>{_esc(key_header)}</th>" + "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join(f"<tr><th>{_esc(k)}</th>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for k, r in items)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(v: Any) -> str:
    text = fmt(v)
    cls = ' class="num"' if _is_num(v) else ""
    return f"<td{cls}>{_esc(text)}</td>"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
    """A value as table text: 4 significant digits, long number lists summarised."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        if v and all(_is_num(x) for x in v) and len(v) > MAX_LIST_INLINE:
            return (f"{len(v)} values: {fmt(v[0])} → {fmt(v[-1])} "
                    f"(min {fmt(min(v))}, max {fmt(max(v))})")
        if len(v) > MAX_LIST_INLINE:
            return f"{len(v)} items: " + ", ".join(fmt(x) for x in v[:MAX_LIST_INLINE]) + ", …"
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return _short(json.dumps(v, default=str))
    return _short(str(v))


def _short(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# C0 control characters but tab, newline and carriage return (HTML's own whitespace), and DEL:
# not allowed in an HTML page (a NUL from a run's samples.txt went into the page raw), shown as
# the Unicode control pictures instead (U+0000 -> U+2400, DEL -> U+2421)
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if chr(c) not in "\t\n\r"} | {0x7F: 0x2421}


def _esc(s: str) -> str:
    return html.escape(_encodable(s), quote=True).translate(_CONTROLS)


_NOT_ESCAPES = re.compile(r"[\ud800-\udc7f\udd00-\udfff]")  # surrogates that surrogateescape did not make


def _encodable(s: str) -> str:
    """`s` as UTF-8 can hold it. Python holds a file name's non-UTF-8 bytes (all non-ASCII ones
    under the C locale) as surrogate escapes, and JSON may spell a lone surrogate ("\\udc80"):
    neither encodes ("surrogates not allowed"). An escape becomes its byte, read as UTF-8 (a
    name as the user typed it, U+FFFD for a byte that is not UTF-8); any other surrogate "?"."""
    try:
        s.encode("utf-8")
        return s  # nearly every string: nothing to do
    except UnicodeEncodeError:
        return _NOT_ESCAPES.sub("?", s).encode("utf-8", "surrogateescape").decode("utf-8", "replace")

