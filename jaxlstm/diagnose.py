"""Learning-curve diagnosis: a verdict per repeat and a summary per config.

Inputs are stacked histories, ``train`` and ``val`` of shape ``[repeats, epochs]``
(``loss`` and ``val_loss`` of ``Ensemble.history``). A repeat that stopped early
has NaN after its stop: only the finite prefix common to both curves is used.
Epochs are 0-based indices into these arrays. numpy and pandas only (no jax).

Optional references, per config:
  * ``baseline_loss``: the *training* loss of a naive forecast, by default the
    loss of predicting the training targets' mean (for MSE: their variance;
    ``baselines.naive_scores(ds, split="train", methods=("mean",))["mean"]``).
    It lets the capacity rule judge the training loss against the problem
    rather than against the curve's own start.
  * ``baseline_scores``: *validation* scores of naive forecasts (persistence,
    mean, seasonal: ``baselines.naive_scores(ds)``), in the units of the
    config's scores; a config that does not beat the best of them is flagged.

Measures (per repeat, on the finite prefix of ``n`` epochs)
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
        end; what a linear-axis plot shows). ``val_gain_noise`` is the standard
        error of that change (from the line's residuals) on the same scale.
  * ``train_drop = (first - min) / |first|``: best relative decrease of the
    training loss from its first value, and ``train_left`` /
    ``val_left = end / first``: fraction of the first loss still left.
  * ``val_rise = (end - min) / |min|``: validation rise since its minimum,
    relative to the minimum. ``after_best = (n - 1 - best_epoch) / (n - 1)``.
  * ``train_fall = (train[best_epoch] - train[end]) / |train[best_epoch]|``:
    how much the training loss fell after the validation minimum.
  * ``gap = val_end - train_end`` (smoothed, loss units) and
    ``rel_gap = gap / |val_end|``: 0.5 means the training loss is half the
    validation loss, near 1 that it is far below it.
  * ``train_oscillation`` / ``val_oscillation``: RMS of (raw - smoothed) over the
    interior epochs, relative to the larger of the smoothed curve's range and
    its mean level; ``oscillation`` is the larger of the two. ``train_noise``:
    the same RMS for the training loss relative to its first value (the noise
    of ``train_drop``).
  * ``train_floor``: where the training loss is heading. The last
    ``3 * (k // 3)`` of the last ``k = floor_fraction * n`` epochs are cut into
    three equal blocks with means m1, m2, m3; while the curve falls and its fall
    shrinks (``q = (m3 - m2) / (m2 - m1)`` in (0, 1)), a geometric decay continues to
    ``m3 + (m3 - m2) q / (1 - q)`` (Aitken's extrapolation; exact for
    ``a + b exp(-t / tau)``, whose block means stay geometric). A fall that
    does not shrink has no floor in sight (0: losses are non-negative); a curve
    that is not falling sits at ``m3``.
  * With ``baseline_loss``: ``train_vs_baseline = train_end / baseline_loss``
    and ``floor_vs_baseline = train_floor / baseline_loss`` (1 - R² of the
    training fit, now and where it is heading, for an MSE against the mean);
    NaN without one.

Verdict rules (first that applies wins; thresholds are ``Thresholds`` fields).
``learned`` below is ``train_drop >= max(min_decrease, noise_multiple *
train_noise)``: the training loss fell, by more than its noise.
  1. ``diverged``: marked diverged by training (``diverged=``), or a curve holds
     +-Inf, a NaN followed by a finite value, or no finite value at all. A plain
     NaN tail is read as early stopping: pass ``diverged=`` to tell them apart.
  2. ``underfit_improving``: fewer than ``min_epochs`` finite epochs (too few
     to judge; train longer).
  3. ``unstable``: ``train_oscillation > max_oscillation``, or
     ``val_oscillation > max_oscillation`` while ``rel_gap < high_variance_gap``
     (the swings are the optimiser's, not a validation loss far above training).
  4. ``not_learning``: not ``learned`` (no decrease, or none that stands out of
     the noise).
  5. ``overfit``: the validation minimum is well before the end
     (``after_best >= overfit_after_best``), validation rose since
     (``val_rise >= overfit_rise``) and training kept falling
     (``train_fall >= overfit_train_fall``).
  6. ``high_variance``: training far below validation (``rel_gap >=
     high_variance_gap``) while validation swings (``val_oscillation >=
     high_variance_oscillation``) and training does not (rule 3 did not fire).
  7. ``underfit_capacity`` (with ``baseline_loss``): the training loss heads for
     a floor that is still high against the naive baseline
     (``floor_vs_baseline >= capacity_level``), so more epochs will not make it
     fit: still falling or not, the model is too small (or too regularised).
  8. ``underfit_improving``: validation still improving at the end, by more
     than its noise (``val_end_gain >= max(underfit_end_gain, noise_multiple *
     val_gain_noise)``).
  9. ``underfit_capacity`` (without ``baseline_loss``, the relative fallback):
     both losses high and flat (``train_left >= high_loss`` and ``val_left >=
     high_loss``; flat because rule 8 did not fire).
  10. ``good_fit``.

``VERDICTS`` lists the verdicts most severe first, which is also the order the
rules try them in (rule 2 aside).

Trend. Each curve's tail is ``falling`` / ``flat`` / ``rising`` as its
``*_end_slope`` is below ``-flat_slope`` / within / above ``+flat_slope``; the
pair names the *tail trend* (``tail_trend``, the methodology's six
combinations, ``TRENDS``; the three other pairs are ``mixed``):

  =========  ==========  ======================  =======================
  train      validation  tail trend              meaning
  =========  ==========  ======================  =======================
  falling    falling     ``still_learning``      more epochs
  falling    rising      ``overfitting``         stop earlier / regularise
  falling    flat        ``underfitting``        more capacity
  flat       flat        ``bottleneck``          more capacity / architecture
  rising     rising      ``lr_or_architecture``  lower the learning rate
  rising     falling     ``data_problem``        check the data
  =========  ==========  ======================  =======================

The tail trend is local (the tail, relative to the current level) and can
disagree with the verdict, which weighs the whole curve: a good fit's tiny
losses may still fall by a large factor, or tick up past a shallow minimum.
The reported ``trend`` never contradicts the verdict: it is the tail trend
when that is one the verdict allows (``VERDICT_TRENDS[verdict]``), else the
verdict's own trend (the first listed), and None for ``diverged``. Three trend
names exist only as such fallbacks: ``converged`` (good fit), ``stalled``
(not learning) and ``oscillating`` (unstable).

Per config: the share of repeats per verdict, the majority verdict (ties go to the
verdict listed first in ``VERDICTS``, the most severe), a ``high_variance`` flag
(repeats disagree: coefficient of variation of the final scores above
``high_cv``, or a majority share below ``min_majority_share``; not the per-repeat
verdict of the same name), whether the config beats the naive baselines, and
advice in the methodology's terms: the majority's own advice, then "more
repeats / an ensemble of the repeats" when repeats disagree, then the naive baseline it
loses to.

Default thresholds were tuned on the five-point linear problem of Brownlee's
"diagnose" tutorial (LSTM(10), Adam 1e-3, MSE, full batch), simulated with a
Keras-initialised LSTM outside this package, 30 repeats: 30/30 underfit at 100
epochs, 30/30 ``good_fit`` at 800, 30/30 ``overfit`` at 1200-2000 (19/30 at
3000, where validation falls again); the verdict flips around 600 (underfit to
good fit) and 1000 (good fit to overfit). The same with 5 % multiplicative noise
per epoch. Its validation loss has a sharp minimum near epoch 750 (its error
changes sign), which is why the "still improving" rule reads the curve on its
linear range rather than in log space. The capacity rule was checked on this
package's own training of that problem (tests/test_fit_diagnosis.py, CPU, jax
0.10.2): LSTM(1) for 300 epochs ends near the training-mean baseline while
still falling (about 19 % over its tail) but slowing; its projected floor is
at least 0.2 of the baseline in 25 of 30 repeats at seed 0 (26, 29 and 30 of 30
at repeats 1-3; the others fit well). LSTM(10) at 100 epochs ends at the same
level but falls steadily over the second half of its run: 0 of 30 repeats. A
tail of 20 % was too short to tell them apart (11 of 30 of the latter read as
capacity), hence the separate ``floor_fraction``. A ``high_variance_oscillation``
of 0.02 would catch ordinary minibatch noise (``damped_sine`` at batch 20 has a
validation oscillation of about 0.025), hence 0.05.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: pandas is imported where a table is built
  import pandas as pd

# Most severe first: the order breaks majority ties and orders share columns.
VERDICTS = ("diverged", "not_learning", "unstable", "overfit", "high_variance",
            "underfit_capacity", "underfit_improving", "good_fit")

# (train direction, validation direction) -> tail trend name.
TRENDS = {
    ("falling", "falling"): "still_learning",
    ("falling", "rising"): "overfitting",
    ("falling", "flat"): "underfitting",
    ("flat", "flat"): "bottleneck",
    ("rising", "rising"): "lr_or_architecture",
    ("rising", "falling"): "data_problem",
}
MIXED_TREND = "mixed"

# Trends each verdict allows, its own first: the reported trend is the tail trend
# when listed here, else the first entry (see the module docstring).
VERDICT_TRENDS = {
    "diverged": (),
    "not_learning": ("stalled", "lr_or_architecture", "data_problem"),
    "unstable": ("oscillating", "lr_or_architecture"),
    "overfit": ("overfitting",),
    "high_variance": ("overfitting", MIXED_TREND),
    "underfit_capacity": ("bottleneck", "underfitting"),
    "underfit_improving": ("still_learning",),
    "good_fit": ("converged",),
}

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
    "converged": "both levelled off at a good fit: nothing to change",
    "stalled": "the training loss does not decrease: check the data, then the learning rate",
    "oscillating": "the losses swing from epoch to epoch: lower the learning rate or clip gradients",
}

ADVICE = {
    "diverged": ("Lower the learning rate or clip gradients (optim clipnorm), and check the data "
                 "for NaN/Inf."),
    "not_learning": ("Check the data (inputs, targets, scaling), then the learning rate (raise it "
                     "if the loss never moves): the training loss does not decrease."),
    "unstable": ("Lower the learning rate, clip gradients or use a larger batch: the losses "
                 "oscillate."),
    "overfit": ("Stop earlier (early stopping at the validation minimum) or regularise more "
                "(dropout, weight decay, less capacity); more training data helps too."),
    "high_variance": ("Reduce the variance: more training data, more regularisation (dropout, "
                      "L2) or a smaller model; average an ensemble of the repeats (their predictions) "
                      "for a steadier forecast; cross-validate (rolling-origin folds) to see how "
                      "much of the gap is the split's. The training loss is far below a "
                      "validation loss that swings."),
    "underfit_capacity": ("Add capacity (more cells or layers) and, if the model is regularised "
                          "(dropout, L1/L2), regularise less: the training loss levels off high "
                          "against the naive baseline, so more epochs will not fix it."),
    "underfit_high": ("Add capacity (more cells or layers) and, if the model is regularised "
                      "(dropout, L1/L2), regularise less: both losses stay high and flat."),
    "underfit_improving": ("Train for more epochs (or raise the learning rate): the validation "
                           "loss is still falling at the end."),
    "underfit_short": "Train for more epochs: too few epochs ran to judge.",
    "good_fit": ("Good fit: keep the configuration and compare configs on their scores "
                 "(paired, when repeat i of every config shares its random draws)."),
}
REPEATS_DISAGREE = (" Repeats disagree widely: run more repeats before trusting the mean, or use an "
                    "ensemble of the repeats (average their predictions).")

# Reason key -> (verdict, reason text, advice key), one per rule.
_RULES = {
    "diverged_flag": ("diverged", "marked diverged by training", "diverged"),
    "diverged_inf": ("diverged", "the loss became infinite", "diverged"),
    "diverged_hole": ("diverged", "non-finite values inside the curve", "diverged"),
    "diverged_empty": ("diverged", "no finite values", "diverged"),
    "short": ("underfit_improving", "too few finite epochs to judge", "underfit_short"),
    "unstable": ("unstable", "large oscillation", "unstable"),
    "not_learning": ("not_learning", "the training loss did not decrease", "not_learning"),
    "overfit": ("overfit", "validation minimum well before the end, validation rising while "
                "training falls", "overfit"),
    "high_variance": ("high_variance", "training loss far below a validation loss that swings",
                      "high_variance"),
    "capacity": ("underfit_capacity", "the training loss levels off high against the naive "
                 "baseline", "underfit_capacity"),
    "improving": ("underfit_improving", "validation still improving at the end",
                  "underfit_improving"),
    "high": ("underfit_capacity", "both losses high and flat", "underfit_high"),
    "good_fit": ("good_fit", "both losses low and flat", "good_fit"),
}
_REASON_KEY = {reason: key for key, (_, reason, _) in _RULES.items()}

_EVIDENCE = (
    "n_epochs", "best_epoch", "best_val", "final_train", "final_val", "train_end_slope",
    "val_end_slope", "val_end_gain", "train_drop", "train_left", "val_left", "val_rise",
    "after_best", "train_fall", "gap", "oscillation", "train_noise",
    # Added with the gap, level and projection rules; kept after the original columns.
    "rel_gap", "train_oscillation", "val_oscillation", "train_floor", "train_vs_baseline",
    "floor_vs_baseline", "val_gain_noise",
)
_TINY = 1e-12


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """Named thresholds of the diagnosis rules (see the module docstring).

  Attributes:
    tail_fraction: share of the finite epochs that forms the end window.
    smooth_fraction: moving-mean window as a share of the finite epochs.
    min_epochs: fewer finite epochs than this are judged ``underfit_improving``.
    min_decrease: ``not_learning`` when the training loss never fell by this
      fraction of its first value.
    noise_multiple: ... nor by this many times its relative noise
      (``train_noise``), so a noisy flat curve is not mistaken for progress.
    max_oscillation: ``unstable`` above this oscillation (RMS residual over the
      larger of range and level) of the training loss, or of the validation
      loss when the gap is small.
    overfit_after_best: least share of the run after the validation minimum.
    overfit_rise: least validation rise since its minimum, relative to it.
    overfit_train_fall: least relative fall of the training loss after the
      validation minimum.
    high_variance_gap: least ``rel_gap`` (training this far below validation,
      as a share of the validation loss) for ``high_variance``; below it, large
      validation swings are ``unstable``.
    high_variance_oscillation: least validation oscillation for
      ``high_variance``.
    capacity_level: with a baseline loss, ``underfit_capacity`` when the
      training loss's projected floor is at least this share of it (0.2: the
      fit would explain under 80 % of what the naive forecast leaves).
    floor_fraction: share of the finite epochs, at the end, from which the
      training loss's floor is projected (longer than the tail: a slowing fall
      needs a long stretch to show).
    underfit_end_gain: ``underfit_improving`` when the validation loss still
      fell by this share of its range over the tail.
    high_loss: without a baseline, losses keeping at least this fraction of
      their first value are "high" (``underfit_capacity`` when also flat).
    flat_slope: a curve whose relative change over the tail is within
      +-``flat_slope`` is flat (trends only).
    high_cv: per config, coefficient of variation of the final scores above
      which the config is flagged ``high_variance``.
    min_majority_share: per config, a majority share below this sets the
      ``high_variance`` flag.
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
  high_variance_gap: float = 0.5
  high_variance_oscillation: float = 0.05
  capacity_level: float = 0.2
  floor_fraction: float = 0.5
  underfit_end_gain: float = 0.03
  high_loss: float = 0.5
  flat_slope: float = 0.05
  high_cv: float = 0.5
  min_majority_share: float = 0.6

  def __post_init__(self):
    for name in ("tail_fraction", "smooth_fraction", "overfit_after_best", "min_majority_share",
                 "high_variance_gap", "floor_fraction"):
      value = getattr(self, name)
      if not 0.0 < value <= 1.0:
        raise ValueError(f"Thresholds.{name} must be in (0, 1], got {value!r}.")
    if self.min_epochs < 3:
      raise ValueError(f"Thresholds.min_epochs must be >= 3, got {self.min_epochs!r}.")
    for name in ("min_decrease", "noise_multiple", "max_oscillation", "overfit_rise",
                 "overfit_train_fall", "high_variance_oscillation", "capacity_level",
                 "underfit_end_gain", "high_loss", "flat_slope", "high_cv"):
      value = getattr(self, name)
      if not value >= 0.0:
        raise ValueError(f"Thresholds.{name} must be >= 0, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ConfigDiagnosis:
  """Verdict summary of one config's repeats.

  Attributes:
    n_repeats: number of repeats diagnosed (`n_seeds` is its old name).
    shares: verdict -> share of repeats, every verdict of ``VERDICTS`` present.
    majority: the most common verdict (ties: most severe).
    majority_share: its share.
    trend_shares: trend -> share of repeats (trends that occur only; the
      reconciled ``trend``, which agrees with each repeat's verdict).
    final_cv: coefficient of variation (ddof=1) of the finite final scores;
      NaN with fewer than 2.
    high_variance: repeats disagree widely (``final_cv > high_cv`` or
      ``majority_share < min_majority_share``); a flag over repeats, not the
      per-repeat verdict ``high_variance``.
    advice: one line in the methodology's terms.
    config: the config id, if known.
    baseline_loss: the training-loss reference the capacity rule used, or None.
    baseline_scores: naive forecast -> validation score, as passed, or None.
    best_baseline: the naive forecast with the lowest score, or None.
    beats_baselines: the mean finite final score is below every baseline
      score; None without baseline scores or finite final scores.
    share_beats_baselines: share of finite final scores below the best
      baseline score; NaN without baseline scores.
  """
  n_repeats: int
  shares: Mapping[str, float]
  majority: str
  majority_share: float
  trend_shares: Mapping[str, float]
  final_cv: float
  high_variance: bool
  advice: str
  config: Any = None
  baseline_loss: float | None = None
  baseline_scores: Mapping[str, float] | None = None
  best_baseline: str | None = None
  beats_baselines: bool | None = None
  share_beats_baselines: float = np.nan

  @property
  def n_seeds(self) -> int:
    """Deprecated name of `n_repeats`."""
    return self.n_repeats

  def to_frame(self) -> pd.DataFrame:
    """Return one row: config, n_repeats, majority(_share), share_<verdict> for every
    verdict, majority_trend, final_cv, high_variance, advice, then the baseline
    columns (baseline_loss, best_baseline, best_baseline_score, beats_baselines,
    share_beats_baselines; None/NaN when not given)."""
    row = {"config": self.config, "n_repeats": self.n_repeats, "majority": self.majority,
           "majority_share": self.majority_share}
    row.update({f"share_{v}": self.shares[v] for v in VERDICTS})
    trend = max(self.trend_shares, key=self.trend_shares.get) if self.trend_shares else None
    row.update({"majority_trend": trend, "final_cv": self.final_cv,
                "high_variance": self.high_variance, "advice": self.advice})
    best_score = (self.baseline_scores[self.best_baseline] if self.best_baseline is not None
                  else np.nan)
    row.update({"baseline_loss": np.nan if self.baseline_loss is None else self.baseline_loss,
                "best_baseline": self.best_baseline, "best_baseline_score": best_score,
                "beats_baselines": self.beats_baselines,
                "share_beats_baselines": self.share_beats_baselines})
    import pandas as pd
    return pd.DataFrame([row])


def _as_curves(values, name: str) -> np.ndarray:
  curves = np.asarray(values, dtype=np.float64)
  if curves.ndim == 1:
    curves = curves[None, :]
  if curves.ndim != 2:
    raise ValueError(f"expected {name} of shape [repeats, epochs], got {curves.shape}.")
  return curves


def _check_baseline_loss(baseline_loss: float | None) -> float | None:
  if baseline_loss is None:
    return None
  value = float(baseline_loss)
  if not (np.isfinite(value) and value > 0):
    raise ValueError(
        f"baseline_loss must be a finite training loss > 0 of a naive forecast, got "
        f"{baseline_loss!r}; e.g. baselines.naive_scores(dataset, split='train', "
        "methods=('mean',))['mean'], or None for the relative capacity rule.")
  return value


def _check_baseline_scores(baseline_scores: Any) -> dict[str, float] | None:
  """{forecast: finite score} from a mapping or a `baselines.BaselineScores`."""
  if baseline_scores is None:
    return None
  scores = getattr(baseline_scores, "scores", baseline_scores)
  if not isinstance(scores, Mapping) or not scores:
    raise ValueError(f"baseline_scores must be a non-empty mapping {{forecast: validation "
                     f"score}} (or baselines.naive_scores(...)), got {baseline_scores!r}.")
  out = {str(k): float(v) for k, v in scores.items()}
  bad = {k: v for k, v in out.items() if not np.isfinite(v)}
  if bad:
    raise ValueError(f"baseline_scores must be finite, got {bad}; leave undefined forecasts out.")
  return out


# Each measure below works on a block of repeats with the same number of finite epochs,
# ``[rows, n]`` in C order, row by row in the same floating-point steps as on one curve:
# a repeat's numbers do not depend on which other repeats share its block (a sum along
# a C-ordered row is numpy's pairwise sum of that row, as for the row alone; dot products
# are one BLAS call per row).


def _finite_prefixes(curves: np.ndarray) -> np.ndarray:
  """``[repeats]`` number of leading finite epochs of each row."""
  bad = ~np.isfinite(curves)
  return np.where(bad.any(axis=1), bad.argmax(axis=1), curves.shape[1])


def _moving_mean(curves: np.ndarray, half: int) -> np.ndarray:
  """Centred moving mean over ``2 * half + 1`` epochs, windows cut at the edges."""
  if half == 0:
    return curves.copy()
  n = curves.shape[1]
  csum = np.concatenate([np.zeros((len(curves), 1)), np.cumsum(curves, axis=1)], axis=1)
  idx = np.arange(n)
  lo = np.maximum(idx - half, 0)
  hi = np.minimum(idx + half + 1, n)
  # C order (the gathers give columns-first): row sums below must run along each row.
  return np.ascontiguousarray((csum[:, hi] - csum[:, lo]) / (hi - lo))


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``[rows]`` dot products of the rows of ``a`` and ``b`` (``a`` may be one shared row), one call each."""
  pairs = zip(a, b) if a.ndim == 2 else ((a, v) for v in b)
  return np.array([np.dot(u, v) for u, v in pairs], dtype=np.float64)


def _tail_change(curves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Change across the last ``k`` epochs of each row's least-squares line, and its standard error."""
  tail = curves[:, -k:]
  x = np.arange(k, dtype=np.float64)
  x -= x.mean()
  sxx = float(np.dot(x, x))
  level = _row_mean(tail)[:, None]
  slope = _row_dots(x, tail - level) / sxx
  residual = tail - level - slope[:, None] * x
  se = np.sqrt(_row_dots(residual, residual) / (k - 2) / sxx) if k > 2 else np.zeros(len(curves))
  return slope * (k - 1), se * (k - 1)


def _projected_floor(curves: np.ndarray, k: int) -> np.ndarray:
  """Where the fall of each row's last ``k`` epochs levels off (Aitken on three block means)."""
  block = k // 3
  if block < 1:
    return curves[:, -1].copy()  # too few epochs for three blocks: the last value is the floor
  n = curves.shape[1]
  means = curves[:, n - 3 * block:].reshape(len(curves), 3, block).sum(axis=2) / block  # np.mean's steps
  m1, m2, m3 = means[:, 0], means[:, 1], means[:, 2]
  d1, d2 = m2 - m1, m3 - m2
  flat = (d2 >= 0) | (d1 >= 0)  # not falling, or only since the last block: no trend to extend
  with np.errstate(divide="ignore", invalid="ignore"):
    q = d2 / d1
    ahead = m3 + d2 * q / (1 - q)
  ahead = np.where(0.0 > ahead, 0.0, ahead)  # max(ahead, 0.0), as Python's max picks
  # A fall that does not slow down (q >= 1) has no floor in sight.
  return np.where(flat, m3, np.where(q >= 1, 0.0, ahead))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / |den|, with 0/0 = 0 and x/0 = +-inf (a rise from exactly zero is infinite); elementwise."""
  den = np.abs(den)
  usable = den > _TINY
  quotient = np.divide(num, den, out=np.zeros_like(num), where=usable)
  return np.where(usable, quotient, np.where(np.abs(num) <= _TINY, 0.0, np.copysign(np.inf, num)))


def _row_mean(rows: np.ndarray) -> np.ndarray:
  # What np.mean does (a row's pairwise sum, then one division), without its per-call overhead.
  return rows.sum(axis=1) / rows.shape[1]


def _residual_rms(raw: np.ndarray, smooth: np.ndarray, half: int) -> np.ndarray:
  # Interior only: at the cut edges the window is lopsided and a steep start
  # would read as oscillation.
  n = raw.shape[1]
  inner = slice(half, n - half) if n - 2 * half >= 3 else slice(None)
  return np.sqrt(_row_mean((raw[:, inner] - smooth[:, inner]) ** 2))


def _oscillation(raw: np.ndarray, smooth: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
  """The oscillation's ``(rms, scale)``; it is their `_ratio`."""
  # Against the larger of range and level: a curve that improved little (small
  # range) or sits near zero (small level) should not read as unstable for its
  # ordinary noise.
  spread, level = smooth.max(axis=1) - smooth.min(axis=1), _row_mean(np.abs(smooth))
  return _residual_rms(raw, smooth, half), np.where(level > spread, level, spread)


def _direction(slope: float, flat: float) -> str:
  if not np.isfinite(slope):
    return "flat"
  if slope < -flat:
    return "falling"
  return "rising" if slope > flat else "flat"


def _evidence(train: np.ndarray, val: np.ndarray, th: Thresholds,
              baseline_loss: float | None) -> dict[str, np.ndarray]:
  """Numbers behind the verdict, ``{name: [rows]}``, for finite curves ``[rows, n]``, ``n >= 2``."""
  count, n = train.shape
  both = np.concatenate([train, val])  # [2 rows, n], C order: every row-wise measure in one call for both kinds
  train, val = both[:count], both[count:]
  half = int(round(th.smooth_fraction * n / 2))
  smooth = _moving_mean(both, half)
  t_s, v_s = smooth[:count], smooth[count:]
  k = min(n, max(3, int(np.ceil(th.tail_fraction * n))))
  rows = np.arange(count)
  best = np.argmin(v_s, axis=1)
  change, change_se = _tail_change(both, k)
  t_change, v_change, v_change_se = change[:count], change[count:], change_se[count:]
  rms, scale = _oscillation(both, smooth, half)
  floor = _projected_floor(train, min(n, max(3, int(np.ceil(th.floor_fraction * n)))))
  base = np.nan if baseline_loss is None else baseline_loss
  v_range = v_s.max(axis=1) - v_s.min(axis=1)
  # Every ratio (numerator, denominator) at once: one `_ratio` call a block, not one per measure.
  ratios = {
      "train_end_slope": (t_change, _row_mean(np.abs(train[:, -k:]))),
      "val_end_slope": (v_change, _row_mean(np.abs(val[:, -k:]))),
      "val_end_gain": (-v_change, v_range),
      "val_gain_noise": (v_change_se, v_range),
      "train_drop": (train[:, 0] - t_s.min(axis=1), train[:, 0]),
      "train_left": (t_s[:, -1], train[:, 0]),
      "val_left": (v_s[:, -1], val[:, 0]),
      "val_rise": (v_s[:, -1] - v_s[rows, best], v_s[rows, best]),
      "train_fall": (t_s[rows, best] - t_s[:, -1], t_s[rows, best]),
      "train_noise": (rms[:count], train[:, 0]),
      "rel_gap": (v_s[:, -1] - t_s[:, -1], v_s[:, -1]),
      "train_oscillation": (rms[:count], scale[:count]),
      "val_oscillation": (rms[count:], scale[count:]),
  }
  ev = dict(zip(ratios, _ratio(np.stack([num for num, _ in ratios.values()]),
                               np.stack([den for _, den in ratios.values()]))))
  t_osc, v_osc = ev["train_oscillation"], ev["val_oscillation"]
  ev.update({
      "n_epochs": np.full(count, n),
      "best_epoch": best,
      "best_val": v_s[rows, best],
      "final_train": train[:, -1],
      "final_val": val[:, -1],
      "after_best": (n - 1 - best) / (n - 1),
      "gap": v_s[:, -1] - t_s[:, -1],
      "oscillation": np.where(v_osc > t_osc, v_osc, t_osc),  # max(t_osc, v_osc), as Python's max picks
      "train_floor": floor,
      "train_vs_baseline": t_s[:, -1] / base,
      "floor_vs_baseline": floor / base,
  })
  return {name: ev[name] for name in _EVIDENCE}  # one column order, with or without evidence


def _rule(ev: dict, th: Thresholds, with_baseline: bool) -> str:
  """Reason key of the first rule that applies to finite curves."""
  if ev["n_epochs"] < th.min_epochs:
    return "short"
  # Oscillation first: a curve that swings widely is unstable whether or not
  # it trends, and its swings would otherwise swamp the decrease test. Swings
  # of the validation loss alone, far above a steady training loss, are the
  # model's variance rather than the optimiser's (rule high_variance below).
  wide_gap = ev["rel_gap"] >= th.high_variance_gap
  if ev["train_oscillation"] > th.max_oscillation or (
      ev["val_oscillation"] > th.max_oscillation and not wide_gap):
    return "unstable"
  if ev["train_drop"] < max(th.min_decrease, th.noise_multiple * ev["train_noise"]):
    return "not_learning"
  if (ev["after_best"] >= th.overfit_after_best and ev["val_rise"] >= th.overfit_rise
      and ev["train_fall"] >= th.overfit_train_fall):
    return "overfit"
  if wide_gap and ev["val_oscillation"] >= th.high_variance_oscillation:
    return "high_variance"
  # Before "still improving": a small model still creeping down towards a high
  # floor is held back by its size, and more epochs would not fix it.
  if with_baseline and ev["floor_vs_baseline"] >= th.capacity_level:
    return "capacity"
  if ev["val_end_gain"] >= max(th.underfit_end_gain, th.noise_multiple * ev["val_gain_noise"]):
    return "improving"
  if not with_baseline and ev["train_left"] >= th.high_loss and ev["val_left"] >= th.high_loss:
    return "high"
  return "good_fit"


def _reconcile(verdict: str, tail_trend: str | None) -> str | None:
  allowed = VERDICT_TRENDS[verdict]
  if not allowed:
    return None
  return tail_trend if tail_trend in allowed else allowed[0]


def _diverged_keys(train: np.ndarray, val: np.ndarray, n_t: np.ndarray, n_v: np.ndarray,
                   marked: np.ndarray) -> list[str | None]:
  """Each repeat's diverged rule (its reason key), or None for a curve the other rules judge.

  ``n_t`` / ``n_v``: the curves' finite prefixes (`_finite_prefixes`).
  """
  after_t = np.arange(train.shape[1]) >= n_t[:, None]
  after_v = np.arange(val.shape[1]) >= n_v[:, None]
  inf = np.isinf(train).any(axis=1) | np.isinf(val).any(axis=1)
  hole = (np.isfinite(train) & after_t).any(axis=1) | (np.isfinite(val) & after_v).any(axis=1)
  empty = np.minimum(n_t, n_v) == 0
  keys = np.select([marked, inf, hole, empty], ["diverged_flag", "diverged_inf", "diverged_hole", "diverged_empty"],
                   default="")
  return [key or None for key in keys.tolist()]


def diagnose_repeats(
    train: np.ndarray,
    val: np.ndarray,
    *,
    thresholds: Thresholds = Thresholds(),
    diverged: np.ndarray | None = None,
    baseline_loss: float | None = None,
) -> pd.DataFrame:
  """Diagnose every repeat's learning curves.

  Args:
    train: training loss, ``[repeats, epochs]`` (or ``[epochs]`` for one repeat);
      NaN after a repeat stopped early.
    val: validation loss, same shape as ``train``.
    thresholds: the rule thresholds.
    diverged: optional ``[repeats]`` bool mask from training; a marked repeat is
      ``diverged`` whatever its curve (a NaN tail alone reads as a stop).
    baseline_loss: optional training loss of a naive forecast (the training
      targets' mean), in the units of ``train``; turns on the baseline capacity
      rule (rule 7) in place of the relative one (rule 9).

  Returns:
    One row per repeat: ``repeat`` (row index), ``verdict``, ``trend`` (agrees with
    the verdict), ``reason``, ``train_trend``, ``val_trend`` and the evidence
    numbers of the module docstring (``n_epochs``, ``best_epoch``, ``best_val``,
    ``final_train``, ``final_val``, ``train_end_slope``, ``val_end_slope``,
    ``val_end_gain``, ``train_drop``, ``train_left``, ``val_left``, ``val_rise``,
    ``after_best``, ``train_fall``, ``gap``, ``oscillation``, ``train_noise``,
    ``rel_gap``, ``train_oscillation``, ``val_oscillation``, ``train_floor``,
    ``train_vs_baseline``, ``floor_vs_baseline``), then ``tail_trend`` (the
    six-way tail reading); NaN where a curve has fewer than 2 finite epochs.

  Raises:
    ValueError: if the shapes differ or are not ``[repeats, epochs]``,
      ``diverged`` is not ``[repeats]``, or ``baseline_loss`` is not a finite
      loss > 0.
  """
  train, val = _as_curves(train, "train"), _as_curves(val, "val")
  if train.shape != val.shape:
    raise ValueError(f"train and val must have the same shape [repeats, epochs], "
                     f"got {train.shape} and {val.shape}.")
  if 0 in train.shape:
    raise ValueError(f"expected at least one repeat and one epoch, got shape {train.shape}.")
  marked = np.zeros(len(train), bool) if diverged is None else np.asarray(diverged, bool)
  if marked.shape != (len(train),):
    raise ValueError(f"expected diverged of shape [repeats] = ({len(train)},), got {marked.shape}.")
  baseline_loss = _check_baseline_loss(baseline_loss)
  count = len(train)
  n_t, n_v = _finite_prefixes(train), _finite_prefixes(val)
  n = np.minimum(n_t, n_v)
  evidence = {name: np.full(count, np.nan) for name in _EVIDENCE}
  for length in np.unique(n[n >= 2]).tolist():  # one block per length of the finite prefix
    rows = np.flatnonzero(n == length)
    for name, values in _evidence(train[rows, :length], val[rows, :length], thresholds, baseline_loss).items():
      evidence[name][rows] = values
  evidence["n_epochs"] = n
  if (n >= 2).all():
    evidence["best_epoch"] = evidence["best_epoch"].astype(np.int64)  # epochs, as integers when every repeat has one
  with_baseline = baseline_loss is not None
  leading = ("verdict", "trend", "reason", "train_trend", "val_trend")  # the columns before the evidence
  columns = {name: [] for name in (*leading, "tail_trend")}
  listed = {name: values.tolist() for name, values in evidence.items()}
  for i, key in enumerate(_diverged_keys(train, val, n_t, n_v, marked)):
    ev = {name: values[i] for name, values in listed.items()}
    verdict, reason, _ = _RULES[key or _rule(ev, thresholds, with_baseline)]
    if n[i] >= 2:
      train_dir = _direction(ev["train_end_slope"], thresholds.flat_slope)
      val_dir = _direction(ev["val_end_slope"], thresholds.flat_slope)
      tail = TRENDS.get((train_dir, val_dir), MIXED_TREND)
    else:
      train_dir = val_dir = tail = None
    for name, value in (("verdict", verdict), ("trend", _reconcile(verdict, tail)), ("reason", reason),
                        ("train_trend", train_dir), ("val_trend", val_dir), ("tail_trend", tail)):
      columns[name].append(value)
  import pandas as pd
  frame = pd.DataFrame({"repeat": np.arange(count), **{k: columns[k] for k in leading}, **evidence,
                        "tail_trend": columns["tail_trend"]})
  frame["n_epochs"] = frame["n_epochs"].astype(int)
  return frame


def _against_baselines(finals: np.ndarray, baseline_scores: dict[str, float] | None
                       ) -> tuple[str | None, bool | None, float]:
  """(best baseline, mean beats it, share of repeats beating it) for lower-is-better scores."""
  if baseline_scores is None:
    return None, None, np.nan
  best = min(baseline_scores, key=baseline_scores.get)
  if not len(finals):
    return best, None, np.nan
  beats = bool(np.mean(finals) < baseline_scores[best])
  return best, beats, float(np.mean(finals < baseline_scores[best]))


def _summarize(per_repeat: pd.DataFrame, scores: np.ndarray | None, th: Thresholds, config: Any,
               baseline_loss: float | None = None,
               baseline_scores: dict[str, float] | None = None) -> ConfigDiagnosis:
  n = len(per_repeat)
  if n == 0:
    raise ValueError("cannot summarise a config with no repeats.")
  counts = per_repeat["verdict"].value_counts()
  shares = {v: float(counts.get(v, 0)) / n for v in VERDICTS}
  majority = max(VERDICTS, key=lambda v: (shares[v], -VERDICTS.index(v)))
  trends = per_repeat["trend"].dropna().value_counts()
  trend_shares = {str(t): float(c) / n for t, c in trends.items()}
  finals = per_repeat["final_val"].to_numpy(float) if scores is None else np.asarray(scores, float)
  finals = finals[np.isfinite(finals)]
  mean = float(np.mean(finals)) if len(finals) else np.nan
  final_cv = float(np.std(finals, ddof=1)) / abs(mean) if len(finals) >= 2 and mean != 0 else np.nan
  high_variance = bool((np.isfinite(final_cv) and final_cv > th.high_cv)
                       or shares[majority] < th.min_majority_share)
  # The advice follows the majority's most common reason (an underfit may be
  # "still improving" or "levels off high", which call for different fixes).
  reasons = per_repeat.loc[per_repeat["verdict"] == majority, "reason"].value_counts()
  advice = ADVICE[_RULES[_REASON_KEY[reasons.index[0]]][2]]
  if high_variance:
    advice += REPEATS_DISAGREE
  best, beats, share = _against_baselines(finals, baseline_scores)
  if beats is False:
    advice += (f" It does not beat the naive {best} forecast (mean score {mean:.3g} vs "
               f"{baseline_scores[best]:.3g}; {share:.0%} of repeats beat it): make sure the "
               "inputs carry information beyond it before tuning further.")
  return ConfigDiagnosis(n_repeats=n, shares=shares, majority=majority,
                         majority_share=shares[majority], trend_shares=trend_shares,
                         final_cv=final_cv, high_variance=high_variance, advice=advice,
                         config=config, baseline_loss=baseline_loss,
                         baseline_scores=baseline_scores, best_baseline=best,
                         beats_baselines=beats, share_beats_baselines=share)


def diagnose_config(
    train: np.ndarray,
    val: np.ndarray,
    *,
    thresholds: Thresholds = Thresholds(),
    diverged: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    config: Any = None,
    baseline_loss: float | None = None,
    baseline_scores: Mapping[str, float] | None = None,
) -> ConfigDiagnosis:
  """Summarise the repeats of one config.

  Args:
    train: training loss, ``[repeats, epochs]``, NaN after a stop.
    val: validation loss, same shape.
    thresholds: the rule thresholds.
    diverged: optional ``[repeats]`` bool mask from training.
    scores: optional ``[repeats]`` final scores for the spread check and the
      baseline comparison (lower is better); defaults to each repeat's last
      finite validation loss. Non-finite scores are left out.
    config: config id stored on the result.
    baseline_loss: optional training loss of a naive forecast (see
      ``diagnose_repeats``).
    baseline_scores: optional {forecast: validation score} of naive forecasts
      (or a ``baselines.BaselineScores``), in the units of ``scores``.

  Returns:
    A ``ConfigDiagnosis``.

  Raises:
    ValueError: as ``diagnose_repeats``, or for empty or non-finite baseline scores.
  """
  per_repeat = diagnose_repeats(train, val, thresholds=thresholds, diverged=diverged,
                            baseline_loss=baseline_loss)
  return _summarize(per_repeat, scores, thresholds, config, _check_baseline_loss(baseline_loss),
                    _check_baseline_scores(baseline_scores))


def _pick(history: Mapping[str, np.ndarray], wanted: str | None, candidates: Sequence[str],
          config: Any) -> np.ndarray:
  names = [wanted] if wanted is not None else list(candidates)
  for name in names:
    if name in history:
      return history[name]
  raise KeyError(f"config {config!r}: none of the metrics {names} in its history "
                 f"(it has {sorted(history)}); pass train_metric= / val_metric=.")


def _per_config(value: Any, config: Any, shared: bool) -> Any:
  """The config's entry of a per-config mapping, or a value shared by every config."""
  if value is None or shared:
    return value
  return value.get(config)


def diagnose_run(
    histories: Mapping[Any, Mapping[str, np.ndarray]],
    *,
    train_metric: str | None = None,
    val_metric: str = "val_loss",
    thresholds: Thresholds = Thresholds(),
    diverged: Mapping[Any, np.ndarray] | None = None,
    baseline_loss: float | Mapping[Any, float] | None = None,
    baseline_scores: Mapping[str, float] | Mapping[Any, Mapping[str, float]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Diagnose every config of a run.

  Args:
    histories: config id -> metric -> ``[repeats, epochs]`` array.
    train_metric: training-loss key; by default ``"loss"`` (Keras) or else
      ``"train_loss"``.
    val_metric: validation-loss key.
    thresholds: the rule thresholds.
    diverged: optional config id -> ``[repeats]`` bool mask from training.
    baseline_loss: a training loss of a naive forecast shared by every config,
      or config id -> that loss (configs left out get the relative rule).
    baseline_scores: {forecast: validation score} shared by every config, or
      config id -> such a mapping (or ``baselines.BaselineScores``).

  Returns:
    ``(per_repeat, per_config)``: ``per_repeat`` is ``diagnose_repeats``'s frame with a
    leading ``config`` column; ``per_config`` has one ``ConfigDiagnosis.to_frame``
    row per config, in the order of ``histories``.

  Raises:
    KeyError: if a config's history lacks the metrics.
  """
  shared_loss = not isinstance(baseline_loss, Mapping)
  scores_of = getattr(baseline_scores, "scores", baseline_scores)
  shared_scores = not (isinstance(scores_of, Mapping) and scores_of
                       and all(isinstance(getattr(v, "scores", v), Mapping)
                               for v in scores_of.values()))
  repeat_frames, config_frames = [], []
  for config, history in histories.items():
    train = _pick(history, train_metric, ("loss", "train_loss"), config)
    val = _pick(history, val_metric, (), config)
    mask = None if diverged is None else diverged.get(config)
    base = _check_baseline_loss(_per_config(baseline_loss, config, shared_loss))
    naive = _check_baseline_scores(_per_config(baseline_scores, config, shared_scores))
    per_repeat = diagnose_repeats(train, val, thresholds=thresholds, diverged=mask,
                              baseline_loss=base)
    config_frames.append(_summarize(per_repeat, None, thresholds, config, base, naive).to_frame())
    per_repeat.insert(0, "config", [config] * len(per_repeat))
    repeat_frames.append(per_repeat)
  if not repeat_frames:
    raise ValueError("histories is empty: nothing to diagnose.")
  import pandas as pd
  return (pd.concat(repeat_frames, ignore_index=True),
          pd.concat(config_frames, ignore_index=True))


def summarize_repeats(per_repeat: pd.DataFrame, *, scores: np.ndarray | None = None,
                    thresholds: Thresholds = Thresholds(), config: Any = None,
                    baseline_loss: float | None = None,
                    baseline_scores: Mapping[str, float] | None = None) -> ConfigDiagnosis:
  """Summarise one config from its per-repeat rows (``diagnose_repeats``'s frame, or diagnosis.csv's).

  Args:
    per_repeat: one row per repeat with at least ``verdict``, ``trend``, ``reason``
      (and ``final_val`` when ``scores`` is None).
    scores: optional ``[repeats]`` final scores for the spread check; non-finite ones are left out.
    thresholds: the rule thresholds.
    config: config id stored on the result.
    baseline_loss, baseline_scores: as for ``diagnose_config``.
  """
  return _summarize(per_repeat, scores, thresholds, config, baseline_loss,
                    dict(baseline_scores) if baseline_scores is not None else None)


def diagnose_seeds(*args, **kwargs) -> pd.DataFrame:
  """Deprecated name of `diagnose_repeats` (its frame's `seed` column is now `repeat`)."""
  return diagnose_repeats(*args, **kwargs)
