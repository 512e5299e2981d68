"""Race models: one recurrent net over each driver's laps with three heads.

    forecast  the next K laps of the stint, as a residual on the stint's last Scored lap
              (persistence), in % of the race's reference lap: location "mean" (B, T, K) and log scale "log_sigma"
              (B, T, K) for intervals. The head (`RaceModelConfig.head`) says what the scale is:
              "gaussian" sigma (90% interval: mean +- 1.645 sigma) or "laplace" b (90% interval:
              mean +- b ln 10, see `INTERVAL90`); the location is the median either way
    pit       logit that the driver pits within the next 3 laps (B, T)
    phase     push / conserve / pit_window logits (B, T, 3), learned where labels exist
              (the simulator's truth)

Unidirectional, the net is causal: the output at lap t reads laps <= t only, so live mode
advances each driver's state one lap at a time. Bidirectional, it is the post-race tagger
(it reads the whole race, so it must never be used live).

The heads read the recurrent output concatenated with the lap's own features (a skip
connection): the explicit per-lap features (the stint's last Scored lap, its slope, ...) then need
not survive the recurrence.

Shapes: B drivers, T laps, D features, H hidden size, K horizons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.models.recurrent import make_recurrent, run_recurrent
from lapnet.race.features import FRESH_EXTRA, HORIZONS, LAPS_SCALE, PCT_SCALE, PHASES

HORIZON_WEIGHT_POWER = 2.0  # by default the forecast loss weighs horizon k by 1 / k**2 (race_loss horizon_power; race train --horizon-power)

# half-width of the central 90% interval in units of the head's scale. Gaussian: the 0.95
# quantile, 1.645 sigma. Laplace(mu, b): for y > mu the CDF is 1 - exp(-(y - mu) / b) / 2, so the
# 0.95 quantile solves exp(-d / b) / 2 = 0.05, d = b ln 10 (about 2.303 b).
INTERVAL90 = {"gaussian": 1.6449, "laplace": math.log(10.0)}
HEADS = tuple(INTERVAL90)


@dataclass
class RaceModelConfig:
    """Architecture of a RaceNet (saved in the run's config.json)."""

    input_size: int
    hidden_size: int = 64
    num_layers: int = 1
    arch: str = "gru"
    horizons: int = HORIZONS
    bidirectional: bool = False
    dropout: float = 0.1
    linear_skip: bool = False  # the forecast also gets a linear map of the lap's features (wide and deep)
    head: str = "laplace"  # the forecast's distribution: "laplace" (the product's, RaceTrainConfig.head) or "gaussian"

    def __post_init__(self):
        if self.head not in HEADS:
            raise LapnetError(f"head {self.head!r}: expected one of {', '.join(HEADS)}")

    def to_dict(self) -> dict:
        return asdict(self)


class RaceNet(nn.Module):
    """Recurrent forecaster, pit caller and phase tagger (see the module docstring)."""

    def __init__(self, cfg: RaceModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rnn = make_recurrent(cfg.arch, cfg.input_size, cfg.hidden_size, cfg.num_layers, bidirectional=cfg.bidirectional)
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1) + cfg.input_size
        self.trunk = nn.Sequential(nn.Linear(width, cfg.hidden_size), nn.Tanh(), nn.Dropout(cfg.dropout))
        self.mean = nn.Linear(cfg.hidden_size, cfg.horizons)
        self.log_sigma = nn.Linear(cfg.hidden_size, cfg.horizons)
        self.pit = nn.Linear(cfg.hidden_size, 1)
        self.phase = nn.Linear(cfg.hidden_size, len(PHASES))
        nn.init.zeros_(self.mean.weight)  # start at persistence (the stint's last Scored lap): the residual is zero
        nn.init.zeros_(self.mean.bias)
        nn.init.constant_(self.log_sigma.bias, -0.5)  # sigma ~ 0.6 % of a lap, about the real spread
        self.wide = nn.Linear(cfg.input_size, cfg.horizons, bias=False) if cfg.linear_skip else None
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)  # still starts at persistence

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        """Run the net over padded per-driver lap sequences.

        Args:
            x: (B, T, D) lap features.
            lengths: (B,) laps per driver, or None when all have T.
            state: the recurrent state to start from (live mode), or None for zeros.

        Returns:
            ({"mean": (B, T, K), "log_sigma": (B, T, K), "pit": (B, T), "phase": (B, T, 3)}, state)
        """
        x = x[..., : self.cfg.input_size]  # (B, T, D) the lap vector's first columns (NET_FEATURES; the rest feed the pit call)
        h, state = run_recurrent(self.rnn, x, lengths, state)  # (B, T, dirs*H)
        z = self.trunk(torch.cat([h, x], dim=-1))  # (B, T, H)
        out = {
            "mean": self.mean(z) + (self.wide(x) if self.wide is not None else 0.0),  # (B, T, K)
            "log_sigma": self.log_sigma(z).clamp(-6.0, 4.0),  # (B, T, K) bounded: a NaN-free NLL
            "pit": self.pit(z).squeeze(-1),  # (B, T)
            "phase": self.phase(z),  # (B, T, 3)
        }
        return out, state


def race_loss(out: dict, batch: dict, *, head: str, pit_weight: float = 1.0, phase_weight: float = 1.0, forecast: bool = True,
              mean_loss: str = "l1", scale_weight: float = 0.1,
              horizon_power: float = HORIZON_WEIGHT_POWER, fresh_weight: float = 0.0) -> torch.Tensor:
    """The training loss, each part averaged over its own mask:

    - the forecast location: masked L1 (the median is what MAE rewards; `mean_loss="l1"`) or,
      with `mean_loss="nll"` and the Laplace head, the Laplace NLL log b + |y - mu| / b with mu
      and b trained jointly (an L1 whose laps are weighted by 1 / b); horizon k weighted by
      1/k**horizon_power (1/k^2 by default; `race train --horizon-power`);
    - the scale: the head's NLL around the detached location (intervals do not pull the
      forecast), Gaussian log sigma + z^2 / 2 or Laplace log b + |y - mu| / b, weight
      `scale_weight` (it still shapes the shared trunk);
    - BCE for the pit call and cross-entropy for the phase.

    Args:
        out: RaceNet outputs.
        batch: tensors target (B, T, K), target_mask (B, T, K), has_base (B, T), pit (B, T),
            pit_mask (B, T), phase (B, T), phase_mask (B, T). has_base (the origin's stint has a
            Scored lap at or before it) is required whenever the forecast is trained (`forecast`).
        head: "laplace" or "gaussian": the model's `cfg.head` (required: a loss for the other head would
            train the scale wrongly without any error).
        mean_loss: "l1" or "nll" (the joint Laplace NLL; only with the Laplace head).
        horizon_power: horizon k weighs 1 / k**horizon_power (0: every horizon alike).
        fresh_weight: the weight of targets whose origin has no Scored lap in its stint yet
            (has_base False: an out-lap, the start, a restart; targets count from the race's
            reference lap there, and a run's FreshStart forecasts them) in the location's loss; the scale's NLL (mean_loss
            "l1") counts them in full once the weight is above 0. 0, the default, leaves them out
            of both: trained on at weight 1 they cost the Scored laps' next-lap MAE 1.5 points
            against persistence (-9.3% against -10.8%, benchmarks/race_real.py --fresh-weight 1,
            2026-11-27). `RaceTrainConfig.fresh_weight` sets it.

    Raises:
        LapnetError: the forecast is trained and `batch` has no has_base (without it the
            origins `fresh_weight` is about cannot be told apart: they would weigh 1, silently).
    """
    total = out["mean"].sum() * 0.0  # zero, but on the graph: a batch with nothing to learn gives zero gradients
    if forecast:
        if "has_base" not in batch:
            raise LapnetError("race_loss: the batch has no 'has_base' (B, T) bool, which fresh_weight needs to tell the "
                              "origins whose stint has a Scored lap from those without (training._tensors makes it)")
        based = batch["has_base"][:, :, None]  # (B, T, 1)
        m = batch["target_mask"] if fresh_weight else batch["target_mask"] & based  # (B, T, K) see `fresh_weight`
        if m.any():
            y, mu, ls = batch["target"][m], out["mean"][m], out["log_sigma"][m]  # (n,) each
            # horizon k weighs 1/k**horizon_power (default 2: 1/k^2; `race train --horizon-power`): the next lap is
            # what a forecast is judged on first, and the far horizons' larger errors would otherwise dominate the
            # shared trunk (1/k and 1/sqrt(k) were tried: less good at h1)
            K = m.shape[-1]
            w = 1.0 / torch.arange(1, K + 1, dtype=y.dtype, device=y.device) ** horizon_power  # (K,)
            w = (w / w.mean()).expand_as(m)  # (B, T, K)
            if fresh_weight:
                w = torch.where(based, w, w * fresh_weight)
            w = w[m]  # (n,) the weight of each masked target
            if mean_loss == "nll" and head == "laplace":
                total = total + (w * (ls + (y - mu).abs() * torch.exp(-ls))).sum() / w.sum()
            else:
                total = total + (w * (y - mu).abs()).sum() / w.sum()
                r = (y - mu.detach()) * torch.exp(-ls)  # (n,) the residual in units of the scale
                nll = ls + r.abs() if head == "laplace" else ls + 0.5 * r**2
                total = total + scale_weight * nll.mean()
        pm = batch["pit_mask"]
        if pit_weight and pm.any():
            total = total + pit_weight * nn.functional.binary_cross_entropy_with_logits(out["pit"][pm], batch["pit"][pm])
    qm = batch["phase_mask"]
    if phase_weight and qm.any():
        total = total + phase_weight * nn.functional.cross_entropy(out["phase"][qm], batch["phase"][qm])
    return total


class RaceEnsemble(nn.Module):
    """Several RaceNets trained with different seeds (and validation races), averaged.

    The members' forecasts are averaged (15 races are few: one net's error depends a lot on
    its seed and on the race it early-stopped on); the scale matches the mixture's spread (the
    mean of the members' variances plus the variance of their means; a Laplace's variance is
    2 b^2, so b = sqrt(variance / 2)); the pit and phase
    probabilities are averaged and returned as logits, so every caller of a RaceNet works
    unchanged. The state is a tuple of the members' states (live mode carries it as one).
    """

    def __init__(self, cfg: RaceModelConfig, members: int):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(RaceNet(cfg) for _ in range(members))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        """Same inputs and outputs as `RaceNet.forward`; `state` is a tuple with one state per member."""
        states = state if state is not None else (None,) * len(self.members)
        outs, new = [], []
        for net, st in zip(self.members, states):
            o, s = net(x, lengths, st)
            outs.append(o)
            new.append(s)
        mean = torch.stack([o["mean"] for o in outs])  # (M, B, T, K)
        var = torch.stack([torch.exp(2 * o["log_sigma"]) for o in outs]).mean(0)  # (B, T, K) mean of sigma^2 or b^2
        per_scale2 = 2.0 if self.cfg.head == "laplace" else 1.0  # variance per squared scale
        var = per_scale2 * var + mean.var(0, unbiased=False)  # (B, T, K) the mixture's variance
        pit = torch.stack([torch.sigmoid(o["pit"]) for o in outs]).mean(0).clamp(1e-6, 1 - 1e-6)  # (B, T)
        phase = torch.stack([torch.softmax(o["phase"], -1) for o in outs]).mean(0)  # (B, T, 3)
        out = {
            "mean": mean.mean(0),  # (B, T, K)
            "log_sigma": (0.5 * torch.log(var / per_scale2)).clamp(-6.0, 4.0),  # back to the head's scale
            "pit": torch.log(pit) - torch.log1p(-pit),  # the logit of the averaged probability
            "phase": torch.log(phase.clamp_min(1e-9)),  # log-probabilities: softmax/argmax give back the average
        }
        return out, tuple(new)


# ---------------------------------------------------------------------------------------
# the bucket one-hots of the per-lap models (the pit call, lapnet.race.pit.PitModel; the expected lap below)


def one_hot_buckets(v: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """One-hot bucket of `v` (...,) among len(edges) + 1 intervals -> (..., len(edges) + 1)."""
    return (torch.bucketize(v.contiguous(), edges)[..., None] == torch.arange(len(edges) + 1, device=v.device)).to(v.dtype)


TYRE_LAPS = [3.0 * i for i in range(1, 16)]  # tyre life in 3-lap buckets up to 45


class WithPitCaller(nn.Module):
    """A forecaster (RaceNet or RaceEnsemble) whose pit output comes from a per-lap pit model
    (`lapnet.race.pit.PitModel`), and optionally with an `ExpectedGap` that adds the expected
    (mean) lap time "expected" (B, T, K).

    Same inputs, outputs and state as the forecaster, so every caller (predict, eval, live)
    works unchanged.
    """

    def __init__(self, forecaster: nn.Module, pit: nn.Module, expected: "ExpectedGap | None" = None,
                 fresh: "FreshStart | None" = None):
        super().__init__()
        self.cfg = forecaster.cfg
        self.forecaster = forecaster
        self.pit = pit
        self.expected = expected
        self.fresh = fresh

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        """See `RaceNet.forward`; "pit" (B, T) is the pit model's logit; with an ExpectedGap,
        "expected" (B, T, K) is the mean lap time, in the same units as "mean" (the median);
        with a FreshStart, "mean" and "log_sigma" come from it on laps whose stint has no
        Scored lap yet (both then count from the reference lap, as the nets' do there)."""
        out, state = self.forecaster(x, lengths, state)
        out = {**out, "pit": self.pit(x)}
        if self.fresh is not None:
            new = self.fresh.fresh(x)[..., None]  # (B, T, 1)
            z90 = INTERVAL90[self.cfg.head]
            log_b = torch.log(self.fresh.interval(x) / z90)
            log_b = torch.where(self.fresh.possible(x)[..., None], log_b, torch.full_like(log_b, math.nan))
            out["mean"] = torch.where(new, self.fresh(x).to(out["mean"].dtype), out["mean"])
            out["log_sigma"] = torch.where(new, log_b.to(out["log_sigma"].dtype), out["log_sigma"])
        if self.expected is not None:  # fitted where the stint has a Scored lap: a FreshStart's laps keep its median
            gap = self.expected(x)
            out["expected"] = out["mean"] + (gap if self.fresh is None else torch.where(new, torch.zeros_like(gap), gap))
        return out, state


# ---------------------------------------------------------------------------------------
# the expected lap: the mean above the forecast's median


class ExpectedGap(nn.Module):
    """The mean minus the median of lap t+k, from the lap's features: a ridge regression fitted
    after the forecaster, on its residuals (so the forecast itself is untouched).

    The forecast is trained by L1, so it is the median lap: what MAE rewards. A stint's time is a
    sum of laps, and sums add means, not medians: where the laps ahead have a right tail (a
    degradation cliff, traffic) the mean is slower than the median. Strategy needs the mean, and
    so does a degradation slope compared with a simulator's average wear.

    Inputs: the lap features plus tyre life in 3-lap buckets per dry compound (where a cliff
    sits) and a constant; one weight column per horizon.

    Args:
        features: the feature names of the lap vectors it reads (`lapnet.race.features.FEATURES`).
        horizons: K.
    """

    def __init__(self, features: tuple[str, ...] | list[str], horizons: int = HORIZONS):
        super().__init__()
        self.ix = {n: i for i, n in enumerate(features)}
        # every lap feature but the FreshStart's (FRESH_EXTRA): the gap is fitted where the stint has a Scored lap
        keep = [i for i, n in enumerate(features) if n not in FRESH_EXTRA]
        width = len(keep) + 3 * (len(TYRE_LAPS) + 1) + 1
        self.register_buffer("keep", torch.tensor(keep), persistent=False)
        self.register_buffer("tyre_laps", torch.tensor(TYRE_LAPS), persistent=False)
        self.register_buffer("weight", torch.zeros(width, horizons))  # (W, K) fitted by `fit`

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) lap features -> (..., W)."""
        dry = x[..., [self.ix["compound_soft"], self.ix["compound_medium"], self.ix["compound_hard"]]]  # (..., 3)
        tyre = one_hot_buckets(x[..., self.ix["tyre_life"]] * LAPS_SCALE, self.tyre_laps.to(x.dtype))  # (..., 16)
        per_compound = (dry[..., :, None] * tyre[..., None, :]).flatten(-2)  # (..., 48)
        return torch.cat([x[..., self.keep], per_compound, torch.ones_like(x[..., :1])], -1)  # (..., W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K) mean minus median, in the forecast's units (% of the reference lap)."""
        return self.expand(x) @ self.weight.to(x.dtype)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, resid: torch.Tensor, mask: torch.Tensor, ridge: float) -> None:
        """Least squares with an L2 penalty, per horizon, in float64.

        Args:
            x: (n, D) lap features; resid: (n, K) target minus the forecast's median;
            mask: (n, K) bool, the targets that exist; ridge: the L2 strength per lap.
        """
        z = self.expand(x.double())  # (n, W)
        w = torch.zeros_like(self.weight, dtype=torch.float64)
        eye = torch.eye(z.shape[1], dtype=torch.float64)
        eye[-1, -1] = 0.0  # the constant is not shrunk
        for k in range(resid.shape[1]):
            m = mask[:, k]
            zk, rk = z[m], resid[m, k].double()  # (n_k, W), (n_k,)
            if len(rk) == 0:
                continue
            w[:, k] = torch.linalg.solve(zk.T @ zk + ridge * len(rk) * eye, zk.T @ rk)
        self.weight.copy_(w.to(self.weight.dtype))


# ---------------------------------------------------------------------------------------
# the forecast from a lap whose stint has no Scored lap yet


class FreshStart(nn.Module):
    """The next K laps from a lap whose stint has no Scored lap yet (an out-lap, the start, a
    restart), where the nets have no last lap to start from.

    The nets forecast a residual on the stint's last Scored lap and are not trained where there
    is none (`race_loss`'s fresh_weight): there the forecast started from the race's reference
    lap, the first laps' pace on full tanks, seconds slower than a car on new tyres late in the
    race, and the safety car's pace in a race started behind it. This forecast starts from an
    anchor instead, the field's last green pace (`field_pace_any`: the median of the other
    drivers' latest Scored laps, however old, so a restart starts from the pace before the
    safety car), and a linear median regression (L1, as the nets' forecast) moves it by how this
    driver ran against the field, the tyres, the start or restart (`INPUTS`). As the nets', it
    forecasts green-flag laps: lap t+k when it is run at racing pace.

    Two groups get their own weights, bounds and intervals (`GROUPS`): laps where some other car
    has had a Scored lap (the anchor is the field's pace), and laps where none has but a lap
    has been run under green flags: the end of lap 1 (the anchor is the reference lap, then the
    lap-1 pace, and a learnt ratio moves it, though the real races' first green laps run at
    0.88 to 0.95 of it, by circuit) and the first green laps after a start behind the safety car. Where no car has run a single green lap
    yet (a race started, or restarted after a red flag, behind the safety car) no lap so far
    shows the race's pace: the reference lap is the safety car's, 1.3 to 1.9 times the green
    pace on the 15 real races of 2023, and there is no forecast (NaN; `possible`); nor on wet
    tyres (the laps it learns from are dry, Scored laps). Inputs are read as
    the offsets from those anchors they are, so every weight but the group's constant is
    shrunk (ridge), and the move from the anchor is clamped to the range of the training laps'
    (1st to 99th percentile per horizon): a combination of flags the training laps never had
    together cannot push a forecast beyond what was ever seen.

    Fitted after the nets on every race given to training (`fit`), its ridge strength chosen by
    leave-races-out folds inside them, and kept only if those folds score it better than the
    nets on the same laps (`side_fits.fit_fresh_start`). The 90% interval's half-width per
    horizon and group is the folds' 90th percentile of absolute error.
    """

    INPUTS = ("field_pace", "has_field_pace", "field_tyre", "field_pace_age", "own_pace", "has_own_pace", "out_lap",
              "opening_lap_1", "safety_car", "vsc", "red", "restart_1", "since_neutral", "compound_soft", "compound_medium",
              "compound_hard", "compound_intermediate", "compound_wet", "tyre_life", "fresh_tyre", "laps_in_stint",
              "lap_frac", "stint")
    GROUPS = ("field_has_scored", "no_scored_lap_yet")
    BOUNDS = (0.01, 0.99)  # the quantiles of the training laps' move from the anchor that clamp a forecast's

    def __init__(self, features: tuple[str, ...] | list[str], horizons: int = HORIZONS):
        super().__init__()
        names = list(features)
        missing = [n for n in (*self.INPUTS, "has_base", "field_pace_any", "has_field_pace_any", "green_seen")
                   if n not in names]
        if missing:
            raise LapnetError(f"FreshStart: the lap vectors lack {', '.join(missing)}")
        self.register_buffer("cols", torch.tensor([names.index(n) for n in self.INPUTS]), persistent=False)
        self.register_buffer("based", torch.tensor(names.index("has_base")), persistent=False)
        self.register_buffer("pace", torch.tensor(names.index("field_pace_any")), persistent=False)
        self.register_buffer("informed", torch.tensor(names.index("has_field_pace_any")), persistent=False)
        self.register_buffer("green", torch.tensor(names.index("green_seen")), persistent=False)
        self.register_buffer("wet", torch.tensor([names.index(n) for n in ("compound_intermediate", "compound_wet")]),
                             persistent=False)
        W = len(self.INPUTS) + 1
        G = len(self.GROUPS)
        self.register_buffer("weight", torch.zeros(G, W, horizons))  # (group, W, K), the constant last
        self.register_buffer("bounds", torch.zeros(G, 2, horizons))  # (group, lo | hi, K) of the move from the anchor
        self.register_buffer("half90", torch.ones(G, horizons))  # (group, K) % of ref

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) lap features -> (..., W) the inputs and a constant."""
        z = x[..., self.cols]
        return torch.cat([z, torch.ones_like(z[..., :1])], -1)

    def fresh(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...,) bool: the stint has no Scored lap at this lap (where this forecast applies)."""
        return x[..., self.based] == 0

    def blind(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...,) bool: no other car has had a Scored lap yet (the anchor is the reference lap)."""
        return x[..., self.informed] == 0

    def group(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...,) int64 index into GROUPS: another car has had a Scored lap (0) or not
        (1: the end of lap 1, where the reference lap is the lap-1 pace, and the first green laps
        after a start behind the safety car). Lap 1 apart in a third group was tried: the inner
        folds' MAE rose (0.981% of the reference lap against 0.973%) and no coverage improved."""
        return self.blind(x).long()

    def possible(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...,) bool: some lap so far shows the race's pace (a Scored lap of another
        car, or any car's timed dry lap under green flags), and the car is on dry tyres (the laps
        it learnt from are); where not, the forecast is NaN."""
        wet = (x[..., self.wet] > 0).any(-1)
        return (~self.blind(x) | (x[..., self.green] > 0)) & ~wet

    def anchor(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...,) where the forecast starts, % of ref from the reference lap: the
        field's last green pace, or the reference lap itself (0) while there is none."""
        return torch.where(self.blind(x), torch.zeros_like(x[..., 0]), x[..., self.pace] * PCT_SCALE)  # the feature is / PCT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K) lap t+k minus the race's reference lap, in % of it."""
        z = self.expand(x)
        g = self.group(x)  # (...,)
        w, b = self.weight.to(x.dtype)[g], self.bounds.to(x.dtype)[g]  # (..., W, K), (..., 2, K)
        move = (z[..., None, :] @ w)[..., 0, :]  # (..., K)
        move = torch.minimum(torch.maximum(move, b[..., 0, :]), b[..., 1, :])
        out = self.anchor(x)[..., None] + move
        return torch.where(self.possible(x)[..., None], out, torch.full_like(out, math.nan))

    def interval(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K) the half-width of the 90% interval, % of ref."""
        return self.half90.to(x.dtype)[self.group(x)]

    @staticmethod
    def solve(z: torch.Tensor, y: torch.Tensor, ridge: float, iters: int = 40, eps: float = 0.05) -> torch.Tensor:
        """L1 regression with an L2 penalty (the constant, z's last column, is not shrunk), by
        iteratively reweighted least squares: each round weighs a lap by 1 / max(|residual|, eps).

        Args: z (n, W) float64, y (n,) float64, ridge: the L2 strength per lap. Returns (W,).
        """
        pen = torch.eye(z.shape[1], dtype=z.dtype) * ridge * len(y)
        pen[-1, -1] = 0.0
        w = torch.ones_like(y)
        beta = torch.zeros(z.shape[1], dtype=z.dtype)
        for _ in range(iters):
            zw = z * w[:, None]
            beta = torch.linalg.solve(zw.T @ z + pen + 1e-9 * torch.eye(z.shape[1], dtype=z.dtype), zw.T @ y)
            w = 1.0 / (y - z @ beta).abs().clamp_min(eps)
        return beta

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, ridge: float) -> None:
        """Fit every group and horizon: x (n, D) lap features of fresh origins, y (n, K) their
        targets (% of ref from the reference lap), mask (n, K) bool the targets that exist (laps
        without a `possible` forecast are left out). A group and horizon with fewer targets than
        inputs keeps only a constant (their median move), or none at all (the anchor) without
        any target."""
        x = x.double()
        z, move, g = self.expand(x), y.double() - self.anchor(x)[:, None], self.group(x)
        mask = mask & self.possible(x)[:, None]
        w = torch.zeros_like(self.weight, dtype=torch.float64)
        bounds = torch.zeros_like(self.bounds, dtype=torch.float64)
        for gi in range(len(self.GROUPS)):
            rows = g == gi
            for k in range(y.shape[1]):
                m = mask[:, k] & rows
                if not m.any():
                    continue
                mk = move[m, k]
                if m.sum() > z.shape[1]:
                    w[gi, :, k] = self.solve(z[m], mk, ridge)
                else:
                    w[gi, -1, k] = mk.median()
                bounds[gi, :, k] = torch.quantile(mk, torch.tensor(self.BOUNDS, dtype=mk.dtype))
        self.weight.copy_(w.to(self.weight.dtype))
        self.bounds.copy_(bounds.to(self.bounds.dtype))
