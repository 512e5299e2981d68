"""Pit call exploration on the 15 real races: which model ranks "pits within 3 laps" best.

    python benchmarks/pit_explore.py --only tyre lr pitmodel         # the former PitCaller's inputs and the kept model (~4 min)
    python benchmarks/pit_explore.py                                 # every candidate (~25 min, one thread)
    python benchmarks/pit_explore.py --only lean+ --drop-extra pace_loss   # an ablation of PIT_EXTRA
    python benchmarks/pit_explore.py --toy                           # every candidate at toy size (smoke test, ~40 s CPU)

The outer folds are race_real.py's (races sorted by name, race i in fold i % 5); the outer
predictions of all folds are pooled and scored once (the pooled AUC race_real.py reports).
Every choice (L2 strength, number of trees or epochs, depth, feature set) is made INSIDE each
fold's 12 training races: 4 inner folds (training race i in inner fold i % 4), pooled inner
AUC; the held-out races are only predicted. Both numbers are printed per candidate.

Candidates:
  tyre       tyre life alone
  (baseline  the former PitCaller recipe, SGD with L2 on one validation race: retired when the
             PitModel replaced it; its numbers are kept below)
  lr         the former PitCaller's inputs (the features + pit_basis), full-batch L-BFGS, L2 chosen by inner CV
  lr+        the same plus PIT_EXTRA (lapnet.race.pit); lr++ adds buckets of the new tyre quantities
  lean+      PIT_LEAN base features + pit_basis + PIT_EXTRA (L-BFGS, L2 by inner CV)
  pitmodel   lean+ through lapnet.race.pit.fit_pit_model (what train_race now fits)
  factored   P(a stop still ahead) x P(within 3 | a stop ahead): two logistics on lean+'s inputs,
             the second fitted on laps with a stop ahead only; both L2 strengths by inner CV
  lr+next    lr+ trained on "pits at the next lap", scored on within 3
  gbt, gbt+  gradient-boosted trees (NumPy, histogram splits, Newton leaves); depth, trees by inner CV
  mlp+       a one-hidden-layer MLP on lean+'s inputs (lapnet.train.fit); weight decay, epochs by inner CV
  gru        a RaceNet GRU (hidden 32) trained on the pit BCE alone, early-stopped on its validation race
  blend      mean logits of candidates run in the same call
Also measures the share of positive labels that sit before a stop made under a safety car /
VSC / red flag that had not started at the labelled lap (unforeseeable from the lap's
features), and, for pitmodel, where the AUC is lost (positives against negatives
4-10 laps before a stop, 11+ laps before, no stop ahead; per-race against pooled AUC).

Measured (inner mean / outer pooled): baseline 0.7809 / 0.7873, lr 0.7880 / 0.7960,
pitmodel 0.7967 / 0.8035 (better than baseline on all 5 inner and all 5 outer folds; re-run at
9822474, where a tyre change under a red flag is no stop: lr 0.7856 / 0.7935, pitmodel 0.7960 / 0.8026),
gbt+ 0.7887 / 0.7891, mlp+ 0.7866 / 0.7914, gru 0.7383 / 0.7599, factored 0.7905 / 0.7931
(2026-11-27; why it was tried: on laps with a stop still ahead, the pitmodel's out-of-fold
scores rank 0.707 against tyre life's 0.712, so its lead is in telling whether a stop is still
to come, 0.901 against laps with none; with that known exactly, tyre life alone would rank
0.854 overall). Target 0.85: not met.
One torch thread; everything but gru is per lap (~15k laps).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _folds import outer_folds  # benchmarks/_folds.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LAPNET_F1_DATA", REPO.parent / "shared" / "data" / "f1"))
CANDIDATES = ("tyre", "lr", "lr+", "lr++", "lean+", "pitmodel", "factored", "lr+next", "gbt", "gbt+", "mlp+", "gru",
              "blend")
OUTER, INNER = 5, 4


# ---------------------------------------------------------------------------------------
# folds


def inner_folds(train_races: list[str]) -> list[list[str]]:
    """Inside one outer fold: training race i (sorted) is inner-held-out in inner fold i % INNER."""
    tr = sorted(train_races)
    return [[r for i, r in enumerate(tr) if i % INNER == g] for g in range(INNER)]


# ---------------------------------------------------------------------------------------
# models: fit(x_train, y_train, params) -> predict(x) -> scores


def _lr_fit(xt: np.ndarray, yt: np.ndarray, l2: float):
    """Logistic regression on standardised inputs, fitted exactly by the library's
    `lapnet.race.pit.fit_logistic` (mean BCE + l2 |w|^2, L-BFGS); returns x -> logits."""
    import torch

    from lapnet.race.pit import fit_logistic

    mu, sd = xt.mean(0), xt.std(0).clip(1e-3)
    linear = torch.nn.Linear(xt.shape[1], 1).double()
    fit_logistic(linear, torch.from_numpy((xt - mu) / sd).double(), torch.from_numpy(yt).double(), l2)
    wn, bn = linear.weight.detach().numpy()[0], float(linear.bias.detach())
    return lambda x: ((x - mu) / sd) @ wn + bn


class _Rows:
    """Shuffled mini-batches of single laps (x (n, W), y (n,)) in lapnet.train.fit's batches protocol."""

    def __init__(self, x, y, batch_size: int, seed: int):
        self.x, self.y, self.bs, self.seed = x, y, batch_size, seed

    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.y) / self.bs))

    def epoch(self, e: int):
        import torch

        order = torch.from_numpy(np.random.default_rng(self.seed * 7919 + e).permutation(len(self.y)))
        for i in range(0, len(order), self.bs):
            ix = order[i : i + self.bs]
            yield {"x": self.x[ix], "y": self.y[ix]}


def _mlp_fit(xt: np.ndarray, yt: np.ndarray, evals: list[np.ndarray], wd: float, epochs: int = 30, hidden: int = 32, seed: int = 0):
    """A one-hidden-layer MLP (ReLU, dropout 0.2) on standardised inputs, trained by lapnet.train.fit
    (AdamW, cosine lr); returns per eval set its logits after every epoch (epochs, n_e)."""
    import torch

    from lapnet.train import TorchLearner, TrainConfig, fit

    mu, sd = xt.mean(0), xt.std(0).clip(1e-3)
    X = torch.from_numpy((xt - mu) / sd).float()
    Y = torch.from_numpy(yt).float()
    E = [torch.from_numpy((e - mu) / sd).float() for e in evals]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, 1))
    staged = [[] for _ in E]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_fn(model, batch, carry):
        return bce(model(batch["x"]).squeeze(-1), batch["y"]), None, len(batch["y"])

    def evaluate(model):
        for k, e in enumerate(E):
            staged[k].append(model(e).squeeze(-1).numpy())
        return {"val_loss": 0.0}  # epochs are chosen by the caller's inner AUC, not here

    cfg = TrainConfig(epochs=epochs, lr=3e-3, weight_decay=wd, seed=seed, progress=False)
    fit(TorchLearner(net, loss_fn, evaluate, cfg), _Rows(X, Y, 256, seed), cfg, out=None)
    return [np.stack(v) for v in staged]


class GBT:
    """Gradient-boosted depth-d trees for the logistic loss (histogram splits, Newton leaves).

    Trees are grown level by level on all nodes at once: one bincount per level gives every
    node's gradient/hessian histogram over every feature and bin.
    """

    def __init__(self, depth=3, lr=0.1, trees=200, bins=16, lam=1.0, min_hess=5.0, subsample=0.5, colsample=0.7, seed=0):
        self.depth, self.lr, self.trees, self.bins = depth, lr, trees, bins
        self.lam, self.min_hess, self.subsample, self.colsample, self.seed = lam, min_hess, subsample, colsample, seed

    def _bin(self, x: np.ndarray) -> np.ndarray:
        return np.stack([np.searchsorted(self.edges[j], x[:, j], side="right") for j in range(x.shape[1])], 1).astype(np.int64)

    def fit(self, x: np.ndarray, y: np.ndarray, evals: list[np.ndarray] = ()) -> list[np.ndarray]:
        """Fit on (x (n, F), y (n,)); returns, per eval set, its scores after every tree (trees, n_e)."""
        rng = np.random.default_rng(self.seed)
        n, F = x.shape
        B = self.bins
        qs = np.linspace(0, 1, B + 1)[1:-1]
        self.edges = [np.unique(np.quantile(x[:, j], qs)) for j in range(F)]
        xb = self._bin(x)  # (n, F) bin index in [0, B)
        eb = [self._bin(e) for e in evals]
        p0 = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        self.base = math.log(p0 / (1 - p0))
        f = np.full(n, self.base)
        fe = [np.full(len(e), self.base) for e in evals]
        staged = [np.zeros((self.trees, len(e))) for e in evals]
        self.model = []  # per tree: (features (2^d - 1,), thresholds (2^d - 1,), leaves (2^d,))
        offs = (np.arange(F) * B)[None, :]  # (1, F)
        for t in range(self.trees):
            p = 1 / (1 + np.exp(-f))
            g, h = p - y, p * (1 - p)
            rows = np.flatnonzero(rng.random(n) < self.subsample)
            cols = rng.random(F) < self.colsample
            node = np.zeros(len(rows), np.int64)
            feats, thr = [], []
            xr, gr, hr = xb[rows], g[rows], h[rows]
            for level in range(self.depth):
                nn = 1 << level
                idx = (node[:, None] * (F * B) + offs + xr).ravel()  # (m * F,)
                G = np.bincount(idx, np.repeat(gr, F), nn * F * B).reshape(nn, F, B)
                H = np.bincount(idx, np.repeat(hr, F), nn * F * B).reshape(nn, F, B)
                GL, HL = G.cumsum(-1), H.cumsum(-1)  # left = bins <= b
                Gt, Ht = GL[..., -1:], HL[..., -1:]
                GR, HR = Gt - GL, Ht - HL
                gain = GL**2 / (HL + self.lam) + GR**2 / (HR + self.lam) - Gt**2 / (Ht + self.lam)
                gain[(HL < self.min_hess) | (HR < self.min_hess)] = -np.inf
                gain[:, ~cols, :] = -np.inf
                flat = gain.reshape(nn, -1)
                best = flat.argmax(1)
                ok = np.isfinite(flat[np.arange(nn), best]) & (flat[np.arange(nn), best] > 0)
                bf = np.where(ok, best // B, 0)
                bt = np.where(ok, best % B, B)  # B: everything goes left (no split)
                feats.append(bf)
                thr.append(bt)
                node = node * 2 + (xr[np.arange(len(rows)), bf[node]] > bt[node])
            nl = 1 << self.depth
            Gl = np.bincount(node, gr, nl)
            Hl = np.bincount(node, hr, nl)
            leaves = -self.lr * Gl / (Hl + self.lam)
            tree = (feats, thr, leaves)
            self.model.append(tree)
            f += self._apply(tree, xb)
            for k, e in enumerate(eb):
                fe[k] += self._apply(tree, e)
                staged[k][t] = fe[k]
        return staged

    def _apply(self, tree, xb: np.ndarray) -> np.ndarray:
        feats, thr, leaves = tree
        node = np.zeros(len(xb), np.int64)
        for bf, bt in zip(feats, thr):
            node = node * 2 + (xb[np.arange(len(xb)), bf[node]] > bt[node])
        return leaves[node]

    def predict(self, x: np.ndarray, trees: int | None = None) -> np.ndarray:
        xb = self._bin(x)
        f = np.full(len(x), self.base)
        for tree in self.model[:trees]:
            f += self._apply(tree, xb)
        return f


# ---------------------------------------------------------------------------------------
# the experiment


def expand(x: np.ndarray) -> np.ndarray:
    """The former PitCaller's inputs (the features + the pit model's fixed basis) for flat laps x (n, D) -> (n, W)."""
    import torch

    from lapnet.race.features import NET_FEATURES as FEATURES
    from lapnet.race.pit import pit_basis

    xt = torch.from_numpy(x)
    with torch.no_grad():
        return torch.cat([xt, pit_basis(xt, {n: i for i, n in enumerate(FEATURES)})], -1).numpy().astype(np.float64)


from lapnet.race.pit import PIT_LEAN as LEAN  # noqa: E402  the base features a pit wall looks at (one list, in the library)


def extra_basis(x: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """One-hot buckets of short_of_finish and tyre_over_typ per dry compound, pace_loss and
    places_lost buckets: (n, W2)."""
    from lapnet.race.features import NET_FEATURES as FEATURES
    from lapnet.race.pit import PIT_EXTRA

    def hot(v, edges):
        return np.eye(len(edges) + 1)[np.searchsorted(edges, v, side="right")]

    dry = x[:, [FEATURES.index(f"compound_{c}") for c in ("soft", "medium", "hard")]]  # (n, 3)
    e = lambda name: extra[:, PIT_EXTRA.index(name)]  # noqa: E731
    short = hot(e("short_of_finish") * 30, np.arange(-15, 31, 3.0))  # (n, 17)
    over = hot(e("tyre_over_typ"), np.arange(0.2, 1.61, 0.1))  # (n, 16)
    per = lambda b: (dry[:, :, None] * b[:, None, :]).reshape(len(x), -1)  # noqa: E731
    return np.concatenate([per(short), per(over), hot(e("pace_loss"), np.arange(0.0, 2.01, 0.25)),
                           hot(e("places_lost") * 5, np.arange(0.5, 6, 1.0))], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, choices=CANDIDATES, metavar="CANDIDATE",
                    help=f"candidates to run (default: all): {' '.join(CANDIDATES)}")
    ap.add_argument("--drop-extra", nargs="*", default=[], help="extra features left out (ablation; names from PIT_EXTRA)")
    ap.add_argument("--trees", type=int, default=200, help="boosted trees (the number kept is chosen by inner CV, every 10th)")
    ap.add_argument("--depths", type=int, nargs="+", default=[3], help="tree depths tried (chosen by inner CV)")
    ap.add_argument("--toy", action="store_true", help=(
        "a smoke test of every candidate (tests/test_benchmarks.py): the first 5 races, two settings per grid, "
        "few trees and epochs; the numbers mean nothing"))
    args = ap.parse_args(argv)
    if args.toy:
        args.trees, args.depths = 10, [2]
    if not DATA.is_dir() or not list(DATA.glob("*.csv")):
        print(f"skipped: real F1 data not found at {DATA} (set LAPNET_F1_DATA)")
        return 0
    import torch

    torch.set_num_threads(1)
    from lapnet.race.features import NET_FEATURES as FEATURES, build_sequences
    from lapnet.race.metrics import roc_auc
    from lapnet.race.inputs import load_laps, subset_sequences
    from lapnet.race.training import _split
    from lapnet.race.training_config import RaceTrainConfig

    try:
        from lapnet.race.pit import PIT_EXTRA, pit_extra_features
    except ImportError:
        PIT_EXTRA, pit_extra_features = None, None

    t0 = time.perf_counter()
    paths = sorted(DATA.glob("*.csv"))[: 5 if args.toy else None]
    laps, _ = load_laps(paths)
    laps = laps.reset_index(drop=True)
    seq = build_sequences(laps)
    N, T = seq.x.shape[:2]
    D = len(FEATURES)  # the lap vectors' NET_FEATURES (PIT_EXTRA, their last columns, are read below as `extra`)
    races = sorted({k[0] for k in seq.keys})
    race_of = np.array([k[0] for k in seq.keys])
    pm = seq.pit_mask
    lap_race = np.broadcast_to(race_of[:, None], (N, T))[pm]  # (n,) race of each pit-call lap
    y = seq.pit[pm].astype(np.float64)
    x_raw = seq.x[pm][:, :D]  # (n, D)
    x_exp = expand(x_raw)
    extra = None
    if pit_extra_features is not None:
        ex = pit_extra_features(laps)  # (rows, E) aligned with laps
        grid = np.zeros((N, T, ex.shape[1]), np.float32)
        ok = seq.row >= 0
        grid[ok] = ex[seq.row[ok]]
        extra = grid[pm].astype(np.float64)
        if args.drop_extra:  # ablation: the dropped columns are zeroed (constant: no weight, no split)
            extra[:, [PIT_EXTRA.index(c) for c in args.drop_extra]] = 0.0
    print(f"{len(y)} pit-call laps, {int(y.sum())} positive ({y.mean():.3f}), {len(races)} races; "
          f"features {D}, expanded {x_exp.shape[1]}, extra {0 if extra is None else extra.shape[1]} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    # --- how many positives are unforeseeable: the stop came under a SC/VSC/red that had not started at lap t
    neu = laps["Neutralised"].to_numpy(bool)
    inl = laps["InLap"].to_numpy(bool)
    unforeseen = np.zeros((N, T), bool)
    for i in range(N):
        L = seq.lengths[i]
        rows = seq.row[i, :L]
        for j in range(L - 1):
            if seq.pit[i, j] > 0:
                q = next(k for k in range(j + 1, min(j + 4, L)) if inl[rows[k]])
                unforeseen[i, j] = neu[rows[q]] and not neu[rows[j]]
    unf = unforeseen[pm]
    nxt = np.zeros((N, T), np.float64)  # the next lap is an in-lap
    for i in range(N):
        L = seq.lengths[i]
        nxt[i, : L - 1] = inl[seq.row[i, 1:L]]
    y_next = nxt[pm]
    dist = np.full((N, T), 99)  # laps from lap t to the driver's next in-lap (99: none)
    for i in range(N):
        L, nxt_in = seq.lengths[i], 99
        for j in range(L - 1, -1, -1):
            dist[i, j] = nxt_in - j if nxt_in < 99 else 99
            if inl[seq.row[i, j]]:
                nxt_in = j
    dist = dist[pm]
    print(f"positives whose stop came under a neutralisation not yet started at the labelled lap: "
          f"{int(unf.sum())} / {int(y.sum())} = {unf.sum() / y.sum():.3f}")

    def score(pred: np.ndarray, mask=None) -> float:
        m = np.ones(len(y), bool) if mask is None else mask
        return roc_auc(y[m], pred[m])

    folds = outer_folds(races, OUTER)  # race_real.py's (benchmarks/_folds.py)
    results = {}

    def report(name: str, outer: np.ndarray, inner: list[float], chosen: list):
        a = score(outer)
        b = score(outer, ~unf)
        per = [roc_auc(y[np.isin(lap_race, fo)], outer[np.isin(lap_race, fo)]) for fo in folds]
        results[name] = (a, inner, per, chosen)
        if name in ("baseline", "pitmodel"):  # where the AUC is lost
            pos = y == 1
            parts = []
            for lo, hi, what in ((4, 10, "negatives 4-10 laps before a stop"), (11, 98, "11+ laps before a stop"), (99, 99, "no stop ahead")):
                m = pos | ((dist >= lo) & (dist <= hi))
                parts.append(f"{what} {roc_auc(y[m], outer[m]):.3f} (n {int((m & ~pos).sum())})")
            per_race = np.mean([roc_auc(y[lap_race == r], outer[lap_race == r]) for r in races])
            print(f"  {name}: positives against {'; '.join(parts)}; mean per-race AUC {per_race:.4f} "
                  f"(pooled {a:.4f}: the gap is cross-race calibration)", flush=True)
        print(f"{name:<10} outer pooled AUC {a:.4f} (without unforeseeable-SC positives {b:.4f}); per fold "
              + " ".join(f"{v:.3f}" for v in per) + "; inner " + " ".join(f"{v:.3f}" for v in inner)
              + f" (mean {np.mean(inner):.4f}); chosen {chosen}", flush=True)

    todo = args.only or list(CANDIDATES)

    if "tyre" in todo:
        report("tyre", x_raw[:, FEATURES.index("tyre_life")].astype(float), [float("nan")] * OUTER, [])


    kept: dict = {}  # name -> (outer scores, per fold: inner scores at the chosen setting)

    def run_family(name: str, xs: np.ndarray, grid: list, fit_predict, label: np.ndarray | None = None):
        """fit_predict(xt, yt, xe_list, param) -> list of score arrays (one per eval set), or for
        staged models a list of (stages, n) arrays; the best param (and stage) by pooled inner AUC
        (always on the pit-within-3 label; `label` is what the model is trained on, default the same)."""
        lab = y if label is None else label
        outer = np.zeros(len(y))
        inner_best, chosen, inner_keep = [], [], []
        for f, test in enumerate(folds):
            train_races = [r for r in races if r not in test]
            trm = np.isin(lap_race, train_races)
            inner_pred = {}
            for g in inner_folds(train_races):
                im = np.isin(lap_race, g)
                fm = trm & ~im
                for k, prm in enumerate(grid):
                    (pe,) = fit_predict(xs[fm], lab[fm], [xs[im]], prm)
                    inner_pred.setdefault(k, np.zeros((pe.shape[0], len(y)) if pe.ndim == 2 else len(y)))
                    if pe.ndim == 2:
                        inner_pred[k][:, im] = pe
                    else:
                        inner_pred[k][im] = pe
            best = (-1.0, None, None)
            for k, pr in inner_pred.items():
                if pr.ndim == 2:  # staged: every 10th stage (every stage when there are at most 30)
                    step = 1 if pr.shape[0] <= 30 else 10
                    for s in range(step - 1, pr.shape[0], step):
                        a = roc_auc(y[trm], pr[s][trm])
                        if a > best[0]:
                            best = (a, k, s)
                else:
                    a = roc_auc(y[trm], pr[trm])
                    if a > best[0]:
                        best = (a, k, None)
            a, k, s = best
            prm = grid[k]
            te = np.isin(lap_race, test)
            (pe,) = fit_predict(xs[trm], lab[trm], [xs[te]], prm if s is None else {**prm, "trees": s + 1})
            outer[te] = pe[s] if pe.ndim == 2 else pe  # a staged model's chosen stage
            inner_best.append(a)
            inner_keep.append(inner_pred[k][s] if s is not None else inner_pred[k])
            chosen.append(prm if s is None else {**prm, "trees": s + 1})
        report(name, outer, inner_best, chosen)
        kept[name] = (outer, inner_keep)

    def blend(name: str, parts: list[str]):
        """The mean logit of candidates already run (each at its own inner-chosen setting)."""
        if not all(p in kept for p in parts):
            return
        outer = np.mean([kept[p][0] for p in parts], 0)
        inner = []
        for f, test in enumerate(folds):
            trm = ~np.isin(lap_race, test)
            inner.append(roc_auc(y[trm], np.mean([kept[p][1][f] for p in parts], 0)[trm]))
        report(name, outer, inner, parts)

    def lr_fp(xt, yt, xe, l2):
        pred = _lr_fit(xt, yt, l2)
        return [pred(e) for e in xe]

    l2_grid = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4][: 2 if args.toy else None]
    if "lr" in todo:
        run_family("lr", x_exp, l2_grid, lr_fp)
    if "lr+" in todo and extra is not None:
        run_family("lr+", np.concatenate([x_exp, extra], 1), l2_grid, lr_fp)
    if "lr++" in todo and extra is not None:  # plus a basis on the new tyre quantities, per dry compound
        run_family("lr++", np.concatenate([x_exp, extra, extra_basis(x_raw, extra)], 1), l2_grid, lr_fp)
    if "lean+" in todo and extra is not None:  # the pit-relevant base features only (no lap-time detail) + basis + extras
        keep = [FEATURES.index(c) for c in LEAN] + list(range(D, x_exp.shape[1]))
        run_family("lean+", np.concatenate([x_exp[:, keep], extra], 1), l2_grid + [3e-1], lr_fp)
    if "pitmodel" in todo and extra is not None:  # lapnet.race.pit.fit_pit_model: lean+ as a module (its own inner CV)
        from lapnet.race.pit import fit_pit_model

        outer, inner, chosen = np.zeros(len(y)), [], []
        for test in folds:
            te = np.isin(lap_race, test)
            model, info = fit_pit_model(x_raw[~te], extra[~te], y[~te], lap_race[~te], FEATURES,  # x_raw: NET_FEATURES
                                        **({"l2_grid": (1e-1, 1e-2)} if args.toy else {}))
            with torch.no_grad():
                outer[te] = model(torch.from_numpy(x_raw[te]), torch.from_numpy(extra[te].astype(np.float32))).numpy()
            inner.append(max(info["inner_auc_by_l2"].values()))
            chosen.append(info["l2"])
        report("pitmodel", outer, inner, chosen)
    if "factored" in todo and extra is not None:
        # P(within 3) = P(a stop still ahead) x P(within 3 | a stop ahead): two logistics on lean+'s inputs,
        # the second fitted only on laps with a stop ahead (there tyre life alone ranks 0.71, the one-piece model 0.70)
        keep = [FEATURES.index(c) for c in LEAN] + list(range(D, x_exp.shape[1]))
        ahead = (dist < 99).astype(np.float64)

        def factored_fp(xt, yt2, xe, prm):
            q = _lr_fit(xt, yt2[:, 1], prm["l2_ahead"])
            on = yt2[:, 1] == 1
            r = _lr_fit(xt[on], yt2[on, 0], prm["l2_window"])
            logsig = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731
            return [logsig(q(e)) + logsig(r(e)) for e in xe]

        grid = [{"l2_ahead": a, "l2_window": w} for a in (1e-1, 3e-2, 1e-2) for w in (3e-1, 1e-1, 3e-2)][: 2 if args.toy else None]
        run_family("factored", np.concatenate([x_exp[:, keep], extra], 1), grid, factored_fp,
                   label=np.stack([y, ahead], 1))
    if "lr+next" in todo and extra is not None:  # trained on "pits at the next lap" (a hazard), scored on within 3
        run_family("lr+next", np.concatenate([x_exp, extra], 1), l2_grid, lr_fp, label=y_next)

    def gbt_fp(xt, yt, xe, prm):
        m = GBT(depth=prm["depth"], lr=prm.get("lr", 0.1), trees=prm.get("trees", args.trees), min_hess=prm.get("min_hess", 5.0))
        return m.fit(xt, yt, xe)

    gbt_grid = [{"depth": d} for d in args.depths]
    if "gbt" in todo:
        run_family("gbt", x_raw.astype(np.float64), gbt_grid, gbt_fp)
    if "gbt+" in todo and extra is not None:
        run_family("gbt+", np.concatenate([x_raw, extra], 1), gbt_grid, gbt_fp)
    def mlp_fp(xt, yt, xe, prm):
        return _mlp_fit(xt, yt, xe, prm["wd"], epochs=2 if args.toy else 30)  # the full schedule; the stage is picked after

    if "mlp+" in todo and extra is not None:  # on lean+'s inputs
        keep = [FEATURES.index(c) for c in LEAN] + list(range(D, x_exp.shape[1]))
        run_family("mlp+", np.concatenate([x_exp[:, keep], extra], 1), [{"wd": 1e-2}, {"wd": 1e-1}], mlp_fp)
    if "gru" in todo:  # a RaceNet (GRU, hidden 32) trained on the pit loss alone, early-stopped on its validation race
        from lapnet.race.models import RaceModelConfig, RaceNet
        from lapnet.checkpoint import load_tensors
        from lapnet.race.runs import run_net
        from lapnet.race.training import SeqBatches, _tensors
        from lapnet.train import TorchLearner, TrainConfig, fit

        size = {"hidden_size": 8, "epochs": 1} if args.toy else {"hidden_size": 32}
        gcfg = RaceTrainConfig(pit_caller=False, pit_weight=1.0, members=1, progress=False, **size)
        seq_lap = np.full((N, T), -1)
        seq_lap[pm] = np.arange(len(y))

        def gru_logits(train_races: list[str], pred_races: list[str], tmp: Path) -> tuple[np.ndarray, np.ndarray]:
            sub = subset_sequences(seq, np.flatnonzero(np.isin(race_of, train_races)))
            tr, va = _split(sub, gcfg.val_races, gcfg.seed)
            mcfg = RaceModelConfig(input_size=D, hidden_size=gcfg.hidden_size, num_layers=1, arch="gru", dropout=gcfg.dropout,
                                   linear_skip=gcfg.linear_skip, head=gcfg.head)
            torch.manual_seed(gcfg.seed)
            net = RaceNet(mcfg)
            bce = torch.nn.functional.binary_cross_entropy_with_logits

            def loss_fn(model, batch, carry):  # the pit BCE alone (race_loss ties the pit term to the forecast)
                out, _ = model(batch["x"], batch["lengths"])
                m = batch["pit_mask"]
                return bce(out["pit"][m], batch["pit"][m]), None, int(m.sum())

            vb = _tensors(sub, va)

            def evaluate(model):
                out, _ = model(vb["x"], vb["lengths"])
                return {"val_loss": float(bce(out["pit"][vb["pit_mask"]], vb["pit"][vb["pit_mask"]]))}

            tcfg = TrainConfig(epochs=gcfg.epochs, lr=gcfg.lr, weight_decay=gcfg.weight_decay, clip=1.0, patience=gcfg.patience,
                               seed=gcfg.seed, progress=False, warmup_steps=10)
            fit(TorchLearner(net, loss_fn, evaluate, tcfg), SeqBatches(sub, tr, gcfg.batch_size, gcfg.seed), tcfg, out=tmp)
            arrays, _ = load_tensors(tmp / "model.safetensors")  # the best validation weights
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
            idx = np.flatnonzero(np.isin(race_of, pred_races))
            p = run_net(net, subset_sequences(seq, idx))["pit"].clip(1e-6, 1 - 1e-6)  # (n, T')
            laps_ix = seq_lap[idx, : p.shape[1]]
            ok = laps_ix >= 0
            return laps_ix[ok], np.log(p[ok]) - np.log1p(-p[ok])

        outer, inner, inner_keep = np.zeros(len(y)), [], []
        with tempfile.TemporaryDirectory() as tmp:
            for f, test in enumerate(folds):
                train_races = [r for r in races if r not in test]
                pred = np.zeros(len(y))
                for gi, g in enumerate(inner_folds(train_races)):
                    ix, lg = gru_logits([r for r in train_races if r not in g], g, Path(tmp) / f"i{f}_{gi}")
                    pred[ix] = lg
                trm = np.isin(lap_race, train_races)
                inner.append(roc_auc(y[trm], pred[trm]))
                inner_keep.append(pred)
                ix, lg = gru_logits(train_races, test, Path(tmp) / f"o{f}")
                outer[ix] = lg
                print(f"  gru fold {f + 1}: inner {inner[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        report("gru", outer, inner, [f"hidden {gcfg.hidden_size}, defaults"])
        kept["gru"] = (outer, inner_keep)
    if "blend" in todo:
        blend("lr+ & gbt+", ["lr+", "gbt+"])
        blend("lean+ & gru", ["lean+", "gru"])
        blend("lean+ & mlp+", ["lean+", "mlp+"])
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
