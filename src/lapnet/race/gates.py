"""The race forecaster's gates at pit stops: the seed notebook's F1 analogy, measured.

The notebook says that "the forget / update gate resets the tyre memory at a pit stop" and that
"the hidden state carries tyre wear". A race run's recurrent net reads each driver's laps one
step per lap, so both claims can be checked on its real gates, recomputed in float64 from the
run's weights (`lapnet.diagnostics.gates.trace_gates`, which checks them against the net's own
hidden states). In PyTorch's GRU (the run's default, `lapnet race train --arch gru`)

    r = s(W_ir x + b_ir + W_hr h + b_hr)     z = s(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

so a LOW update gate z overwrites the state with the candidate n ("reset the tyre memory"),
and a low reset gate r leaves the old state out of that candidate. In an LSTM
(c' = f * c + i * g, h' = o * tanh(c')) the forget gate f plays z's part (low f: forget c).

What is measured, per member of the run's ensemble (each member is its own net):

- each gate's value on out-laps (the first lap of a new stint: the lap that shows the net the
  stop: fresh tyres, tyre life back to a few laps), on in-laps (the lap before it) and on
  other laps, mean over units and per unit; the laps' first step is apart (its state is zero:
  the gates act on nothing there);
- how far the state moves on those laps: mean |h_t - h_{t-1}| over units (|c_t - c_{t-1}|
  for an LSTM), and for a GRU how far the candidate lands from it, |n_t - h_{t-1}|: the
  state moves by (1 - z) * (n - h), so a big move at a stop comes from a low z, or from a
  candidate far from the state;
- a linear probe (ridge, leave-races-out; leave-drivers-out on one race) from the state after
  each lap to the lap's tyre life, beside the same probe from the lap's net inputs alone, from
  those inputs without the columns that count tyre age (`TYRE_AGE_FEATURES`) and from these
  plus the state: tyre life is itself an input (`tyre_life`), so the state can only add to
  the inputs that do not count it.

Shapes: n traced laps (every lap of every driver traced, in sequence order), H hidden units,
D the net's input features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lapnet.diagnostics.gates import trace_gates
from lapnet.errors import LapnetError

GATES_COMMAND = "lapnet race gates"
GATES_PNG_MARK = {"Software": GATES_COMMAND}  # written into the figures: an earlier call's are known by it (predict has its own, outputs.PREDICT_PNG_MARK)
SHOWN = {"gru": ("z", "r"), "lstm": ("f", "i", "o")}  # the sigmoid gates measured, in [0, 1]
KEEP = {"gru": "z", "lstm": "f"}  # the gate that keeps the state (low: overwrite / forget)
LAP_KINDS = ("first", "out_lap", "in_lap", "other")
PROBES = ("state", "inputs", "inputs_without_tyre_age", "inputs_without_tyre_age_and_state")
# the net inputs that count tyre age (lapnet.race.features.NET_FEATURES): left out of the
# "inputs without tyre age" probe, so what the state adds to the lap's other inputs shows
TYRE_AGE_FEATURES = ("tyre_life", "fresh_tyre", "laps_in_stint", "n_scored", "tyre_vs_field", "tyre_race_frac",
                     "neutral_tyre")
PROBE_RIDGE = 1e-3  # L2 strength per lap on standardised inputs (n >> H: it barely shrinks)
UNIT_SHIFT = 0.1  # a unit whose mean gate on out-laps differs from other laps' by more is counted


@dataclass
class RaceGates:
    """What `race_gates` traced: one member's gates on every lap of the chosen drivers.

    Attributes:
        laps: one row per traced lap (n rows): Race, Driver, LapNumber, Stint, Compound,
            TyreLife, InLap / OutLap (the cleaning's flags: a pit-lane exit or lap 1), Scored,
            Neutralised, and lapnet's: out_lap (the first lap of a new stint: Stint differs
            from the driver's previous lap's), in_lap (the lap before an out-lap), kind (one of
            LAP_KINDS: "first" is the driver's first lap, the out-lap flag wins over the
            in-lap's), in_sample (a training race of the run), "<gate>_mean" (mean over units),
            state_change (mean over units of |h_t - h_{t-1}|; an LSTM's |c_t - c_{t-1}|) and,
            for a GRU, candidate_gap (mean over units of |n_t - h_{t-1}|).
        gates: gate name -> (n, H) per unit (the SHOWN gates of the kind).
        state: (n, H) h after each lap (an LSTM's: (n, 2H), h then c).
        state_prev: (n, H or 2H) the state before each lap (zeros before the first).
        x: (n, D) the net's inputs on each lap; features: their names.
        candidate: (n, H) a GRU's candidate n on each lap (None for an LSTM): h moves by
            (1 - z) * (n - h_prev), so a large move comes from a low z or from a distant n.
        kind: "gru" | "lstm"; member: 1 (the run's own net) to members; max_abs_diff: the
            largest |recomputed - torch| of the trace.
    """

    laps: pd.DataFrame
    gates: dict[str, np.ndarray]
    state: np.ndarray
    state_prev: np.ndarray
    x: np.ndarray
    features: tuple[str, ...]
    candidate: np.ndarray | None
    kind: str
    member: int
    members: int
    max_abs_diff: float

    @property
    def change(self) -> np.ndarray:
        """(n, H) |h_t - h_{t-1}| per unit (an LSTM's cell state c)."""
        H = self.gates[KEEP[self.kind]].shape[1]
        d = np.abs(self.state - self.state_prev)
        return d[:, :H] if self.kind == "gru" else d[:, H:]

    @property
    def candidate_gap(self) -> np.ndarray | None:
        """(n, H) |n_t - h_{t-1}| per unit (a GRU's; None for an LSTM)."""
        if self.candidate is None:
            return None
        return np.abs(self.candidate - self.state_prev)

    @property
    def keep_gate(self) -> str:
        """The gate whose low value overwrites the state: z (GRU) or f (LSTM)."""
        return KEEP[self.kind]


# ---------------------------------------------------------------------------------------
# tracing


def _nets(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The forecaster's nets: a RaceEnsemble's members, or the one RaceNet."""
    from lapnet.race.models import RaceEnsemble, WithPitCaller

    f = model.forecaster if isinstance(model, WithPitCaller) else model
    return list(f.members) if isinstance(f, RaceEnsemble) else [f]


@dataclass
class _Loaded:
    run: Any  # runs.RaceRun
    laps: pd.DataFrame  # cleaned, RangeIndex (the positions seq.row points at)
    seq: Any  # features.Sequences
    idx: np.ndarray  # the sequences of the chosen drivers
    drivers: list[str] | None
    in_sample: dict
    in_sample_check: str
    cleaning: dict


def _load(run, laps, driver, race_length) -> _Loaded:
    """The run, the cleaned laps, their sequences and the chosen drivers' (bad input: LapnetError)."""
    from lapnet.race.io import parse_drivers
    from lapnet.race.evaluation import in_sample_races
    from lapnet.race.inputs import load_laps, race_sequences
    from lapnet.race.runs import RaceRun, load_run

    r = run if isinstance(run, RaceRun) else load_run(run)
    arch = (r.config.get("model") or {}).get("arch", "gru")
    if arch not in SHOWN:
        raise LapnetError(f"{r.path}: a {arch} run has no gates to trace (lapnet race gates reads a gru or lstm run)")
    table, report = load_laps(laps)
    drivers = parse_drivers(driver, table, no_timed_lap=[d for rr in report.races for d in rr.drivers_dropped])
    table = table.reset_index(drop=True)  # build_sequences' positions
    seq, _ = race_sequences(table, race_length)
    idx = np.array([i for i, k in enumerate(seq.keys) if drivers is None or k[1] in drivers], dtype=np.int64)
    in_sample, how = in_sample_races(r, table)
    return _Loaded(r, table, seq, idx, drivers, in_sample, how, report.summary())


def _trace(d: _Loaded, member: int) -> RaceGates:
    """Member `member`'s gates (1-based) on the chosen sequences, flattened to their laps."""
    from lapnet.race.features import NET_FEATURES

    nets = _nets(d.run.model)
    if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or not 1 <= member <= len(nets):
        raise LapnetError(f"member must be a whole number from 1 to {len(nets)} (the run's members), got {member!r}")
    net = nets[int(member) - 1]
    seq, idx = d.seq, d.idx
    D, T = net.cfg.input_size, int(seq.lengths[idx].max())
    x = torch.from_numpy(np.ascontiguousarray(seq.x[idx, :T, :D]))  # (B, T, D): what RaceNet.forward reads
    with torch.no_grad():
        trace = trace_gates(net.rnn, x.to(next(net.parameters()).device))
    top = trace.layers[-1]  # the layer the heads read
    kind = trace.kind
    state = top["h"] if kind == "gru" else np.concatenate([top["h"], top["c"]], -1)  # (B, T, H or 2H)
    prev = np.concatenate([np.zeros_like(state[:, :1]), state[:, :-1]], 1)  # (B, T, .) the state before each lap
    valid = np.arange(T)[None, :] < seq.lengths[idx][:, None]  # (B, T)
    flat = lambda a: a[valid]  # noqa: E731  (B, T, ...) -> (n, ...) in sequence order
    gates = {g: flat(top[g]) for g in SHOWN[kind]}
    rows = flat(seq.row[idx, :T])
    lap = d.laps.iloc[rows]
    t = flat(np.broadcast_to(np.arange(T)[None, :], valid.shape))
    race, drv = lap["Race"].astype(str).to_numpy(), lap["Driver"].astype(str).to_numpy()
    stint = lap["Stint"].to_numpy(float)
    prev_stint = np.r_[np.nan, stint[:-1]]
    out_lap = (t > 0) & np.isfinite(stint) & np.isfinite(prev_stint) & (stint != prev_stint)  # t > 0: the same driver's
    in_lap = np.r_[out_lap[1:], False]  # the next row is this driver's out-lap
    kinds = np.where(t == 0, "first", np.where(out_lap, "out_lap", np.where(in_lap, "in_lap", "other")))
    table = pd.DataFrame({
        "Race": race, "Driver": drv, "LapNumber": lap["LapNumber"].to_numpy(), "Stint": lap["Stint"].to_numpy(),
        "Compound": lap["Compound"].astype(str).to_numpy(), "TyreLife": lap["TyreLife"].to_numpy(float),
        "InLap": lap["InLap"].to_numpy(bool), "OutLap": lap["OutLap"].to_numpy(bool),
        "Scored": lap["Scored"].to_numpy(bool),
        "Neutralised": lap["Neutralised"].to_numpy(bool) if "Neutralised" in lap else np.zeros(len(lap), bool),
        "out_lap": out_lap, "in_lap": in_lap, "kind": kinds, "in_sample": np.isin(race, list(d.in_sample)),
        **{f"{g}_mean": v.mean(-1) for g, v in gates.items()},
    })
    g = RaceGates(table, gates, flat(state), flat(prev), flat(x.numpy()).astype(np.float64), tuple(NET_FEATURES[:D]),
                  flat(top["n"]) if kind == "gru" else None, kind, int(member), len(nets), trace.max_abs_diff)
    table["state_change"] = g.change.mean(-1)
    if g.candidate is not None:
        table["candidate_gap"] = g.candidate_gap.mean(-1)
    return g


def race_gates(run, laps, driver: str | list[str] | None = None, *, member: int = 1,
               race_length: int | str = "file") -> RaceGates:
    """Trace one member of a trained race run over each driver's laps.

    Args:
        run: a run directory from `lapnet race train` (or a loaded `runs.RaceRun`).
        laps: lap tables as `inputs.load_laps` reads them (paths, a DataFrame, FastF1 Laps).
        driver: None (every driver), or drivers as `io.parse_drivers` reads them ('VER',
            'ver,ham', '1,44').
        member: which of the ensemble's nets, 1 (the run's own) to the run's members: each is
            a net of its own, with gates of its own (`race_gates_report` measures them all).
        race_length: as `evaluation.eval_race` takes it (default: the table's last lap).

    Returns:
        RaceGates (per lap: the gates mean over units and per unit, the state, the tyre
        life, stint and in/out-lap flags).

    Raises:
        LapnetError: a run or table that cannot be read, an unknown driver, a member out of
            range, a run whose net has no gates.
    """
    return _trace(_load(run, laps, driver, race_length), member)


# ---------------------------------------------------------------------------------------
# measurements


def _auc_lower(a: np.ndarray, b: np.ndarray) -> float | None:
    """P(a value of `a` < a value of `b`), ties counted half (a rank AUC); None when either is empty."""
    if not len(a) or not len(b):
        return None
    b = np.sort(b)
    above = len(b) - np.searchsorted(b, a, "right")  # (len(a),) values of b above each value of a
    ties = np.searchsorted(b, a, "right") - np.searchsorted(b, a, "left")
    return float((above + 0.5 * ties).sum() / (len(a) * len(b)))


def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if len(v) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _compare(v: np.ndarray, per_unit: np.ndarray, at: dict[str, np.ndarray], green: np.ndarray,
             races: np.ndarray) -> dict:
    """One series (n,) and its units (n, H) on out-laps, in-laps and other laps (see `gate_measures`)."""
    out, other = at["out_lap"], at["other"]
    mean = {k: _mean(v[m]) for k, m in at.items()}
    unit = (per_unit[out].mean(0) - per_unit[other].mean(0)) if out.any() and other.any() else None  # (H,)
    both = [race for race in dict.fromkeys(races[out]) if (other & (races == race)).any()]
    lower = [race for race in both if v[out & (races == race)].mean() < v[other & (races == race)].mean()]
    return {
        "mean": mean,
        "out_minus_other": _diff(mean["out_lap"], mean["other"]),
        "in_minus_other": _diff(mean["in_lap"], mean["other"]),
        "out_minus_other_green": _diff(_mean(v[out & green]), _mean(v[other & green])),
        "auc_out_lower": _auc_lower(v[out], v[other]),
        "races_lower": len(lower), "races": len(both),
        "unit_out_minus_other": None if unit is None else [float(u) for u in unit],
        "units_lower": None if unit is None else int((unit < -UNIT_SHIFT).sum()),
        "units_higher": None if unit is None else int((unit > UNIT_SHIFT).sum()),
    }


def gate_measures(g: RaceGates, rows: np.ndarray | None = None, *, probe: bool = True) -> dict:
    """Out-laps, in-laps and other laps: each gate and the state's change, and the tyre-life probe.

    Args:
        g: `race_gates`' trace.
        rows: (n,) bool, the laps to pool (None: all).
        probe: run `tyre_probe` (False: "probe" is None).

    Returns:
        {"laps": count per kind, "gates": name -> {"mean": per kind (mean over units, then laps),
        "out_minus_other", "in_minus_other", "out_minus_other_green" (both kinds under green
        flags: stops bunch under safety cars), "auc_out_lower" (P(an out-lap's value < another
        lap's), ties half), "races_lower" of "races" (the races with both kinds of lap where
        the out-laps' mean is lower), "unit_out_minus_other" (H values), "units_lower" /
        "units_higher" (by more than UNIT_SHIFT)}, "state_change": the same for |h_t - h_{t-1}|,
        "candidate_gap": for |n_t - h_{t-1}| (a GRU's; None for an LSTM), "probe": `tyre_probe`}.
    """
    t = g.laps
    rows = np.ones(len(t), bool) if rows is None else np.asarray(rows, bool)
    kind = t["kind"].to_numpy()
    at = {k: rows & (kind == k) for k in LAP_KINDS}
    args = (at, ~t["Neutralised"].to_numpy(bool), t["Race"].to_numpy())
    return {"laps": {k: int(m.sum()) for k, m in at.items()},
            "gates": {name: _compare(t[f"{name}_mean"].to_numpy(), u, *args) for name, u in g.gates.items()},
            "state_change": _compare(t["state_change"].to_numpy(), g.change, *args),
            "candidate_gap": (None if g.candidate is None else
                              _compare(t["candidate_gap"].to_numpy(), g.candidate_gap, *args)),
            "probe": tyre_probe(g, rows) if probe else None}


def _ridge_r2(X: np.ndarray, y: np.ndarray, groups: np.ndarray, ridge: float) -> float:
    """Out-of-fold R^2 of a ridge regression, one fold per group, pooled over the folds:
    1 - sum (y - y_hat)^2 / sum (y - mean y)^2.

    Each fold standardises X (n, p) on its training rows and solves
    (Z^T Z + ridge n I) w = Z^T (y - mean y); the sums it needs are the whole's minus the
    held-out group's, so X^T X is formed once per group, not once per fold."""
    ug, inv = np.unique(groups, return_inverse=True)
    p = X.shape[1]
    Xy = np.concatenate([X, y[:, None]], 1)  # (n, p + 1)
    S = np.stack([Xy[inv == k].T @ Xy[inv == k] for k in range(len(ug))])  # (G, p+1, p+1) sums of products
    s1 = np.stack([Xy[inv == k].sum(0) for k in range(len(ug))])  # (G, p+1) sums
    cnt = np.bincount(inv, minlength=len(ug)).astype(float)  # (G,)
    pred = np.empty_like(y)
    for k in range(len(ug)):
        n = cnt.sum() - cnt[k]
        mu = (s1.sum(0) - s1[k]) / n  # (p+1,) the training rows' means, y's last
        cov = (S.sum(0) - S[k]) / n - np.outer(mu, mu)  # (p+1, p+1)
        var = np.diag(cov)[:p]
        sd = np.sqrt(np.clip(var, 0.0, None))
        const = sd <= 1e-9 * (1.0 + np.abs(mu[:p]))  # constant on the training rows: left out
        sd[const] = 1.0
        zz = n * cov[:p, :p] / np.outer(sd, sd)  # Z^T Z
        zy = n * cov[:p, p] / sd  # Z^T (y - mean y)
        zz[const, :], zz[:, const], zy[const] = 0.0, 0.0, 0.0
        w = np.linalg.solve(zz + ridge * n * np.eye(p), zy)  # (p,)
        test = inv == k
        pred[test] = ((X[test] - mu[:p]) / sd) @ w + mu[p]
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def tyre_probe(g: RaceGates, rows: np.ndarray | None = None, ridge: float = PROBE_RIDGE) -> dict:
    """How well a linear read-out of each lap's state gives its tyre life, beside the inputs'.

    Ridge regressions (`ridge` per lap on standardised inputs), scored out of fold: one fold per
    race when the laps hold several, else one per driver. Laps without a TyreLife are left out.

    Returns:
        {"r2": {"state", "inputs", "inputs_without_tyre_age", "inputs_without_tyre_age_and_state"},
        "state_adds": the last minus the one before (what the state adds to the inputs that do
        not count tyre age), "folds", "by" ("race" | "driver"), "laps", "left_out" (the
        TYRE_AGE_FEATURES)}, or {"r2": None, "note"} without two groups to fold on.
    """
    rows = np.ones(len(g.laps), bool) if rows is None else np.asarray(rows, bool)
    y = g.laps["TyreLife"].to_numpy(float)
    rows = rows & np.isfinite(y)
    by = "race" if g.laps.loc[rows, "Race"].nunique() > 1 else "driver"
    groups = (g.laps["Race"] if by == "race" else g.laps["Race"] + "/" + g.laps["Driver"]).to_numpy()[rows]
    left_out = [f for f in TYRE_AGE_FEATURES if f in g.features]
    base = {"by": by, "folds": int(len(np.unique(groups))), "laps": int(rows.sum()), "ridge": ridge, "left_out": left_out}
    if base["folds"] < 2 or np.ptp(y[rows]) == 0:
        return {**base, "r2": None, "state_adds": None,
                "note": "one race and one driver (or one tyre life): nothing to hold out for the probe"}
    keep = [i for i, f in enumerate(g.features) if f not in TYRE_AGE_FEATURES]
    x, s, yy = g.x[rows], g.state[rows], y[rows]
    sets = dict(zip(PROBES, (s, x, x[:, keep], np.concatenate([x[:, keep], s], 1))))
    r2 = {name: _ridge_r2(X, yy, groups, ridge) for name, X in sets.items()}
    return {**base, "r2": r2, "state_adds": r2["inputs_without_tyre_age_and_state"] - r2["inputs_without_tyre_age"]}


# ---------------------------------------------------------------------------------------
# the command's report and files


def headline(m: dict, keep: str) -> dict:
    """One row of numbers from `gate_measures`: each gate on out-laps minus other laps, P(the
    keep gate is lower on an out-lap), the state's change on out-laps over other laps', and the
    probe's R^2."""
    row = {f"{name}_out_minus_other": v["out_minus_other"] for name, v in m["gates"].items()}
    row[f"{keep}_auc_out_lower"] = m["gates"][keep]["auc_out_lower"]
    sc = m["state_change"]["mean"]
    row["state_change_out_over_other"] = (None if sc["out_lap"] is None or not sc["other"]
                                          else sc["out_lap"] / sc["other"])
    if m.get("candidate_gap"):
        cg = m["candidate_gap"]["mean"]
        row["candidate_gap_out_over_other"] = None if cg["out_lap"] is None or not cg["other"] else cg["out_lap"] / cg["other"]
    if m["probe"] is not None:
        r2 = m["probe"]["r2"] or {}
        row.update({f"r2_{k}": r2.get(k) for k in PROBES})
    return row


def race_gates_report(run, laps, driver: str | list[str] | None = None, *, out: str | Path | None = None,
                      force: bool = False, race_length: int | str = "file") -> tuple[list[RaceGates], dict]:
    """`lapnet race gates`: every member traced and measured; with `out`, the figures and gates.csv.

    Measured on every member (each is a net of its own: a claim about "the" net should hold on
    each: "by_member"); the full measurements ("summary"), the per-lap table and the figures are
    the first member's (the run's own net). With several races, each race alone too ("by_race":
    the first member's, and each member's without the probe), and when some but not all are
    training races of the run, the others pooled alone ("held_out").

    `out` (created if missing) receives gates.csv (the first member's per-lap table) and
    gates_RACE_DRIVER.png: every driver given with `driver`, else each race's first MAX_FIGURES
    of its final classification (as `lapnet race predict` draws). An earlier call's files there
    (its metrics.json's "written" record) are replaced; a file of those names that none wrote is
    refused unless `force` (`check_gates_out`). metrics.json is the CLI's to write.

    Returns:
        (one RaceGates per member, metrics).
    """
    from lapnet.race.outputs import MAX_FIGURES
    from lapnet.race.prediction import classification

    if out is not None:
        check_gates_out(out, force=force)
    d = _load(run, laps, driver, race_length)
    drawn, per_race = [], {}  # (race, driver) of the figures: those given, else each race's top MAX_FIGURES
    chosen = set(d.drivers or ())
    for race, drv in classification(d.laps):
        if drv in chosen or (not chosen and per_race.get(race, 0) < MAX_FIGURES):
            drawn.append((race, drv))
            per_race[race] = per_race.get(race, 0) + 1
    if out is not None:  # the figures' names are known: refused before the nets run
        out = Path(out)
        check_gates_out(out, force=force, files=[figure_name(race, drv) for race, drv in drawn])
    traced = [_trace(d, k) for k in range(1, len(_nets(d.run.model)) + 1)]
    first = traced[0]
    t = first.laps
    races = list(dict.fromkeys(t["Race"]))
    keep = first.keep_gate
    notes = []
    measured = [gate_measures(g) for g in traced]
    metrics: dict[str, Any] = {
        "run": str(d.run.path), "races": races, "drivers": d.drivers, "arch": first.kind,
        "hidden_size": int(first.gates[keep].shape[1]), "members": first.members, "keep_gate": keep,
        "gates": list(first.gates), "max_abs_diff": max(g.max_abs_diff for g in traced),
        "in_sample": d.in_sample, "in_sample_check": d.in_sample_check, "cleaning": d.cleaning,
        "rules": {"out_lap": "the first lap of a new stint (Stint differs from the driver's previous lap's)",
                  "in_lap": "the lap before an out-lap", "first": "each driver's first lap (zero state: no gate acts)",
                  "other": "every other lap", "green": "not Neutralised (no SC / VSC / red flag, TrackStatus 4-7)",
                  "state_change": "mean over units of |h_t - h_{t-1}|" + (" (the cell state c)" if first.kind == "lstm" else ""),
                  **({"candidate_gap": "mean over units of |n_t - h_{t-1}|: h_t - h_{t-1} = (1 - z) * (n_t - h_{t-1})"}
                     if first.kind == "gru" else {}),
                  "probe": f"ridge {PROBE_RIDGE:g} per lap on standardised inputs, out of fold (one fold per race, or per "
                           "driver on one race), R^2 pooled over folds; target: FastF1's TyreLife"},
        "summary": measured[0],
        "by_member": [{"member": g.member, **headline(m, keep)} for g, m in zip(traced, measured)],
    }
    if len(races) > 1:
        metrics["by_race"] = {}
        for race in races:
            rows = (t["Race"] == race).to_numpy()
            m = gate_measures(first, rows)
            metrics["by_race"][race] = {"in_sample": race in d.in_sample, "out_laps": m["laps"]["out_lap"],
                                        **headline(m, keep),
                                        "by_member": [{"member": g.member, **headline(gate_measures(g, rows, probe=False), keep)}
                                                      for g in traced]}
    held = [race for race in races if race not in d.in_sample]
    if d.in_sample and held:
        rows = ~t["in_sample"].to_numpy()
        held_m = [gate_measures(g, rows) for g in traced]
        metrics["held_out"] = {"races": held, "summary": held_m[0],
                               "by_member": [{"member": g.member, **headline(m, keep)} for g, m in zip(traced, held_m)]}
    if d.in_sample:
        notes.append(f"{len(d.in_sample)} of {len(races)} race(s) are training races of the run (in-sample): "
                     + ", ".join(d.in_sample))
    if not first.laps["out_lap"].any():
        notes.append("no out-lap (no driver changed tyres) in these laps: the gates at stops cannot be compared")
    if not chosen and len(t.groupby(["Race", "Driver"])) > len(drawn):
        notes.append(f"figures: each race's first {MAX_FIGURES} of the classification (--driver draws others); "
                     "every driver is in gates.csv and the numbers")
    if out is not None:
        files = _write(first, drawn, out)
        metrics["figures"] = [str(out / f) for f in files if f.endswith(".png")]
        metrics["written"] = {"by": GATES_COMMAND, "files": files}
    metrics["notes"] = notes
    return traced, metrics


PROBE_LABELS = {"state": "state h", "inputs": "net inputs (tyre_life is one)",
                "inputs_without_tyre_age": "inputs without tyre age", "inputs_without_tyre_age_and_state":
                "inputs without tyre age + state h"}


def report_tables(m: dict) -> list[tuple[str, Any]]:
    """The tables `lapnet race gates` prints from `race_gates_report`'s metrics: (title, rows)."""
    s, keep = m["summary"], m["keep_gate"]
    r3 = lambda v: "-" if v is None else round(v, 3)  # noqa: E731
    n = s["laps"]

    def row(name: str, v: dict) -> dict:
        return {"": name, **{k.replace("_", "-"): r3(v["mean"][k]) for k in LAP_KINDS},
                "out - other": r3(v["out_minus_other"]), "green": r3(v["out_minus_other_green"]),
                "P(out<other)": r3(v["auc_out_lower"]), "races lower": f"{v['races_lower']}/{v['races']}",
                f"units -/+{UNIT_SHIFT:g}": "-" if v["units_lower"] is None else f"{v['units_lower']}/{v['units_higher']}"}

    low = "forgets c" if m["arch"] == "lstm" else "overwrites h"
    gap = s.get("candidate_gap")
    tables = [(f"member 1 of {m['members']}: mean over {m['hidden_size']} units on {n['out_lap']} out-laps (a new stint's "
               f"first lap), {n['in_lap']} in-laps, {n['other']} other laps ({n['first']} first laps apart); low {keep} "
               f"{low}; green: both under green flags; |dh|: the state's change" +
               ("; |n-h|: the candidate's distance from the state before (h moves by (1-z)(n-h))" if gap else ""),
               [*(row(name, v) for name, v in s["gates"].items()), row("|dh|", s["state_change"]),
                *([row("|n-h|", gap)] if gap else [])])]
    p = s["probe"]
    if p["r2"] is not None:
        tables.append((f"tyre life from a linear probe: out-of-fold R^2 ({p['folds']} folds by {p['by']}, {p['laps']} laps)",
                       {PROBE_LABELS[k]: r3(v) for k, v in p["r2"].items()}))
    heads = {f"{g}_out_minus_other": f"{g} out-other" for g in m["gates"]}
    heads.update({f"{keep}_auc_out_lower": f"P({keep} out<other)", "state_change_out_over_other": "|dh| out/other",
                  "candidate_gap_out_over_other": "|n-h| out/other",
                  **{f"r2_{k}": f"R2 {k}".replace("inputs_without_tyre_age", "in-tyre").replace("_and_state", "+h")
                     for k in PROBES}})

    def pick(r: dict, drop: tuple[str, ...] = ()) -> dict:
        return {heads.get(k, k): (r3(v) if isinstance(v, float) or v is None else v) for k, v in r.items() if k not in drop}

    same = ("r2_inputs", "r2_inputs_without_tyre_age")  # the inputs are every member's: in the probe table
    tables.append(("each member (a net of its own)", [pick(r, same) for r in m["by_member"]]))
    if "held_out" in m:
        tables.append((f"held-out races only ({', '.join(m['held_out']['races'])}; the probe's folds by "
                       f"{m['held_out']['summary']['probe']['by']})",
                       [pick(r, same) for r in m["held_out"]["by_member"]]))
    if "by_race" in m:
        tables.append(("by race (member 1; * in-sample: a training race of the run; the probes' folds by driver)",
                       [pick({"race": race + (" *" if r["in_sample"] else ""), "out-laps": r["out_laps"],
                              **{k: v for k, v in r.items() if k not in ("in_sample", "out_laps", "by_member")}}, ("r2_inputs",))
                        for race, r in m["by_race"].items()]))
    return tables


def figure_name(race: str, driver: str) -> str:
    from lapnet.run_dir import safe_name

    return f"gates_{safe_name(race)}_{safe_name(driver)}.png"


def check_gates_out(out: str | Path, *, force: bool = False, files: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an `out` where `lapnet race gates` would overwrite a file that no
    earlier `race gates` wrote (unless `force`): metrics.json, gates.csv and the figures `files`.
    An earlier call's files are known by its metrics.json's "written" record and the figures
    by their PNG mark.

    Raises:
        LapnetError: one line naming the files.
    """
    from lapnet.race.outputs import png_software, read_record, recorded_files, refuse_foreign, written_by

    out = Path(out)
    if force or not out.is_dir():
        return
    m = read_record(out)
    ours = written_by(m) == GATES_COMMAND
    recorded = recorded_files(m) if ours else set()
    foreign = []
    for name in ("metrics.json", "gates.csv", *files):
        p = out / name
        if not p.is_file() or name in recorded or (name == "metrics.json" and ours):
            continue
        if p.suffix == ".png" and png_software(p) == GATES_PNG_MARK["Software"]:
            continue
        foreign.append(p)
    refuse_foreign(out, foreign, GATES_COMMAND)


def _write(g: RaceGates, drawn: list[tuple[str, str]], out: Path) -> list[str]:
    """gates.csv and the figures into `out` (an earlier call's recorded files removed first)."""
    import io

    from lapnet.checkpoint import atomic_write_bytes
    from lapnet.race.outputs import read_record, recorded_files, written_by

    out.mkdir(parents=True, exist_ok=True)
    m = read_record(out)
    earlier = recorded_files(m) if written_by(m) == GATES_COMMAND else set()
    for name in sorted(earlier):  # an earlier --driver's figures would otherwise stay beside these
        p = out / name
        if p.suffix == ".png" and p.is_file():
            p.unlink()
    atomic_write_bytes(out / "gates.csv", g.laps.to_csv(index=False).encode())
    files = ["gates.csv"]
    for race, drv in drawn:
        rows = (g.laps["Race"] == race) & (g.laps["Driver"] == drv)
        if not rows.any():
            continue
        fig = plot_gates(g.laps[rows])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata=GATES_PNG_MARK)
        atomic_write_bytes(out / figure_name(race, drv), buf.getvalue())
        files.append(figure_name(race, drv))
    return [*files, "metrics.json"]


def plot_gates(table: pd.DataFrame, axes=None):
    """One driver's gates per lap (mean over units) above the state's change, the stints
    coloured by compound, the out-laps (a new stint's first lap) dashed.

    Args:
        table: one driver's rows of `RaceGates.laps` (one race).
        axes: two axes (the gates, the state change) to draw on; None: a new figure.
    """
    from lapnet.plots import new_figure
    from lapnet.race.plots import COMPOUND_COLOURS

    if axes is None:
        fig, axes = new_figure(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(3, 1.3), layout="constrained")
    ax, dax = axes
    fig = ax.figure
    g = table.sort_values("LapNumber")
    lap = g["LapNumber"].to_numpy(float)
    what = {"z": "update gate z (low: overwrite h)", "f": "forget gate f (low: forget c)", "r": "reset gate r",
            "i": "input gate i", "o": "output gate o"}
    colours = {"z": "black", "f": "black", "r": "tab:blue", "i": "tab:blue", "o": "tab:green"}
    for a in (ax, dax):
        for (_, comp), s in g.groupby([(g["Stint"] != g["Stint"].shift()).cumsum(), "Compound"], sort=False):
            a.axvspan(s["LapNumber"].min() - 0.5, s["LapNumber"].max() + 0.5, color=COMPOUND_COLOURS.get(comp, "C7"),
                      alpha=0.15, lw=0)
        for x in g.loc[g["out_lap"], "LapNumber"]:
            a.axvline(x, color="tab:red", ls="--", lw=1)
    for col in [c for c in g.columns if c.endswith("_mean")]:
        name = col[: -len("_mean")]
        ax.plot(lap, g[col], color=colours.get(name, "C0"), lw=1.4, marker=".", ms=4, label=f"{what.get(name, name)}, mean of units")
    ax.plot([], [], color="tab:red", ls="--", lw=1, label="out-lap (a new stint's first lap)")
    for comp in dict.fromkeys(g["Compound"]):
        ax.fill_between([], [], color=COMPOUND_COLOURS.get(comp, "C7"), alpha=0.3, label=comp)
    ax.set_ylim(0, 1)
    ax.set_ylabel("gate value")
    ax.set_title(f"{g['Race'].iloc[0]} {g['Driver'].iloc[0]}: the forecaster's gates per lap (first member)")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    dax.plot(lap, g["state_change"], color="tab:purple", lw=1.2, marker=".", ms=4)
    dax.set_ylim(bottom=0)
    dax.set_ylabel("mean |h_t - h_t-1|" if "z_mean" in g else "mean |c_t - c_t-1|", fontsize=8)
    dax.set_xlabel("lap")
    return fig
