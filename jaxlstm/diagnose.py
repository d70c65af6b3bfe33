"""Learning-curve diagnosis: a verdict per seed and a summary per config.

Inputs are stacked histories, ``train`` and ``val`` of shape ``[seeds, epochs]``
(``loss`` and ``val_loss`` of ``Ensemble.history``). A seed that stopped early
has NaN after its stop: only the finite prefix common to both curves is used.
Epochs are 0-based indices into these arrays. numpy and pandas only (no jax).

Measures (per seed, on the finite prefix of ``n`` epochs)
  * Levels (minimum, end, level at an epoch) come from a centred moving mean
    over ``smooth_fraction * n`` epochs (windows cut at the edges), so
    minibatch noise does not pick the minimum; ``first`` is the raw first value.
  * ``best_epoch``: epoch of the smoothed validation minimum.
  * The *tail* is the last ``tail_fraction`` of the epochs. A least-squares line
    through each raw curve over the tail gives its change across the tail,
    reported twice:
      - ``*_end_slope``: that change relative to the curve's mean level in the
        tail (``-0.1`` = fell 10 % over the tail). Scale-free; gives the trend.
      - ``val_end_gain``: minus that change relative to the range of the smoothed
        validation curve (share of the whole improvement still being made at the
        end; what a linear-axis plot shows).
  * ``train_drop = (first - min) / |first|``: best relative decrease of the
    training loss from its first value, and ``train_left`` /
    ``val_left = end / first``: fraction of the first loss still left.
  * ``val_rise = (end - min) / |min|``: validation rise since its minimum,
    relative to the minimum. ``after_best = (n - 1 - best_epoch) / (n - 1)``.
  * ``train_fall = (train[best_epoch] - train[end]) / |train[best_epoch]|``:
    how much the training loss fell after the validation minimum.
  * ``gap = val_end - train_end`` (smoothed, loss units; reported, not a rule).
  * ``oscillation``: RMS of (raw - smoothed) over the interior epochs, relative to
    the larger of the smoothed curve's range and its mean level; the larger of
    train and validation. ``train_noise``: the same RMS for the training loss
    relative to its first value (the noise of ``train_drop``).

Verdict rules (first that applies wins; thresholds are ``Thresholds`` fields)
  1. ``diverged``: marked diverged by training (``diverged=``), or a curve holds
     +-Inf, a NaN followed by a finite value, or no finite value at all. A plain
     NaN tail is read as early stopping: pass ``diverged=`` to tell them apart.
  2. ``underfit``: fewer than ``min_epochs`` finite epochs (too few to judge).
  3. ``unstable``: ``oscillation > max_oscillation``.
  4. ``not_learning``: ``train_drop < max(min_decrease, noise_multiple *
     train_noise)`` (no decrease, or none that stands out of the noise).
  5. ``overfit``: the validation minimum is well before the end
     (``after_best >= overfit_after_best``), validation rose since
     (``val_rise >= overfit_rise``) and training kept falling
     (``train_fall >= overfit_train_fall``).
  6. ``underfit``: validation still improving at the end
     (``val_end_gain >= underfit_end_gain``).
  7. ``underfit``: both losses high and flat (``train_left >= high_loss`` and
     ``val_left >= high_loss``; flat because rule 6 did not fire).
  8. ``good_fit``.

Trend (the methodology's six train/validation combinations). Each curve is
``falling`` / ``flat`` / ``rising`` as its ``*_end_slope`` is below
``-flat_slope`` / within / above ``+flat_slope``; the pair names the trend:

  =========  ==========  ======================  =======================
  train      validation  trend                   meaning
  =========  ==========  ======================  =======================
  falling    falling     ``still_learning``      more epochs
  falling    rising      ``overfitting``         stop earlier / regularise
  falling    flat        ``underfitting``        more capacity
  flat       flat        ``bottleneck``          more capacity / architecture
  rising     rising      ``lr_or_architecture``  lower the learning rate
  rising     falling     ``data_problem``        check the data
  =========  ==========  ======================  =======================

The three other pairs are ``mixed``. The trend is local (the tail, relative to
the current level); the verdict weighs the whole curve, so the two can differ:
a good fit's losses may still fall by a large factor while being tiny next to
where they started.

Per config: the share of seeds per verdict, the majority verdict (ties go to the
verdict listed first in ``VERDICTS``, the most severe), a ``high_variance`` flag
(coefficient of variation of the final scores above ``high_cv``, or a majority
share below ``min_majority_share``) and one line of advice in the methodology's
terms.

Default thresholds were tuned on the five-point linear problem of Brownlee's
"diagnose" tutorial (LSTM(10), Adam 1e-3, MSE, full batch), simulated with a
Keras-initialised LSTM outside this package, 30 seeds: 30/30 ``underfit`` at 100
epochs, 30/30 ``good_fit`` at 800, 30/30 ``overfit`` at 1200-2000 (19/30 at
3000, where validation falls again); the verdict flips around 600 (underfit to
good fit) and 1000 (good fit to overfit). The same with 5 % multiplicative noise
per epoch. Its validation loss has a sharp minimum near epoch 750 (its error
changes sign), which is why the "still improving" rule reads the curve on its
linear range rather than in log space.
"""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Most severe first: the order breaks majority ties and orders share columns.
VERDICTS = ("diverged", "not_learning", "unstable", "overfit", "underfit", "good_fit")

# (train direction, validation direction) -> trend name.
TRENDS = {
    ("falling", "falling"): "still_learning",
    ("falling", "rising"): "overfitting",
    ("falling", "flat"): "underfitting",
    ("flat", "flat"): "bottleneck",
    ("rising", "rising"): "lr_or_architecture",
    ("rising", "falling"): "data_problem",
}
MIXED_TREND = "mixed"

TREND_MEANINGS = {
    "still_learning": "both falling: still learning, train for more epochs",
    "overfitting": "train falling, validation rising: overfitting, stop earlier or regularise",
    "underfitting": "train falling, validation flat: underfitting, add capacity",
    "bottleneck": "both flat: bottleneck, add capacity or change the architecture",
    "lr_or_architecture": ("both rising: architecture or learning-rate problem, "
                           "lower the learning rate"),
    "data_problem": "train rising, validation falling: check the data (split, leakage, scaling)",
    "mixed": ("train flat while validation moves, or train rising while validation is flat: "
              "none of the six"),
}

ADVICE = {
    "diverged": "Lower the learning rate (or clip gradients) and check the data for NaN/Inf.",
    "not_learning": ("Check the data (inputs, targets, scaling), then the learning rate: "
                     "the training loss does not decrease."),
    "unstable": "Lower the learning rate (or use a larger batch): the losses oscillate.",
    "overfit": ("Stop earlier (early stopping at the validation minimum) or regularise "
                "(dropout, weight decay, less capacity)."),
    "underfit_improving": "Train for more epochs: the validation loss is still falling at the end.",
    "underfit_high": "Add capacity (more cells or layers): both losses stay high and flat.",
    "underfit_short": "Train for more epochs: too few epochs ran to judge.",
    "good_fit": "Good fit: keep the configuration and compare configs on their scores.",
}

# Short reasons, one per rule; the per-config advice picks from them.
_REASONS = {
    "diverged_flag": "marked diverged by training",
    "diverged_inf": "the loss became infinite",
    "diverged_hole": "non-finite values inside the curve",
    "diverged_empty": "no finite values",
    "short": "too few finite epochs to judge",
    "not_learning": "the training loss did not decrease",
    "unstable": "large oscillation",
    "overfit": "validation minimum well before the end, validation rising while training falls",
    "improving": "validation still improving at the end",
    "high": "both losses high and flat",
    "good_fit": "both losses low and flat",
}
_ADVICE_KEY = {
    "diverged_flag": "diverged", "diverged_inf": "diverged", "diverged_hole": "diverged",
    "diverged_empty": "diverged", "short": "underfit_short", "not_learning": "not_learning",
    "unstable": "unstable", "overfit": "overfit", "improving": "underfit_improving",
    "high": "underfit_high", "good_fit": "good_fit",
}
_REASON_KEY = {text: key for key, text in _REASONS.items()}

_EVIDENCE = (
    "n_epochs", "best_epoch", "best_val", "final_train", "final_val", "train_end_slope",
    "val_end_slope", "val_end_gain", "train_drop", "train_left", "val_left", "val_rise",
    "after_best", "train_fall", "gap", "oscillation", "train_noise",
)
_TINY = 1e-12


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """Named thresholds of the diagnosis rules (see the module docstring).

  Attributes:
    tail_fraction: share of the finite epochs that forms the end window.
    smooth_fraction: moving-mean window as a share of the finite epochs.
    min_epochs: fewer finite epochs than this are judged ``underfit``.
    min_decrease: ``not_learning`` when the training loss never fell by this
      fraction of its first value.
    noise_multiple: ... nor by this many times its relative noise
      (``train_noise``), so a noisy flat curve is not mistaken for progress.
    max_oscillation: ``unstable`` above this oscillation (RMS residual over the
      larger of range and level).
    overfit_after_best: least share of the run after the validation minimum.
    overfit_rise: least validation rise since its minimum, relative to it.
    overfit_train_fall: least relative fall of the training loss after the
      validation minimum.
    underfit_end_gain: ``underfit`` when the validation loss still fell by this
      share of its range over the tail.
    high_loss: losses keeping at least this fraction of their first value are
      "high".
    flat_slope: a curve whose relative change over the tail is within
      +-``flat_slope`` is flat (trends only).
    high_cv: per config, coefficient of variation of the final scores above
      which the config is ``high_variance``.
    min_majority_share: per config, a majority share below this is
      ``high_variance``.
  """
  tail_fraction: float = 0.2
  smooth_fraction: float = 0.05
  min_epochs: int = 5
  min_decrease: float = 0.05
  noise_multiple: float = 3.0
  max_oscillation: float = 0.1
  overfit_after_best: float = 0.25
  overfit_rise: float = 0.1
  overfit_train_fall: float = 0.1
  underfit_end_gain: float = 0.03
  high_loss: float = 0.5
  flat_slope: float = 0.05
  high_cv: float = 0.5
  min_majority_share: float = 0.6

  def __post_init__(self):
    for name in ("tail_fraction", "smooth_fraction", "overfit_after_best", "min_majority_share"):
      value = getattr(self, name)
      if not 0.0 < value <= 1.0:
        raise ValueError(f"Thresholds.{name} must be in (0, 1], got {value!r}.")
    if self.min_epochs < 3:
      raise ValueError(f"Thresholds.min_epochs must be >= 3, got {self.min_epochs!r}.")
    for name in ("min_decrease", "noise_multiple", "max_oscillation", "overfit_rise",
                 "overfit_train_fall", "underfit_end_gain", "high_loss", "flat_slope", "high_cv"):
      value = getattr(self, name)
      if not value >= 0.0:
        raise ValueError(f"Thresholds.{name} must be >= 0, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ConfigDiagnosis:
  """Verdict summary of one config's seeds.

  Attributes:
    n_seeds: number of seeds diagnosed.
    shares: verdict -> share of seeds, every verdict of ``VERDICTS`` present.
    majority: the most common verdict (ties: most severe).
    majority_share: its share.
    trend_shares: trend -> share of seeds (trends that occur only).
    final_cv: coefficient of variation (ddof=1) of the finite final scores;
      NaN with fewer than 2.
    high_variance: seeds disagree widely (``final_cv > high_cv`` or
      ``majority_share < min_majority_share``).
    advice: one line in the methodology's terms.
    config: the config id, if known.
  """
  n_seeds: int
  shares: Mapping[str, float]
  majority: str
  majority_share: float
  trend_shares: Mapping[str, float]
  final_cv: float
  high_variance: bool
  advice: str
  config: Any = None

  def to_frame(self) -> pd.DataFrame:
    """Return one row: config, n_seeds, majority(_share), share_<verdict> for
    every verdict, majority_trend, final_cv, high_variance, advice."""
    row = {"config": self.config, "n_seeds": self.n_seeds, "majority": self.majority,
           "majority_share": self.majority_share}
    row.update({f"share_{v}": self.shares[v] for v in VERDICTS})
    trend = max(self.trend_shares, key=self.trend_shares.get) if self.trend_shares else None
    row.update({"majority_trend": trend, "final_cv": self.final_cv,
                "high_variance": self.high_variance, "advice": self.advice})
    return pd.DataFrame([row])


def _as_curves(values, name: str) -> np.ndarray:
  curves = np.asarray(values, dtype=np.float64)
  if curves.ndim == 1:
    curves = curves[None, :]
  if curves.ndim != 2:
    raise ValueError(f"expected {name} of shape [seeds, epochs], got {curves.shape}.")
  return curves


def _finite_prefix(curve: np.ndarray) -> int:
  bad = ~np.isfinite(curve)
  return int(np.argmax(bad)) if bad.any() else len(curve)


def _moving_mean(curve: np.ndarray, half: int) -> np.ndarray:
  """Centred moving mean over ``2 * half + 1`` epochs, windows cut at the edges."""
  if half == 0:
    return curve.copy()
  csum = np.concatenate([[0.0], np.cumsum(curve)])
  idx = np.arange(len(curve))
  lo = np.maximum(idx - half, 0)
  hi = np.minimum(idx + half + 1, len(curve))
  return (csum[hi] - csum[lo]) / (hi - lo)


def _tail_change(curve: np.ndarray, k: int) -> float:
  """Change across the last ``k`` epochs of the least-squares line."""
  tail = curve[-k:]
  x = np.arange(k, dtype=np.float64)
  x -= x.mean()
  slope = float(np.dot(x, tail - tail.mean()) / np.dot(x, x))
  return slope * (k - 1)


def _ratio(num: float, den: float) -> float:
  """num / |den|, with 0/0 = 0 and x/0 = +-inf (a rise from exactly zero is infinite)."""
  den = abs(den)
  if den > _TINY:
    return num / den
  if abs(num) <= _TINY:
    return 0.0
  return float(np.copysign(np.inf, num))


def _residual_rms(raw: np.ndarray, smooth: np.ndarray, half: int) -> float:
  # Interior only: at the cut edges the window is lopsided and a steep start
  # would read as oscillation.
  inner = slice(half, len(raw) - half) if len(raw) - 2 * half >= 3 else slice(None)
  return float(np.sqrt(np.mean((raw[inner] - smooth[inner]) ** 2)))


def _oscillation(raw: np.ndarray, smooth: np.ndarray, half: int) -> float:
  rms = _residual_rms(raw, smooth, half)
  # Against the larger of range and level: a curve that improved little (small
  # range) or sits near zero (small level) should not read as unstable for its
  # ordinary noise.
  scale = max(float(smooth.max() - smooth.min()), float(np.mean(np.abs(smooth))))
  return _ratio(rms, scale)


def _direction(slope: float, flat: float) -> str:
  if not np.isfinite(slope):
    return "flat"
  if slope < -flat:
    return "falling"
  return "rising" if slope > flat else "flat"


def _evidence(train: np.ndarray, val: np.ndarray, th: Thresholds) -> dict:
  """Numbers behind the verdict for finite curves of equal length ``n >= 2``."""
  n = len(train)
  half = int(round(th.smooth_fraction * n / 2))
  t_s, v_s = _moving_mean(train, half), _moving_mean(val, half)
  k = min(n, max(3, int(np.ceil(th.tail_fraction * n))))
  best = int(np.argmin(v_s))
  t_change, v_change = _tail_change(train, k), _tail_change(val, k)
  return {
      "n_epochs": n,
      "best_epoch": best,
      "best_val": float(v_s[best]),
      "final_train": float(train[-1]),
      "final_val": float(val[-1]),
      "train_end_slope": _ratio(t_change, float(np.mean(np.abs(train[-k:])))),
      "val_end_slope": _ratio(v_change, float(np.mean(np.abs(val[-k:])))),
      "val_end_gain": _ratio(-v_change, float(v_s.max() - v_s.min())),
      "train_drop": _ratio(float(train[0] - t_s.min()), float(train[0])),
      "train_left": _ratio(float(t_s[-1]), float(train[0])),
      "val_left": _ratio(float(v_s[-1]), float(val[0])),
      "val_rise": _ratio(float(v_s[-1] - v_s[best]), float(v_s[best])),
      "after_best": (n - 1 - best) / (n - 1),
      "train_fall": _ratio(float(t_s[best] - t_s[-1]), float(t_s[best])),
      "gap": float(v_s[-1] - t_s[-1]),
      "oscillation": max(_oscillation(train, t_s, half), _oscillation(val, v_s, half)),
      "train_noise": _ratio(_residual_rms(train, t_s, half), float(train[0])),
  }


def _rule(ev: dict, th: Thresholds) -> str:
  """Reason key of the first rule that applies to finite curves."""
  if ev["n_epochs"] < th.min_epochs:
    return "short"
  # Oscillation first: a curve that swings widely is unstable whether or not
  # it trends, and its swings would otherwise swamp the decrease test.
  if ev["oscillation"] > th.max_oscillation:
    return "unstable"
  if ev["train_drop"] < max(th.min_decrease, th.noise_multiple * ev["train_noise"]):
    return "not_learning"
  if (ev["after_best"] >= th.overfit_after_best and ev["val_rise"] >= th.overfit_rise
      and ev["train_fall"] >= th.overfit_train_fall):
    return "overfit"
  if ev["val_end_gain"] >= th.underfit_end_gain:
    return "improving"
  if ev["train_left"] >= th.high_loss and ev["val_left"] >= th.high_loss:
    return "high"
  return "good_fit"


_VERDICT_OF = {
    "diverged_flag": "diverged", "diverged_inf": "diverged", "diverged_hole": "diverged",
    "diverged_empty": "diverged", "short": "underfit", "not_learning": "not_learning",
    "unstable": "unstable", "overfit": "overfit", "improving": "underfit", "high": "underfit",
    "good_fit": "good_fit",
}


def _diagnose_one(train: np.ndarray, val: np.ndarray, marked: bool, th: Thresholds) -> dict:
  n_t, n_v = _finite_prefix(train), _finite_prefix(val)
  n = min(n_t, n_v)
  if marked:
    key = "diverged_flag"
  elif np.isinf(train).any() or np.isinf(val).any():
    key = "diverged_inf"
  elif np.isfinite(train[n_t:]).any() or np.isfinite(val[n_v:]).any():
    key = "diverged_hole"
  elif n == 0:
    key = "diverged_empty"
  else:
    key = None
  ev = dict.fromkeys(_EVIDENCE, np.nan)
  ev["n_epochs"] = n
  if n >= 2:
    ev = _evidence(train[:n], val[:n], th)
  if key is None:
    key = _rule(ev, th)
  if n >= 2:
    train_dir = _direction(ev["train_end_slope"], th.flat_slope)
    val_dir = _direction(ev["val_end_slope"], th.flat_slope)
    trend = TRENDS.get((train_dir, val_dir), MIXED_TREND)
  else:
    train_dir = val_dir = trend = None
  return {"verdict": _VERDICT_OF[key], "trend": trend, "reason": _REASONS[key],
          "train_trend": train_dir, "val_trend": val_dir, **ev}


def diagnose_seeds(
    train: np.ndarray,
    val: np.ndarray,
    *,
    thresholds: Thresholds = Thresholds(),
    diverged: np.ndarray | None = None,
) -> pd.DataFrame:
  """Diagnose every seed's learning curves.

  Args:
    train: training loss, ``[seeds, epochs]`` (or ``[epochs]`` for one seed);
      NaN after a seed stopped early.
    val: validation loss, same shape as ``train``.
    thresholds: the rule thresholds.
    diverged: optional ``[seeds]`` bool mask from training; a marked seed is
      ``diverged`` whatever its curve (a NaN tail alone reads as a stop).

  Returns:
    One row per seed: ``seed`` (row index), ``verdict``, ``trend``, ``reason``,
    ``train_trend``, ``val_trend`` and the evidence numbers of the module
    docstring (``n_epochs``, ``best_epoch``, ``best_val``, ``final_train``,
    ``final_val``, ``train_end_slope``, ``val_end_slope``, ``val_end_gain``,
    ``train_drop``, ``train_left``, ``val_left``, ``val_rise``, ``after_best``,
    ``train_fall``, ``gap``, ``oscillation``, ``train_noise``); NaN where a
    curve has fewer than 2 finite epochs.

  Raises:
    ValueError: if the shapes differ or are not ``[seeds, epochs]``, or
      ``diverged`` is not ``[seeds]``.
  """
  train, val = _as_curves(train, "train"), _as_curves(val, "val")
  if train.shape != val.shape:
    raise ValueError(f"train and val must have the same shape [seeds, epochs], "
                     f"got {train.shape} and {val.shape}.")
  if 0 in train.shape:
    raise ValueError(f"expected at least one seed and one epoch, got shape {train.shape}.")
  marked = np.zeros(len(train), bool) if diverged is None else np.asarray(diverged, bool)
  if marked.shape != (len(train),):
    raise ValueError(f"expected diverged of shape [seeds] = ({len(train)},), got {marked.shape}.")
  rows = [{"seed": i, **_diagnose_one(t, v, bool(m), thresholds)}
          for i, (t, v, m) in enumerate(zip(train, val, marked))]
  frame = pd.DataFrame(rows)
  frame["n_epochs"] = frame["n_epochs"].astype(int)
  return frame


def _summarize(per_seed: pd.DataFrame, scores: np.ndarray | None, th: Thresholds,
               config: Any) -> ConfigDiagnosis:
  n = len(per_seed)
  if n == 0:
    raise ValueError("cannot summarise a config with no seeds.")
  counts = per_seed["verdict"].value_counts()
  shares = {v: float(counts.get(v, 0)) / n for v in VERDICTS}
  majority = max(VERDICTS, key=lambda v: (shares[v], -VERDICTS.index(v)))
  trends = per_seed["trend"].dropna().value_counts()
  trend_shares = {str(t): float(c) / n for t, c in trends.items()}
  finals = per_seed["final_val"].to_numpy(float) if scores is None else np.asarray(scores, float)
  finals = finals[np.isfinite(finals)]
  mean = float(np.mean(finals)) if len(finals) else np.nan
  final_cv = float(np.std(finals, ddof=1)) / abs(mean) if len(finals) >= 2 and mean != 0 else np.nan
  high_variance = bool((np.isfinite(final_cv) and final_cv > th.high_cv)
                       or shares[majority] < th.min_majority_share)
  # The advice follows the majority's most common reason (an underfit may be
  # "still improving" or "high and flat", which call for different fixes).
  reasons = per_seed.loc[per_seed["verdict"] == majority, "reason"].value_counts()
  advice = ADVICE[_ADVICE_KEY[_REASON_KEY[reasons.index[0]]]]
  if high_variance:
    advice += " Seeds disagree widely: run more repeats before trusting the mean."
  return ConfigDiagnosis(n_seeds=n, shares=shares, majority=majority,
                         majority_share=shares[majority], trend_shares=trend_shares,
                         final_cv=final_cv, high_variance=high_variance, advice=advice,
                         config=config)


def diagnose_config(
    train: np.ndarray,
    val: np.ndarray,
    *,
    thresholds: Thresholds = Thresholds(),
    diverged: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    config: Any = None,
) -> ConfigDiagnosis:
  """Summarise the seeds of one config.

  Args:
    train: training loss, ``[seeds, epochs]``, NaN after a stop.
    val: validation loss, same shape.
    thresholds: the rule thresholds.
    diverged: optional ``[seeds]`` bool mask from training.
    scores: optional ``[seeds]`` final scores for the spread check; defaults to
      each seed's last finite validation loss. Non-finite scores are left out.
    config: config id stored on the result.

  Returns:
    A ``ConfigDiagnosis``.
  """
  per_seed = diagnose_seeds(train, val, thresholds=thresholds, diverged=diverged)
  return _summarize(per_seed, scores, thresholds, config)


def _pick(history: Mapping[str, np.ndarray], wanted: str | None, candidates: Sequence[str],
          config: Any) -> np.ndarray:
  names = [wanted] if wanted is not None else list(candidates)
  for name in names:
    if name in history:
      return history[name]
  raise KeyError(f"config {config!r}: none of the metrics {names} in its history "
                 f"(it has {sorted(history)}); pass train_metric= / val_metric=.")


def diagnose_run(
    histories: Mapping[Any, Mapping[str, np.ndarray]],
    *,
    train_metric: str | None = None,
    val_metric: str = "val_loss",
    thresholds: Thresholds = Thresholds(),
    diverged: Mapping[Any, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Diagnose every config of a run.

  Args:
    histories: config id -> metric -> ``[seeds, epochs]`` array.
    train_metric: training-loss key; by default ``"loss"`` (Keras) or else
      ``"train_loss"``.
    val_metric: validation-loss key.
    thresholds: the rule thresholds.
    diverged: optional config id -> ``[seeds]`` bool mask from training.

  Returns:
    ``(per_seed, per_config)``: ``per_seed`` is ``diagnose_seeds``'s frame with a
    leading ``config`` column; ``per_config`` has one ``ConfigDiagnosis.to_frame``
    row per config, in the order of ``histories``.

  Raises:
    KeyError: if a config's history lacks the metrics.
  """
  seed_frames, config_frames = [], []
  for config, history in histories.items():
    train = _pick(history, train_metric, ("loss", "train_loss"), config)
    val = _pick(history, val_metric, (), config)
    mask = None if diverged is None else diverged.get(config)
    per_seed = diagnose_seeds(train, val, thresholds=thresholds, diverged=mask)
    config_frames.append(_summarize(per_seed, None, thresholds, config).to_frame())
    per_seed.insert(0, "config", [config] * len(per_seed))
    seed_frames.append(per_seed)
  if not seed_frames:
    raise ValueError("histories is empty: nothing to diagnose.")
  return (pd.concat(seed_frames, ignore_index=True),
          pd.concat(config_frames, ignore_index=True))


def summarize_seeds(per_seed: pd.DataFrame, *, scores: np.ndarray | None = None,
                    thresholds: Thresholds = Thresholds(), config: Any = None) -> ConfigDiagnosis:
  """Summarise one config from its per-seed rows (``diagnose_seeds``'s frame, or diagnosis.csv's).

  Args:
    per_seed: one row per seed with at least ``verdict``, ``trend``, ``reason``
      (and ``final_val`` when ``scores`` is None).
    scores: optional ``[seeds]`` final scores for the spread check; non-finite ones are left out.
    thresholds: the rule thresholds.
    config: config id stored on the result.
  """
  return _summarize(per_seed, scores, thresholds, config)
