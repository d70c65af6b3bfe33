"""Variance analysis over the repeats of configs (numpy/scipy/pandas only, never jax).

Inputs are final scores `[config, repeat]` (one config: `[repeat]`), taken from stacked
histories `[config, repeat, epoch]` by `scores_from_histories`. Methods and the
reference each one is tested against are in `reference/statistics.md`.

Conventions shared by every function:

* **Diverged repeats.** A repeat whose score is NaN or ±inf, or that a `diverged` mask
  flags, is diverged: it is left out of every statistic and counted in `n_diverged`.
  Never a silent `nanmean` (reliability.md §4). A config with fewer than 2 finite
  repeats gives NaN for what needs a spread (std, SEM, intervals, tests), not an error.
* **ddof=1** everywhere, as pandas `describe()` and `scipy.stats.sem`; numpy's
  default ddof=0 is the likeliest silent bug (statistics.md §0, finding 4).
* **Direction.** Functions take `higher_is_better` (False: a loss). Comparisons
  report "A better than B" in that direction; symmetric statistics record it.
* **Resampling** draws only from an explicit `rng`: a `np.random.Generator`, or an
  int seed that becomes `np.random.default_rng(seed)`. No global random state.
* **Results** are small frozen dataclasses with `.to_frame()`; settings a reader
  needs (confidence, method, resamples, ddof) travel in the frame's `attrs`.
* **Paired comparisons.** With common random numbers (repeat i of every config
  shares its initial weights, data order and dropout masks), repeat i of A is
  matched with repeat i of B: `paired_t_test`, `wilcoxon_signed_rank`,
  `prob_improvement_paired`, `se_difference` and `compare_configs(paired=True)`.
  A pair where either side is non-finite is dropped and counted in `n_dropped`;
  `se_difference` shows what the pairing bought (paired vs unpaired standard error).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special


class _LazyScipyStats:
  """`scipy.stats`, imported on first use: 0.6 s of import that `summarize` does not need."""

  def __getattr__(self, name):
    import scipy.stats
    return getattr(scipy.stats, name)


stats = _LazyScipyStats()

ArrayLike = npt.ArrayLike
Rng = np.random.Generator | int
# Several configs: {name: [repeat]}, a wide frame (rows configs, columns repeats) or [config, repeat].
ConfigScores = Mapping[Hashable, ArrayLike] | pd.DataFrame | np.ndarray

DDOF = 1
_NAN = math.nan
_DESCRIBE = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
_STAT_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "mean": np.mean,
    "median": np.median,
    "iqm": lambda x, axis=-1: stats.trim_mean(x, 0.25, axis=axis),
}


# ---------------------------------------------------------------------------
# Input handling.


def _as_generator(rng: Rng) -> np.random.Generator:
  """Turn an explicit `rng` into a Generator; refuse None so resampling is never unseeded."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return np.random.default_rng(int(rng))
  raise TypeError(
      f"rng must be a np.random.Generator or an int seed, got {rng!r}. "
      "Pass rng=np.random.default_rng(0) (or rng=0) so resampling is reproducible.")


def _mask(values: ArrayLike, diverged: ArrayLike | None, what: str) -> np.ndarray:
  """Float copy of `values` with NaN wherever the `diverged` mask is set."""
  values = np.array(values, dtype=float)
  if diverged is not None:
    diverged = np.asarray(diverged, dtype=bool)
    if diverged.shape != values.shape:
      raise ValueError(
          f"expected a diverged mask of the shape of {what} {values.shape}, got {diverged.shape}.")
    values[diverged] = np.nan
  return values


def _repeats(values: ArrayLike, diverged: ArrayLike | None = None,
           what: str = "scores") -> tuple[np.ndarray, int]:
  """Split one config's `[repeat]` scores into (finite values in repeat order, n_diverged)."""
  values = _mask(values, diverged, what)
  if values.ndim != 1:
    raise ValueError(f"expected {what} of shape [repeat], got {values.shape}.")
  finite = np.isfinite(values)
  return values[finite], int(values.size - finite.sum())


def _raw_configs(scores: ConfigScores, diverged: ArrayLike | Mapping | None
                 ) -> dict[Hashable, np.ndarray]:
  """`[config, repeat]` scores as {config: `[repeat]` floats, NaN where diverged}, in input order.

  Repeat positions are kept (paired comparisons match them); `_configs` drops them.
  """
  if isinstance(scores, Mapping):
    if diverged is not None and not isinstance(diverged, Mapping):
      raise ValueError("expected diverged as a mapping {config: [repeat] mask} when scores is a mapping.")
    rows = {}
    for name, values in scores.items():
      what = f"scores[{name!r}]"
      rows[name] = _mask(values, None if diverged is None else diverged.get(name), what)
      if rows[name].ndim != 1:
        raise ValueError(f"expected {what} of shape [repeat], got {rows[name].shape}.")
    return rows
  if isinstance(scores, pd.DataFrame):
    labels, table = list(scores.index), scores.to_numpy(dtype=float)
  else:
    table = np.asarray(scores, dtype=float)
    if table.ndim != 2:
      raise ValueError(
          f"expected scores of shape [config, repeat] (or a mapping / wide DataFrame), got {table.shape}.")
    labels = list(range(table.shape[0]))
  table = _mask(table, None if diverged is None else np.asarray(diverged), "scores")
  return dict(zip(labels, table))


def _configs(scores: ConfigScores, diverged: ArrayLike | Mapping | None
             ) -> dict[Hashable, tuple[np.ndarray, int]]:
  """Split `[config, repeat]` scores into {config: (finite values, n_diverged)}, in input order."""
  return {name: _repeats(row) for name, row in _raw_configs(scores, diverged).items()}


def _frame(row_or_rows: Mapping | Sequence[Mapping], index: Sequence | None = None,
           **attrs) -> pd.DataFrame:
  rows = [row_or_rows] if isinstance(row_or_rows, Mapping) else list(row_or_rows)
  frame = pd.DataFrame(rows, index=index)
  frame.attrs.update(attrs)
  return frame


def _better(a_minus_b: float, higher_is_better: bool) -> bool:
  return a_minus_b > 0 if higher_is_better else a_minus_b < 0


def _raw_alternative(alternative: str, higher_is_better: bool) -> str:
  """Map 'better'/'worse' (A vs B in the metric's direction) to scipy's 'greater'/'less'."""
  if alternative == "two-sided":
    return alternative
  if alternative not in ("better", "worse"):
    raise ValueError(f"alternative must be 'two-sided', 'better' or 'worse', got {alternative!r}.")
  a_greater = (alternative == "better") == higher_is_better
  return "greater" if a_greater else "less"


def _check_confidence(confidence: float) -> None:
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")


# ---------------------------------------------------------------------------
# Histories -> scores.


def scores_from_histories(histories: ArrayLike, *, higher_is_better: bool,
                          at: Literal["last", "best"] = "last",
                          diverged: ArrayLike | None = None) -> np.ndarray:
  """Reduce per-epoch histories to one score per repeat.

  A repeat with any non-finite epoch (or flagged in `diverged`) scores NaN, so it is
  counted as diverged downstream: its best epoch before blowing up would otherwise
  hide the divergence.

  Args:
    histories: `[config, repeat, epoch]` or `[repeat, epoch]` metric values.
    higher_is_better: which end is "best" when `at="best"`.
    at: "last" epoch, or the "best" epoch of each repeat.
    diverged: optional `[config, repeat]` (or `[repeat]`) bool mask.

  Returns:
    `[config, repeat]` (or `[repeat]`) float scores, NaN for diverged repeats.
  """
  histories = np.asarray(histories, dtype=float)
  if histories.ndim not in (2, 3):
    raise ValueError(
        f"expected histories of shape [config, repeat, epoch] or [repeat, epoch], got {histories.shape}.")
  if at == "last":
    scores = histories[..., -1].copy()
  elif at == "best":
    scores = (histories.max(axis=-1) if higher_is_better else histories.min(axis=-1))
  else:
    raise ValueError(f"at must be 'last' or 'best', got {at!r}.")
  scores[~np.isfinite(histories).all(axis=-1)] = np.nan
  return _mask(scores, diverged, "histories[..., 0]")


# ---------------------------------------------------------------------------
# Summaries.


def iqm(scores: ArrayLike) -> float:
  """Interquartile mean: the mean of the middle 50% of finite values (rliable's `aggregate_iqm`).

  Args:
    scores: any shape (e.g. `[repeat]` or `[repeat, task]`); all finite values are pooled.
  """
  values = np.asarray(scores, dtype=float).ravel()
  values = values[np.isfinite(values)]
  if not values.size:
    return _NAN
  # scipy.stats.trim_mean(values, 0.25): drop int(0.25 n) repeats from each end.
  cut = int(0.25 * values.size)
  return float(np.mean(np.sort(values)[cut:values.size - cut]))


@dataclasses.dataclass(frozen=True)
class Summary:
  """One config's scores: describe() columns, then n_diverged, SEM, t-interval and IQM."""
  config: Hashable | None
  count: int
  mean: float
  std: float
  min: float
  q25: float
  median: float
  q75: float
  max: float
  n_diverged: int
  sem: float
  ci_low: float
  ci_high: float
  iqm: float
  confidence: float
  higher_is_better: bool

  def row(self) -> dict[str, float]:
    """The frame row: describe()'s names for the quartiles, so tables read like Brownlee's."""
    return {"count": self.count, "mean": self.mean, "std": self.std, "min": self.min,
            "25%": self.q25, "50%": self.median, "75%": self.q75, "max": self.max,
            "n_diverged": self.n_diverged, "sem": self.sem, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "iqm": self.iqm}

  def to_frame(self) -> pd.DataFrame:
    return _frame(self.row(), index=pd.Index([self.config], name="config"),
                  confidence=self.confidence, ddof=DDOF, higher_is_better=self.higher_is_better)


@dataclasses.dataclass(frozen=True)
class SummaryTable:
  """Summaries of several configs, in input order."""
  summaries: tuple[Summary, ...]
  confidence: float
  higher_is_better: bool

  def __getitem__(self, config: Hashable) -> Summary:
    for summary in self.summaries:
      if summary.config == config:
        return summary
    raise KeyError(f"Unknown config {config!r}; have {[s.config for s in self.summaries]}.")

  @property
  def best(self) -> Hashable | None:
    """The config with the best mean in the metric's direction; NaN means never win."""
    finite = [s for s in self.summaries if math.isfinite(s.mean)]
    if not finite:
      return None
    pick = max if self.higher_is_better else min
    return pick(finite, key=lambda s: s.mean).config

  def to_frame(self) -> pd.DataFrame:
    """One row per config, indexed by config."""
    return _frame([s.row() for s in self.summaries],
                  index=pd.Index([s.config for s in self.summaries], name="config"),
                  confidence=self.confidence, ddof=DDOF, higher_is_better=self.higher_is_better)


def _t_half_width(std: float, n: int | np.ndarray, confidence: float) -> float | np.ndarray:
  """Half-width t_{(1+c)/2, n-1} * std / sqrt(n) of the t-interval of a mean."""
  # special.stdtrit(df, p) is the t quantile t.ppf(p, df) without importing scipy.stats.
  return special.stdtrit(np.asarray(n) - 1, (1 + confidence) / 2) * std / np.sqrt(n)


def _summary(values: np.ndarray, n_diverged: int, config: Hashable | None,
             confidence: float, higher_is_better: bool) -> Summary:
  n = values.size
  mean = std = sem = low = high = _NAN
  quartiles = (_NAN,) * 5
  if n:
    mean = float(np.mean(values))
    # describe() uses linear interpolation, numpy's default.
    quartiles = tuple(float(q) for q in np.percentile(values, [0, 25, 50, 75, 100]))
  if n >= 2:
    std = float(np.std(values, ddof=DDOF))
    sem = std / math.sqrt(n)
    half = float(_t_half_width(std, n, confidence))
    low, high = mean - half, mean + half
  return Summary(config=config, count=n, mean=mean, std=std, min=quartiles[0],
                 q25=quartiles[1], median=quartiles[2], q75=quartiles[3], max=quartiles[4],
                 n_diverged=n_diverged, sem=sem, ci_low=low, ci_high=high, iqm=iqm(values),
                 confidence=confidence, higher_is_better=higher_is_better)


def summarize(scores: ArrayLike | ConfigScores, *, higher_is_better: bool = False,
              confidence: float = 0.95, diverged: ArrayLike | Mapping | None = None
              ) -> Summary | SummaryTable:
  """Describe each config: count, mean, std, quartiles, n_diverged, SEM, t-interval, IQM.

  Statistics use finite repeats only (ddof=1). With one finite repeat the mean and
  quartiles are that value and std/SEM/interval are NaN, as in `describe()`.

  Args:
    scores: one config's `[repeat]` scores, or several: `{config: [repeat]}`, a wide
      DataFrame (rows configs, columns repeats) or a `[config, repeat]` array.
    higher_is_better: direction of the metric; picks `SummaryTable.best`.
    confidence: level of the t-interval of the mean, `mean ± t_{(1+c)/2, n-1}·sem`.
    diverged: optional bool mask of the shape of `scores` (a mapping for a mapping).

  Returns:
    A `Summary` for a 1-D input, else a `SummaryTable` (one frame row per config).
  """
  _check_confidence(confidence)
  if not isinstance(scores, (Mapping, pd.DataFrame)) and np.ndim(scores) == 1:
    values, n_diverged = _repeats(scores, diverged)
    return _summary(values, n_diverged, None, confidence, higher_is_better)
  rows = tuple(_summary(values, n_diverged, name, confidence, higher_is_better)
               for name, (values, n_diverged) in _configs(scores, diverged).items())
  return SummaryTable(summaries=rows, confidence=confidence, higher_is_better=higher_is_better)


# ---------------------------------------------------------------------------
# How many repeats.


@dataclasses.dataclass(frozen=True)
class RepeatsCurve:
  """How the estimate of the mean settles as repeats grow (Brownlee; statistics.md §1).

  Arrays are `[len(n)]`, one entry per number of repeats n = 2..R.
  """
  n: np.ndarray
  mean: np.ndarray       # mean of the first n finite repeats, in repeat (key) order
  sem: np.ndarray        # their std (ddof=1) / sqrt(n)
  ci_low: np.ndarray     # t-interval of the first-n mean
  ci_high: np.ndarray
  boot_std: np.ndarray   # spread of the mean of n repeats resampled from all R
  boot_low: np.ndarray
  boot_high: np.ndarray
  final_mean: float
  n_diverged: int
  n_resamples: int
  confidence: float
  higher_is_better: bool

  def to_frame(self) -> pd.DataFrame:
    """One row per n."""
    columns = ("n", "mean", "sem", "ci_low", "ci_high", "boot_std", "boot_low", "boot_high")
    frame = pd.DataFrame({c: getattr(self, c) for c in columns})
    frame.attrs.update(final_mean=self.final_mean, n_diverged=self.n_diverged,
                       n_resamples=self.n_resamples, confidence=self.confidence, ddof=DDOF,
                       higher_is_better=self.higher_is_better)
    return frame


def repeats_curve(scores: ArrayLike, *, rng: Rng, n_resamples: int = 1000,
                  confidence: float = 0.95, higher_is_better: bool = False,
                  diverged: ArrayLike | None = None) -> RepeatsCurve:
  """Mean, SEM and bootstrap spread of the mean for the first n = 2..R repeats.

  The bootstrap resamples n repeats from all R finite repeats, the best estimate of the
  repeat distribution at hand, so the spread at small n answers "how far would a mean
  of n repeats land" without being itself a noisy small-sample estimate. Each
  resample row draws R repeats once and its prefixes give every n, which costs
  `n_resamples * R` draws instead of `n_resamples * R² / 2` and keeps the curves smooth.

  Args:
    scores: one config's `[repeat]` scores; repeat order is the key order.
    rng: Generator or int seed for the resampling.
    n_resamples: bootstrap resamples per n.
    confidence: level of the t-interval and of the bootstrap percentile band.
    higher_is_better: recorded for the report; the curve does not depend on it.
    diverged: optional `[repeat]` bool mask.

  Returns:
    A `RepeatsCurve` (empty arrays when fewer than 2 repeats are finite).
  """
  _check_confidence(confidence)
  values, n_diverged = _repeats(scores, diverged)
  gen = _as_generator(rng)
  r = values.size
  n = np.arange(2, r + 1)
  mean = np.cumsum(values)[1:] / n
  # Direct per-n std: exact and O(R²) flops, cheap for the repeat counts we run.
  std = np.array([np.std(values[:k], ddof=DDOF) for k in n])
  sem = std / np.sqrt(n)
  half = _t_half_width(std, n, confidence)
  if r >= 2:
    draws = values[gen.integers(0, r, (n_resamples, r))]
    boot_means = (np.cumsum(draws, axis=1) / np.arange(1, r + 1))[:, 1:]
    alpha = (1 - confidence) / 2
    boot_std = np.std(boot_means, axis=0, ddof=DDOF)
    boot_low, boot_high = np.quantile(boot_means, [alpha, 1 - alpha], axis=0)
  else:
    boot_std = boot_low = boot_high = np.zeros(0)
  return RepeatsCurve(n=n, mean=mean, sem=sem, ci_low=mean - half, ci_high=mean + half,
                      boot_std=boot_std, boot_low=boot_low, boot_high=boot_high,
                      final_mean=float(np.mean(values)) if r else _NAN, n_diverged=n_diverged,
                      n_resamples=n_resamples, confidence=confidence,
                      higher_is_better=higher_is_better)


@dataclasses.dataclass(frozen=True)
class RequiredRepeats:
  """Smallest n whose t-interval half-width meets a target."""
  n: int | float              # NaN when the std cannot be estimated
  half_width: float           # achieved at n
  target: float               # absolute target half-width
  std: float
  mean: float
  n_normal: float             # (z·std/target)², the z-approximation: a lower bound on n
  n_pilot: int
  n_diverged: int
  confidence: float
  higher_is_better: bool

  def to_frame(self) -> pd.DataFrame:
    return _frame({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("confidence", "higher_is_better")},
                  confidence=self.confidence, ddof=DDOF, higher_is_better=self.higher_is_better)


def required_repeats(pilot: ArrayLike | None = None, *, half_width: float, relative: bool = False,
                     std: float | None = None, confidence: float = 0.95,
                     higher_is_better: bool = False, diverged: ArrayLike | None = None,
                     max_repeats: int = 10_000_000) -> RequiredRepeats:
  """Smallest n with t_{(1+c)/2, n-1} · std / √n ≤ target (statistics.md §1).

  The half-width falls monotonically with n, so we start at the z-approximation
  (z·std/target)², which is never above the answer since t > z, and step up with the
  t quantile at n-1 df until the target is met. σ = 10, target 2 gives 99 (z: 96.04).

  Args:
    pilot: `[repeat]` pilot scores giving the std (ddof=1) and, for `relative`, the mean.
    half_width: target half-width; a fraction of |mean| when `relative` (0.05: 5%).
    relative: read `half_width` relative to the pilot mean.
    std: a known std instead of the pilot's.
    confidence: interval level.
    higher_is_better: recorded for the report; n does not depend on it.
    diverged: optional `[repeat]` bool mask of the pilot.
    max_repeats: give up above this n.

  Returns:
    A `RequiredRepeats`; `n` is NaN when the pilot has fewer than 2 finite repeats.

  Raises:
    ValueError: on a non-positive target, no std source, or n above `max_repeats`.
  """
  _check_confidence(confidence)
  if half_width <= 0:
    raise ValueError(f"half_width must be > 0, got {half_width!r}.")
  if pilot is None and (std is None or relative):
    raise ValueError("required_repeats needs a pilot sample, or std= for an absolute half_width.")
  values, n_diverged = _repeats(pilot if pilot is not None else [], diverged, "pilot")
  mean = float(np.mean(values)) if values.size else _NAN
  if std is None:
    std = float(np.std(values, ddof=DDOF)) if values.size >= 2 else _NAN
  target = half_width * abs(mean) if relative else float(half_width)
  z = special.ndtri((1 + confidence) / 2)  # stats.norm.ppf's own kernel, without importing scipy.stats
  n_normal = float((z * std / target) ** 2)
  result = dict(target=target, std=float(std), mean=mean, n_normal=n_normal,
                n_pilot=int(values.size), n_diverged=n_diverged, confidence=confidence,
                higher_is_better=higher_is_better)
  if not (math.isfinite(std) and math.isfinite(target)):
    return RequiredRepeats(n=_NAN, half_width=_NAN, **result)
  if target <= 0:
    raise ValueError(f"target half-width must be > 0, got {target!r} (relative to mean {mean!r}).")
  n = max(2, math.ceil(n_normal))
  while (achieved := float(_t_half_width(std, n, confidence))) > target:
    n += 1
    if n > max_repeats:
      raise ValueError(f"required repeats exceed max_repeats={max_repeats}; loosen half_width.")
  return RequiredRepeats(n=n, half_width=achieved, **result)


# ---------------------------------------------------------------------------
# Two-sample tests.


def _hedges_g(a: np.ndarray, b: np.ndarray) -> float:
  """Hedges' g: Cohen's d with the pooled ddof=1 std, times the exact small-sample factor J.

  J = Γ(df/2) / (√(df/2) Γ((df-1)/2)), df = n_a + n_b - 2 (Hedges 1981); sign is A − B.
  """
  na, nb = a.size, b.size
  if na < 2 or nb < 2:
    return _NAN
  df = na + nb - 2
  pooled = math.sqrt(((na - 1) * np.var(a, ddof=DDOF) + (nb - 1) * np.var(b, ddof=DDOF)) / df)
  if pooled == 0:
    return _NAN
  j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
  return float(j * (np.mean(a) - np.mean(b)) / pooled)


class _PlainResult:
  """A result whose `to_frame()` is its numbers as one row, the direction in the frame's attrs."""

  def to_frame(self) -> pd.DataFrame:
    return _frame({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "higher_is_better"}, higher_is_better=self.higher_is_better)


class _DifferenceResult:
  """A test result built on the mean difference A − B, with a confidence interval of it."""

  @property
  def a_is_better(self) -> bool:
    return _better(self.mean_diff, self.higher_is_better)

  def to_frame(self) -> pd.DataFrame:
    return _frame({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("confidence", "higher_is_better")},
                  confidence=self.confidence, ddof=DDOF, higher_is_better=self.higher_is_better)


@dataclasses.dataclass(frozen=True)
class WelchResult(_DifferenceResult):
  """Welch's unequal-variance t-test of A vs B; difference, t and g are A − B."""
  statistic: float
  df: float
  pvalue: float
  mean_a: float
  mean_b: float
  mean_diff: float
  ci_low: float               # two-sided Welch interval of mean_a - mean_b
  ci_high: float
  hedges_g: float
  n_a: int
  n_b: int
  n_diverged_a: int
  n_diverged_b: int
  alternative: str
  confidence: float
  higher_is_better: bool


def welch_test(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool,
               alternative: Literal["two-sided", "better", "worse"] = "two-sided",
               confidence: float = 0.95) -> WelchResult:
  """Welch's t-test (Colas et al.), not Student's pooled test that Henderson's script runs.

  t = (x̄_a − x̄_b) / √(s_a²/n_a + s_b²/n_b) with Welch–Satterthwaite df; matches
  `scipy.stats.ttest_ind(a, b, equal_var=False)`.

  Args:
    a: `[repeat]` scores of config A; non-finite repeats are dropped and counted.
    b: `[repeat]` scores of config B.
    higher_is_better: direction; "better" means lower for a loss.
    alternative: H1 "two-sided", "better" (A better than B) or "worse".
    confidence: level of the two-sided interval of the difference.

  Returns:
    A `WelchResult`; NaN statistics when a side has fewer than 2 finite repeats or
    both have zero variance.
  """
  _check_confidence(confidence)
  raw = _raw_alternative(alternative, higher_is_better)
  a, da = _repeats(a, what="a")
  b, db = _repeats(b, what="b")
  na, nb = a.size, b.size
  mean_a = float(np.mean(a)) if na else _NAN
  mean_b = float(np.mean(b)) if nb else _NAN
  t = df = p = low = high = _NAN
  if na >= 2 and nb >= 2:
    va, vb = np.var(a, ddof=DDOF) / na, np.var(b, ddof=DDOF) / nb
    se = math.sqrt(va + vb)
    if se > 0:
      df = float((va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
      t = float((mean_a - mean_b) / se)
      # special.stdtr / stdtrit are what scipy.stats.t's sf, cdf and ppf evaluate (bit for
      # bit), without the 0.6-1.4 s import of scipy.stats on the sweep's critical path.
      p = float({"two-sided": 2 * special.stdtr(df, -abs(t)), "greater": special.stdtr(df, -t),
                 "less": special.stdtr(df, t)}[raw])
      half = float(special.stdtrit(df, (1 + confidence) / 2) * se)
      low, high = mean_a - mean_b - half, mean_a - mean_b + half
  return WelchResult(statistic=t, df=df, pvalue=min(p, 1.0) if math.isfinite(p) else p,
                     mean_a=mean_a, mean_b=mean_b, mean_diff=mean_a - mean_b, ci_low=low,
                     ci_high=high, hedges_g=_hedges_g(a, b), n_a=na, n_b=nb, n_diverged_a=da,
                     n_diverged_b=db, alternative=alternative, confidence=confidence,
                     higher_is_better=higher_is_better)


@dataclasses.dataclass(frozen=True)
class MannWhitneyResult(_PlainResult):
  """Mann–Whitney U test of A vs B (scipy's U for A)."""
  statistic: float
  pvalue: float
  prob_better: float          # P(A better than B) + ½P(A = B) = U/(n_a n_b), direction-aware
  n_a: int
  n_b: int
  n_diverged_a: int
  n_diverged_b: int
  alternative: str
  higher_is_better: bool


def mann_whitney(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool,
                 alternative: Literal["two-sided", "better", "worse"] = "two-sided"
                 ) -> MannWhitneyResult:
  """Mann–Whitney U test via `scipy.stats.mannwhitneyu` (method 'auto', tie-corrected).

  Args:
    a: `[repeat]` scores of config A; non-finite repeats are dropped and counted.
    b: `[repeat]` scores of config B.
    higher_is_better: direction; "better" means lower for a loss.
    alternative: H1 "two-sided", "better" (A better than B) or "worse".

  Returns:
    A `MannWhitneyResult`; NaN when either side has no finite repeat.
  """
  raw = _raw_alternative(alternative, higher_is_better)
  a, da = _repeats(a, what="a")
  b, db = _repeats(b, what="b")
  u = p = prob = _NAN
  if a.size and b.size:
    res = stats.mannwhitneyu(a, b, alternative=raw)
    u, p = float(res.statistic), float(res.pvalue)
    prob_greater = u / (a.size * b.size)
    prob = prob_greater if higher_is_better else 1.0 - prob_greater
  return MannWhitneyResult(statistic=u, pvalue=p, prob_better=prob, n_a=a.size, n_b=b.size,
                           n_diverged_a=da, n_diverged_b=db, alternative=alternative,
                           higher_is_better=higher_is_better)


# ---------------------------------------------------------------------------
# Bootstrap.


@dataclasses.dataclass(frozen=True)
class BootstrapCI(_PlainResult):
  """Bootstrap confidence interval of one statistic of one config."""
  statistic: str
  estimate: float
  ci_low: float
  ci_high: float
  standard_error: float       # std (ddof=1) of the bootstrap distribution
  method: str
  n_resamples: int
  n: int
  n_diverged: int
  confidence: float
  higher_is_better: bool


def _bca_levels(values: np.ndarray, func: Callable, theta_hat: float, theta_b: np.ndarray,
                alpha: float) -> tuple[float, float]:
  """BCa quantile levels, written as `scipy.stats.bootstrap` does (Efron & Tibshirani 14.3)."""
  # Bias correction: where theta_hat falls among the resamples, ties counted half.
  share = (np.count_nonzero(theta_b < theta_hat) + np.count_nonzero(theta_b <= theta_hat))
  z0 = special.ndtri(share / (2 * theta_b.size))
  # Acceleration from the jackknife; rows in chunks so n² memory stays bounded.
  n = values.size
  theta_j = []
  for start in range(0, n, max(1, 2**22 // n)):
    rows = np.arange(start, min(n, start + max(1, 2**22 // n)))
    keep = np.arange(n)[None, :] != rows[:, None]
    theta_j.append(func(np.broadcast_to(values, keep.shape)[keep].reshape(rows.size, n - 1),
                        axis=-1))
  theta_j = np.concatenate(theta_j)
  u = (n - 1) * (np.mean(theta_j, keepdims=True) - theta_j)
  a_hat = 1 / 6 * (np.sum(u**3) / n**3) / (np.sum(u**2) / n**2) ** (3 / 2)
  z_alpha = float(special.ndtri(alpha))
  levels = []
  for z in (z_alpha, -z_alpha):
    levels.append(float(special.ndtr(z0 + (z0 + z) / (1 - a_hat * (z0 + z)))))
  return levels[0], levels[1]


def bootstrap_ci(scores: ArrayLike, *, rng: Rng,
                 statistic: Literal["mean", "median", "iqm"] | Callable = "mean",
                 method: Literal["BCa", "percentile", "basic"] = "BCa",
                 confidence: float = 0.95, n_resamples: int = 9999,
                 higher_is_better: bool = False,
                 diverged: ArrayLike | None = None) -> BootstrapCI:
  """Bootstrap CI of a statistic over repeats, the same draws and interval as `scipy.stats.bootstrap`.

  Defaults are scipy's (BCa, 9999 resamples); rliable uses percentile. The method and
  resample count are recorded in the result. Resampling is one `[n_resamples, n]`
  integer draw from `rng`, as scipy makes it, so the same generator state gives the
  same interval as `scipy.stats.bootstrap((x,), stat, method=..., rng=...)`.

  Args:
    scores: one config's `[repeat]` scores; non-finite repeats are dropped and counted.
    rng: Generator or int seed.
    statistic: "mean", "median", "iqm", or a vectorised `f(x, axis=-1)`.
    method: "BCa", "percentile" or "basic" (case-insensitive).
    confidence: two-sided level.
    n_resamples: bootstrap resamples.
    higher_is_better: recorded for the report; the interval does not depend on it.
    diverged: optional `[repeat]` bool mask.

  Returns:
    A `BootstrapCI`; NaN interval with fewer than 2 finite repeats, and the point
    interval [v, v] when all finite repeats are equal (where BCa is undefined).
  """
  _check_confidence(confidence)
  if isinstance(statistic, str):
    if statistic not in _STAT_FUNCS:
      raise ValueError(f"statistic must be one of {sorted(_STAT_FUNCS)} or a callable, got {statistic!r}.")
    func, name = _STAT_FUNCS[statistic], statistic
  else:
    func, name = statistic, getattr(statistic, "__name__", "statistic")
  kind = method.lower()
  if kind not in ("bca", "percentile", "basic"):
    raise ValueError(f"method must be 'BCa', 'percentile' or 'basic', got {method!r}.")
  values, n_diverged = _repeats(scores, diverged)
  gen = _as_generator(rng)
  n = values.size
  result = dict(statistic=name, method=method, n_resamples=n_resamples, n=n,
                n_diverged=n_diverged, confidence=confidence, higher_is_better=higher_is_better)
  if n < 2:
    estimate = float(func(values, axis=-1)) if n else _NAN
    return BootstrapCI(estimate=estimate, ci_low=_NAN, ci_high=_NAN, standard_error=_NAN, **result)
  theta_hat = float(func(values, axis=-1))
  if np.ptp(values) == 0:
    return BootstrapCI(estimate=theta_hat, ci_low=theta_hat, ci_high=theta_hat,
                       standard_error=0.0, **result)
  theta_b = func(values[gen.integers(0, n, (n_resamples, n))], axis=-1)
  alpha = (1 - confidence) / 2
  if kind == "bca":
    levels = _bca_levels(values, func, theta_hat, theta_b, alpha)
  else:
    levels = (alpha, 1 - alpha)
  low, high = (float(q) for q in np.quantile(theta_b, levels))
  if kind == "basic":
    low, high = 2 * theta_hat - high, 2 * theta_hat - low
  return BootstrapCI(estimate=theta_hat, ci_low=low, ci_high=high,
                     standard_error=float(np.std(theta_b, ddof=DDOF)), **result)


@dataclasses.dataclass(frozen=True)
class ProbImprovement(_PlainResult):
  """P(A better than B) + ½P(A = B), averaged over tasks, with a percentile bootstrap CI."""
  prob: float
  ci_low: float
  ci_high: float
  n_a: int
  n_b: int
  n_diverged_a: int
  n_diverged_b: int
  n_tasks: int
  n_resamples: int
  confidence: float
  higher_is_better: bool
  method: str = "percentile"


def _midranks(x: np.ndarray) -> np.ndarray:
  """Ranks from 1 along the last axis, ties given their mean rank: `scipy.stats.rankdata(x, axis=-1)`.

  The same numbers bit for bit (every rank is a half-integer, exact in float64), in
  numpy alone: the sweep's comparisons table then never imports scipy.stats (0.6-1.4 s).
  Inputs are finite (callers drop non-finite repeats first).
  """
  x = np.asarray(x, dtype=float)
  n = x.shape[-1]
  order = np.argsort(x, axis=-1, kind="stable")
  ordered = np.take_along_axis(x, order, axis=-1)
  index = np.broadcast_to(np.arange(n), x.shape)
  starts = np.ones(x.shape, bool)  # where a run of equal values begins
  starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
  ends = np.ones(x.shape, bool)    # where it ends
  ends[..., :-1] = starts[..., 1:]
  first = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
  last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, index, n - 1), -1), axis=-1), -1)
  ranks = np.empty(x.shape, float)
  np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
  return ranks


def _prob_greater(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """P(A > B) + ½P(A = B) from midranks (U / n_a n_b), averaged over tasks.

  Args:
    a: `[..., task, n_a]`.
    b: `[..., task, n_b]`.

  Returns:
    `[...]` probabilities.
  """
  na, nb = a.shape[-1], b.shape[-1]
  ranks = _midranks(np.concatenate([a, b], axis=-1))
  u = ranks[..., :na].sum(axis=-1) - na * (na + 1) / 2
  return (u / (na * nb)).mean(axis=-1)


def _prob_greater_resampled(a: np.ndarray, b: np.ndarray, pick_a: np.ndarray, pick_b: np.ndarray) -> np.ndarray:
  """`_prob_greater(a[pick_a], b[pick_b])` for many resamples, without a sort per resample.

  With a sorted, let `below[p]` count a resample's draws of a among the p smallest
  repeats of a, and `p_j` / `q_j` the places where b_j sorts into a after / before
  its ties. The resample's U, `Σ over drawn b_j of (#{drawn a > b_j} + ½ #{drawn a = b_j})`,
  is then `n_a n_b - ½ Σ_p below[p] · (H[p] + L[p])`, where `H[p]` / `L[p]` count the
  draws of b with `p_j = p` / `q_j = p`: O(n_a + n_b) per resample, not a sort or an
  n_a × n_b product (the comparisons of 3 configs × 1000 repeats: 0.65 → 0.35 s). Every count, product
  and partial sum is a half-integer below 2^52, so the sums are exact in any order and
  equal the midrank sums bit for bit (tests/test_cli_speed.py).

  Args:
    a: `[task, n_a]`; b: `[task, n_b]`.
    pick_a: `[resample, task, n_a]` indices into each task's repeats of a; pick_b likewise.

  Returns:
    `[resample]` probabilities.
  """
  na, nb = a.shape[-1], b.shape[-1]
  order = np.argsort(a, axis=-1, kind="stable")
  place = np.empty_like(order)  # each repeat of a's place in sorted order
  np.put_along_axis(place, order, np.arange(na)[None], axis=-1)
  drawn = _draw_counts(np.take_along_axis(place[None], pick_a, axis=-1), na)  # [task, resample, n_a]
  below = np.concatenate([np.zeros(drawn.shape[:-1] + (1,)), np.cumsum(drawn, axis=-1)], axis=-1)
  sorted_a = np.take_along_axis(a, order, axis=-1)
  after = np.stack([np.searchsorted(s, v, side="right") for s, v in zip(sorted_a, b)])
  before = np.stack([np.searchsorted(s, v, side="left") for s, v in zip(sorted_a, b)])
  # H + L: draws of b by the places after and before their ties in a (the same places where no b ties an a).
  ties = _draw_counts(np.take_along_axis(after[None], pick_b, axis=-1), na + 1)
  ties = 2 * ties if np.array_equal(after, before) else ties + _draw_counts(
      np.take_along_axis(before[None], pick_b, axis=-1), na + 1)
  u = na * nb - 0.5 * np.sum(below * ties, axis=-1)  # [task, resample]
  # [resample, task], contiguous as `_prob_greater`'s: the mean over tasks then sums in the same order.
  return (np.ascontiguousarray(u.T) / (na * nb)).mean(axis=-1)


def _draw_counts(pick: np.ndarray, size: int) -> np.ndarray:
  """`[resample, task, n]` values in [0, size) -> `[task, resample, size]` float64 counts of each value per row."""
  resamples, tasks, n = pick.shape
  rows = pick.transpose(1, 0, 2).reshape(tasks * resamples, n)
  flat = rows + (np.arange(tasks * resamples) * size)[:, None]
  return np.bincount(flat.ravel(), minlength=tasks * resamples * size).reshape(tasks, resamples, size).astype(float)


def _runs_by_task(x: ArrayLike, what: str) -> tuple[np.ndarray, int]:
  """`[repeat]` or `[repeat, task]` -> (`[task, finite repeat]`, n_diverged); a repeat diverges if any task does."""
  x = np.asarray(x, dtype=float)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f"expected {what} of shape [repeat] or [repeat, task], got {x.shape}.")
  finite = np.isfinite(x).all(axis=1)
  return x[finite].T, int(x.shape[0] - finite.sum())


def prob_improvement(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool, rng: Rng,
                     n_resamples: int = 2000, confidence: float = 0.95) -> ProbImprovement:
  """Probability that a run of A beats a run of B (Bouthillier et al.; rliable's PoI).

  The point estimate is `mannwhitneyu(a, b).statistic / (n_a n_b)` for higher-is-better,
  and 1 minus that for lower-is-better; identical samples give exactly 0.5. The CI
  resamples repeats of A and of B independently within each task (rliable's stratified
  independent bootstrap), percentile method.

  Args:
    a: `[repeat]` or `[repeat, task]` scores of A; a seed with any non-finite task is dropped.
    b: `[repeat]` or `[repeat, task]` scores of B, same number of tasks.
    higher_is_better: direction; for a loss, "better" means lower.
    rng: Generator or int seed.
    n_resamples: bootstrap resamples (rliable's profile default, 2000).
    confidence: two-sided level.

  Returns:
    A `ProbImprovement`; NaN when either side has no finite repeat.
  """
  _check_confidence(confidence)
  a, da = _runs_by_task(a, "a")
  b, db = _runs_by_task(b, "b")
  if a.shape[0] != b.shape[0]:
    raise ValueError(f"expected a and b with the same number of tasks, got {a.shape[0]} and {b.shape[0]}.")
  gen = _as_generator(rng)
  tasks, na, nb = a.shape[0], a.shape[1], b.shape[1]
  result = dict(n_a=na, n_b=nb, n_diverged_a=da, n_diverged_b=db, n_tasks=tasks,
                n_resamples=n_resamples, confidence=confidence, higher_is_better=higher_is_better)
  if na == 0 or nb == 0:
    return ProbImprovement(prob=_NAN, ci_low=_NAN, ci_high=_NAN, **result)
  orient = (lambda p: p) if higher_is_better else (lambda p: 1.0 - p)
  prob = float(orient(_prob_greater(a, b)))
  pick_a = gen.integers(0, na, (n_resamples, tasks, na))
  pick_b = gen.integers(0, nb, (n_resamples, tasks, nb))
  alpha = (1 - confidence) / 2
  low, high = np.quantile(orient(_prob_greater_resampled(a, b, pick_a, pick_b)), [alpha, 1 - alpha])
  return ProbImprovement(prob=prob, ci_low=float(low), ci_high=float(high), **result)


# ---------------------------------------------------------------------------
# Paired comparisons (common random numbers).
#
# With common random numbers, repeat i of config A and repeat i of config B share
# their initial weights, data order and dropout masks, so A_i - B_i cancels the
# repeat's own luck and only the configs' difference (plus interaction) is left.
# Every paired function matches repeat i of `a` with repeat i of `b`; a pair where
# either side is non-finite (diverged) is dropped and counted in `n_dropped`.


def _pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
  """Match repeat i of `a` with repeat i of `b`: (a kept, b kept, n_dropped), in repeat order."""
  a, b = np.array(a, dtype=float), np.array(b, dtype=float)
  if a.ndim != 1 or b.ndim != 1:
    raise ValueError(f"expected a and b of shape [repeat], got {a.shape} and {b.shape}.")
  if a.shape != b.shape:
    raise ValueError(
        f"paired comparisons match repeat i of a with repeat i of b, so a and b need the same "
        f"number of repeats; got {a.size} and {b.size}. Pass the same repeats of both configs "
        "(common random numbers), or use an unpaired test (welch_test, mann_whitney).")
  keep = np.isfinite(a) & np.isfinite(b)
  return a[keep], b[keep], int(a.size - keep.sum())


@dataclasses.dataclass(frozen=True)
class PairedTResult(_DifferenceResult):
  """Paired t-test of A vs B over matched repeats; difference, t and d_z are A − B."""
  statistic: float
  df: float
  pvalue: float
  mean_a: float               # over the kept pairs
  mean_b: float
  mean_diff: float            # mean of A_i − B_i
  sd_diff: float              # std (ddof=1) of A_i − B_i
  se_diff: float              # sd_diff / √n_pairs: the paired standard error
  ci_low: float               # two-sided t-interval of mean_diff
  ci_high: float
  cohen_dz: float             # mean_diff / sd_diff (Cohen's d_z)
  n_pairs: int
  n_dropped: int              # pairs with a non-finite side
  alternative: str
  confidence: float
  higher_is_better: bool


def paired_t_test(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool,
                  alternative: Literal["two-sided", "better", "worse"] = "two-sided",
                  confidence: float = 0.95) -> PairedTResult:
  """Paired t-test on A_i − B_i; matches `scipy.stats.ttest_rel(a, b)`.

  t = mean(d) / (sd(d) / √n) with n − 1 df, d = A − B over the kept pairs. As
  scipy: all differences equal and non-zero give t = ±inf, p = 0; all zero give NaN.

  Args:
    a: `[repeat]` scores of config A.
    b: `[repeat]` scores of config B, repeat i paired with A's repeat i.
    higher_is_better: direction; "better" means lower for a loss.
    alternative: H1 "two-sided", "better" (A better than B) or "worse".
    confidence: level of the two-sided interval of the mean difference.

  Returns:
    A `PairedTResult`; NaN statistics with fewer than 2 kept pairs.

  Raises:
    ValueError: if `a` and `b` are not `[repeat]` arrays of the same length.
  """
  _check_confidence(confidence)
  raw = _raw_alternative(alternative, higher_is_better)
  a, b, dropped = _pairs(a, b)
  n = a.size
  d = a - b
  mean_a = float(np.mean(a)) if n else _NAN
  mean_b = float(np.mean(b)) if n else _NAN
  mean_d = float(np.mean(d)) if n else _NAN
  t = df = p = sd = se = low = high = dz = _NAN
  if n >= 2:
    df = float(n - 1)
    sd = float(np.std(d, ddof=DDOF))
    se = sd / math.sqrt(n)
    if sd > 0:
      t, dz = mean_d / se, mean_d / sd
    elif mean_d != 0:
      t = math.copysign(math.inf, mean_d)  # every pair differs by the same amount
    if not math.isnan(t):
      p = float({"two-sided": 2 * stats.t.sf(abs(t), df), "greater": stats.t.sf(t, df),
                 "less": stats.t.cdf(t, df)}[raw])
    half = float(stats.t.ppf((1 + confidence) / 2, df) * se)
    low, high = mean_d - half, mean_d + half
  return PairedTResult(statistic=t, df=df, pvalue=min(p, 1.0) if math.isfinite(p) else p,
                       mean_a=mean_a, mean_b=mean_b, mean_diff=mean_d, sd_diff=sd, se_diff=se,
                       ci_low=low, ci_high=high, cohen_dz=dz, n_pairs=n, n_dropped=dropped,
                       alternative=alternative, confidence=confidence,
                       higher_is_better=higher_is_better)


@dataclasses.dataclass(frozen=True)
class WilcoxonResult(_PlainResult):
  """Wilcoxon signed-rank test of A vs B over matched repeats (scipy's statistic and p)."""
  statistic: float            # scipy's: min(W+, W−) two-sided, W+ one-sided
  pvalue: float
  w_plus: float               # rank sum of the pairs with A_i > B_i (zero differences dropped)
  w_minus: float              # rank sum of the pairs with A_i < B_i
  rank_biserial: float        # (W+ − W−) / (W+ + W−): matched-pairs effect size, sign A − B
  n_pairs: int                # kept pairs, zero differences included
  n_zero: int                 # pairs with A_i == B_i (left out of the ranks, scipy's "wilcox")
  n_dropped: int              # pairs with a non-finite side
  alternative: str
  higher_is_better: bool


def wilcoxon_signed_rank(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool,
                         alternative: Literal["two-sided", "better", "worse"] = "two-sided"
                         ) -> WilcoxonResult:
  """Wilcoxon signed-rank test via `scipy.stats.wilcoxon(a, b)` with scipy's defaults.

  scipy's defaults: zero differences are dropped before ranking (`zero_method="wilcox"`),
  no continuity correction, `method="auto"` (exact for small samples without ties or
  zeros, else the normal approximation). Ties in |A_i − B_i| share their mean rank.

  Args:
    a: `[repeat]` scores of config A.
    b: `[repeat]` scores of config B, repeat i paired with A's repeat i.
    higher_is_better: direction; "better" means lower for a loss.
    alternative: H1 "two-sided", "better" (A better than B) or "worse".

  Returns:
    A `WilcoxonResult`; NaN when no pair is kept.

  Raises:
    ValueError: if `a` and `b` are not `[repeat]` arrays of the same length.
  """
  raw = _raw_alternative(alternative, higher_is_better)
  a, b, dropped = _pairs(a, b)
  d = a - b
  nonzero = d[d != 0]
  w_plus = w_minus = rbc = w = p = _NAN
  if nonzero.size:
    ranks = stats.rankdata(np.abs(nonzero))
    w_plus, w_minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    rbc = (w_plus - w_minus) / (w_plus + w_minus)
  if d.size:
    res = stats.wilcoxon(a, b, alternative=raw)
    w, p = float(res.statistic), float(res.pvalue)
  return WilcoxonResult(statistic=w, pvalue=p, w_plus=w_plus, w_minus=w_minus,
                        rank_biserial=rbc, n_pairs=int(d.size), n_zero=int(d.size - nonzero.size),
                        n_dropped=dropped, alternative=alternative,
                        higher_is_better=higher_is_better)


@dataclasses.dataclass(frozen=True)
class PairedProbImprovement(_PlainResult):
  """Share of matched repeats where A beats B (ties ½), with a percentile bootstrap CI over pairs."""
  prob: float
  ci_low: float
  ci_high: float
  n_pairs: int
  n_ties: int
  n_dropped: int
  n_resamples: int
  confidence: float
  higher_is_better: bool
  method: str = "percentile"


def prob_improvement_paired(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool, rng: Rng,
                            n_resamples: int = 2000, confidence: float = 0.95
                            ) -> PairedProbImprovement:
  """P(A better than B) over matched repeats: mean of [A_i better than B_i] + ½[A_i = B_i].

  Unlike `prob_improvement` (every run of A against every run of B), this asks how
  often A wins on the same repeat. The CI resamples pairs with replacement (one
  `[n_resamples, n]` draw from `rng`), percentile method.

  Args:
    a: `[repeat]` scores of config A.
    b: `[repeat]` scores of config B, repeat i paired with A's repeat i.
    higher_is_better: direction; for a loss, "better" means lower.
    rng: Generator or int seed.
    n_resamples: bootstrap resamples.
    confidence: two-sided level.

  Returns:
    A `PairedProbImprovement`; NaN when no pair is kept.

  Raises:
    ValueError: if `a` and `b` are not `[repeat]` arrays of the same length.
  """
  _check_confidence(confidence)
  a, b, dropped = _pairs(a, b)
  gen = _as_generator(rng)
  n = a.size
  wins = np.where(a == b, 0.5, (a > b) if higher_is_better else (a < b)).astype(float)
  result = dict(n_pairs=n, n_ties=int(np.count_nonzero(a == b)), n_dropped=dropped,
                n_resamples=n_resamples, confidence=confidence, higher_is_better=higher_is_better)
  if n == 0:
    return PairedProbImprovement(prob=_NAN, ci_low=_NAN, ci_high=_NAN, **result)
  boot = wins[gen.integers(0, n, (n_resamples, n))].mean(axis=1)
  alpha = (1 - confidence) / 2
  low, high = np.quantile(boot, [alpha, 1 - alpha])
  return PairedProbImprovement(prob=float(wins.mean()), ci_low=float(low), ci_high=float(high),
                               **result)


@dataclasses.dataclass(frozen=True)
class DifferenceSE:
  """Standard error of mean(A) − mean(B), paired and unpaired, on the same kept pairs.

  `variance_reduction` is what pairing bought: the share of the unpaired variance
  of the difference that the shared repeat removed (0: none; negative: pairing hurt).
  `1 / se_ratio²` unpaired repeats per config would give the paired precision.
  """
  se_paired: float            # sd(A − B) / √n
  se_unpaired: float          # √(s_A²/n + s_B²/n), Welch's standard error
  se_ratio: float             # se_paired / se_unpaired
  variance_reduction: float   # 1 − se_ratio²
  correlation: float          # Pearson r of A_i and B_i over the pairs
  n_pairs: int
  n_dropped: int

  def to_frame(self) -> pd.DataFrame:
    return _frame({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, ddof=DDOF)


def se_difference(a: ArrayLike, b: ArrayLike) -> DifferenceSE:
  """Standard error of the mean difference with pairing and without, and the ratio.

  Both use the same kept pairs, so the ratio measures pairing alone:
  se_paired² = se_unpaired² − 2·cov(A, B)/n.

  Args:
    a: `[repeat]` scores of config A.
    b: `[repeat]` scores of config B, repeat i paired with A's repeat i.

  Returns:
    A `DifferenceSE`; NaN with fewer than 2 kept pairs (and ratios NaN when the
    unpaired standard error is 0).

  Raises:
    ValueError: if `a` and `b` are not `[repeat]` arrays of the same length.
  """
  a, b, dropped = _pairs(a, b)
  n = a.size
  paired = unpaired = ratio = reduction = corr = _NAN
  if n >= 2:
    paired = float(np.std(a - b, ddof=DDOF)) / math.sqrt(n)
    unpaired = math.sqrt((np.var(a, ddof=DDOF) + np.var(b, ddof=DDOF)) / n)
    if unpaired > 0:
      ratio = paired / unpaired
      reduction = 1.0 - ratio**2
    if np.std(a) > 0 and np.std(b) > 0:
      corr = float(np.corrcoef(a, b)[0, 1])
  return DifferenceSE(se_paired=paired, se_unpaired=unpaired, se_ratio=ratio,
                      variance_reduction=reduction, correlation=corr, n_pairs=n,
                      n_dropped=dropped)


# ---------------------------------------------------------------------------
# Many configs.


def holm(pvalues: ArrayLike) -> np.ndarray:
  """Holm–Bonferroni step-down adjusted p-values, in input order.

  Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) p_(j)); as
  statsmodels' `multipletests(method="holm")`. NaN entries stay NaN and do not count in m.

  Args:
    pvalues: `[tests]` raw p-values.

  Returns:
    `[tests]` adjusted p-values.
  """
  p = np.asarray(pvalues, dtype=float)
  if p.ndim != 1:
    raise ValueError(f"expected pvalues of shape [tests], got {p.shape}.")
  adjusted = np.full_like(p, np.nan)
  finite = np.flatnonzero(np.isfinite(p))
  m = finite.size
  order = finite[np.argsort(p[finite], kind="stable")]
  steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
  adjusted[order] = np.maximum.accumulate(steps)
  return adjusted


@dataclasses.dataclass(frozen=True)
class PairComparison:
  """A vs B: effect size, raw and Holm p, P(A better than B) and a verdict."""
  a: Hashable
  b: Hashable
  n_a: int
  n_b: int
  n_diverged_a: int
  n_diverged_b: int
  mean_a: float
  mean_b: float
  mean_diff: float            # mean_a - mean_b
  hedges_g: float             # A − B, pooled ddof=1 std, exact small-sample correction
  statistic: float            # Welch t, or Mann–Whitney U for A
  pvalue: float
  pvalue_holm: float
  prob_better: float          # P(A better than B) + ½P(A = B)
  prob_low: float
  prob_high: float
  verdict: str


@dataclasses.dataclass(frozen=True)
class PairedComparison(PairComparison):
  """A vs B over matched repeats: `PairComparison`'s columns, then what pairing adds.

  Inherited columns read over the kept pairs: n_a = n_b = n_pairs, the means are
  of the kept pairs, `statistic` is the paired t or Wilcoxon's statistic, and
  `prob_better` is the share of pairs A wins (`prob_improvement_paired`).
  """
  n_pairs: int
  n_dropped: int              # pairs dropped because a side diverged or is non-finite
  cohen_dz: float             # mean(A − B) / sd(A − B)
  se_paired: float            # standard error of mean_diff with pairing
  se_unpaired: float          # the same without (Welch), on the same pairs
  se_ratio: float             # se_paired / se_unpaired: below 1 when pairing helps


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Pairwise comparisons of configs with Holm correction over all listed pairs."""
  pairs: tuple[PairComparison, ...]
  against: Hashable
  test: str
  alpha: float
  n_resamples: int
  confidence: float
  higher_is_better: bool
  paired: bool = False

  def to_frame(self) -> pd.DataFrame:
    """One row per pair."""
    row_type = PairedComparison if self.paired else PairComparison
    frame = pd.DataFrame([dataclasses.asdict(p) for p in self.pairs],
                         columns=[f.name for f in dataclasses.fields(row_type)])
    frame.attrs.update(against=self.against, test=self.test, alpha=self.alpha,
                       correction="holm", n_resamples=self.n_resamples,
                       confidence=self.confidence, ddof=DDOF,
                       higher_is_better=self.higher_is_better)
    if self.paired:
      frame.attrs["paired"] = True
    return frame


def _verdict(a: Hashable, b: Hashable, a_better: bool, p_holm: float, alpha: float,
             n_a: int, n_b: int) -> str:
  if not math.isfinite(p_holm):
    return f"not enough finite repeats to compare (n_a={n_a}, n_b={n_b})"
  if p_holm < alpha:
    better, worse = (a, b) if a_better else (b, a)
    return f"{better} is better than {worse} (p={p_holm:.3g}, Holm)"
  return f"no significant difference (p={p_holm:.3g}, Holm)"


def _paired_verdict(a: Hashable, b: Hashable, a_better: bool, p_holm: float, alpha: float,
                    n_pairs: int, n_dropped: int) -> str:
  if n_pairs < 2:
    return f"not enough finite pairs to compare (n_pairs={n_pairs}, n_dropped={n_dropped})"
  if not math.isfinite(p_holm):
    return f"no difference: {a} and {b} are equal on all {n_pairs} pairs"
  return _verdict(a, b, a_better, p_holm, alpha, n_pairs, n_pairs)


_UNPAIRED_TESTS = ("welch", "mann_whitney")
_PAIRED_TESTS = ("paired_t", "wilcoxon")


def _pair_row(va: np.ndarray, vb: np.ndarray, test: str, higher_is_better: bool,
              gen: np.random.Generator, n_resamples: int, confidence: float) -> dict:
  """Unpaired comparison numbers of finite `va` `[repeats_a]` and `vb` `[repeats_b]`."""
  welch = welch_test(va, vb, higher_is_better=higher_is_better)
  enough = va.size >= 2 and vb.size >= 2
  if test == "welch":
    stat, p, raw_sign = welch.statistic, welch.pvalue, welch.statistic
  else:
    mw = mann_whitney(va, vb, higher_is_better=higher_is_better)
    stat, p = mw.statistic, (mw.pvalue if enough else _NAN)
    raw_sign = stat - va.size * vb.size / 2
  poi = prob_improvement(va, vb, higher_is_better=higher_is_better, rng=gen,
                         n_resamples=n_resamples, confidence=confidence)
  return dict(n_a=va.size, n_b=vb.size, mean_a=welch.mean_a, mean_b=welch.mean_b,
              mean_diff=welch.mean_diff, hedges_g=welch.hedges_g, statistic=stat, pvalue=p,
              a_better=_better(raw_sign, higher_is_better), prob_better=poi.prob,
              prob_low=poi.ci_low, prob_high=poi.ci_high)


def _paired_row(ra: np.ndarray, rb: np.ndarray, test: str, higher_is_better: bool,
                gen: np.random.Generator, n_resamples: int, confidence: float) -> dict:
  """Paired comparison numbers of `ra` and `rb` `[repeat]`, NaN where a repeat diverged."""
  ttest = paired_t_test(ra, rb, higher_is_better=higher_is_better)
  if test == "paired_t":
    stat, p, raw_sign = ttest.statistic, ttest.pvalue, ttest.mean_diff
  else:
    wil = wilcoxon_signed_rank(ra, rb, higher_is_better=higher_is_better)
    stat, p = wil.statistic, (wil.pvalue if wil.n_pairs >= 2 else _NAN)
    raw_sign = wil.w_plus - wil.w_minus
  se = se_difference(ra, rb)
  poi = prob_improvement_paired(ra, rb, higher_is_better=higher_is_better, rng=gen,
                                n_resamples=n_resamples, confidence=confidence)
  ka, kb, _ = _pairs(ra, rb)
  return dict(n_a=ttest.n_pairs, n_b=ttest.n_pairs, mean_a=ttest.mean_a, mean_b=ttest.mean_b,
              mean_diff=ttest.mean_diff, hedges_g=_hedges_g(ka, kb), statistic=stat, pvalue=p,
              a_better=_better(raw_sign, higher_is_better), prob_better=poi.prob,
              prob_low=poi.ci_low, prob_high=poi.ci_high, n_pairs=ttest.n_pairs,
              n_dropped=ttest.n_dropped, cohen_dz=ttest.cohen_dz, se_paired=se.se_paired,
              se_unpaired=se.se_unpaired, se_ratio=se.se_ratio)


def _check_test(test: str | None, paired: bool, alpha: float) -> str:
  """The test `compare_configs` runs (its default for `paired`), or ValueError naming the fix."""
  tests = _PAIRED_TESTS if paired else _UNPAIRED_TESTS
  if test is None:
    test = tests[0]
  if test not in tests:
    other = "paired=True" if test in _PAIRED_TESTS else "paired=False"
    hint = f" ({test!r} needs {other})" if test in _PAIRED_TESTS + _UNPAIRED_TESTS else ""
    raise ValueError(f"test must be {tests[0]!r} or {tests[1]!r} with paired={paired}, "
                     f"got {test!r}{hint}.")
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
  return test


def _pairs_against(configs: Mapping, against: Hashable, higher_is_better: bool) -> list[tuple]:
  """The (A, B) pairs `compare_configs` tests for `against` ("all", "best" or a config name)."""
  names = list(configs)
  if against == "all":
    return [(x, y) for i, x in enumerate(names) for y in names[i + 1:]]
  if against == "best":
    best = summarize({k: v for k, (v, _) in configs.items()}, higher_is_better=higher_is_better).best
    if best is None:
      raise ValueError("no config has a finite mean, so none is best.")
    return [(best, y) for y in names if y != best]
  if against in configs:
    return [(x, against) for x in names if x != against]
  raise ValueError(f"against must be 'all', 'best' or a config name {names}, got {against!r}.")


def compare_configs(scores: ConfigScores, *, higher_is_better: bool, rng: Rng,
                    against: Hashable = "all",
                    test: Literal["welch", "mann_whitney", "paired_t", "wilcoxon"] | None = None,
                    alpha: float = 0.05, n_resamples: int = 2000, confidence: float = 0.95,
                    diverged: ArrayLike | Mapping | None = None,
                    paired: bool = False) -> Comparison:
  """Compare configs pairwise: effect size, raw and Holm p-values, P(A better than B), verdict.

  Holm's correction runs over all pairs of this call (multiple-testing control is on
  by default for grid sweeps). The verdict reads "A is better than B (p=…, Holm)" or
  "no significant difference (p=…, Holm)", in the metric's direction.

  With `paired=True` (common random numbers: repeat i of every config shares its
  initial weights, data order and dropout masks), repeat i of A is matched with repeat
  i of B: a pair where either side diverged or is non-finite is dropped and counted
  (`n_dropped`), the test is on the differences and P(A better than B) is the share
  of pairs A wins. Rows are `PairedComparison`s, which add d_z and the paired and
  unpaired standard errors of the difference.

  Args:
    scores: `{config: [repeat]}`, a wide DataFrame (rows configs) or `[config, repeat]`.
    higher_is_better: direction; for a loss, "better" means lower.
    rng: Generator or int seed for the P(A better than B) intervals.
    against: "all" (every pair, input order), "best" (the config with the best
      mean vs each other, best as A), or a config name (each other config as A vs it).
    test: unpaired "welch" (Welch's t-test, the default) or "mann_whitney"
      (two-sided); paired "paired_t" (the default with `paired=True`) or "wilcoxon"
      (signed-rank, scipy's defaults).
    alpha: family-wise error rate for the verdict.
    n_resamples: bootstrap resamples per P(A better than B) interval.
    confidence: level of those intervals.
    diverged: optional mask, shaped like `scores`.
    paired: match repeats by index (every config needs the same number of repeats).

  Returns:
    A `Comparison`; pairs with a config of fewer than 2 finite repeats (paired: fewer
    than 2 kept pairs, or all pairs equal under the t-test) get NaN p-values, stay
    out of Holm's family and say so in the verdict.

  Raises:
    ValueError: on an unknown `against`/`test`, a test of the other kind than
      `paired`, "best" when no config has a finite mean, or (paired) configs with
      different numbers of repeats.
  """
  test = _check_test(test, paired, alpha)
  raw = _raw_configs(scores, diverged)
  configs = {name: _repeats(row) for name, row in raw.items()}
  if paired and len({row.size for row in raw.values()}) > 1:
    sizes = {name: row.size for name, row in raw.items()}
    raise ValueError(
        f"paired=True matches repeat i of every config, so every config needs the same number "
        f"of repeats; got {sizes}. Compare configs run with the same repeats, or pass paired=False.")
  gen = _as_generator(rng)
  rows = []
  for x, y in _pairs_against(configs, against, higher_is_better):
    (va, da), (vb, db) = configs[x], configs[y]
    if paired:
      numbers = _paired_row(raw[x], raw[y], test, higher_is_better, gen, n_resamples, confidence)
    else:
      numbers = _pair_row(va, vb, test, higher_is_better, gen, n_resamples, confidence)
    rows.append(dict(a=x, b=y, n_diverged_a=da, n_diverged_b=db, **numbers))
  adjusted = holm([r["pvalue"] for r in rows]) if rows else np.zeros(0)
  out = []
  for row, p_holm in zip(rows, adjusted):
    a_better = row.pop("a_better")
    if paired:
      verdict = _paired_verdict(row["a"], row["b"], a_better, p_holm, alpha, row["n_pairs"],
                                row["n_dropped"])
      out.append(PairedComparison(**row, pvalue_holm=float(p_holm), verdict=verdict))
    else:
      verdict = _verdict(row["a"], row["b"], a_better, p_holm, alpha, row["n_a"], row["n_b"])
      out.append(PairComparison(**row, pvalue_holm=float(p_holm), verdict=verdict))
  return Comparison(pairs=tuple(out), against=against, test=test, alpha=alpha,
                    n_resamples=n_resamples, confidence=confidence,
                    higher_is_better=higher_is_better, paired=paired)
