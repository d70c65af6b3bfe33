"""Racing over repeats: train every config a little, drop the clearly worse, extend the rest.

A race trains every config with `initial` repeats, then runs a *look*: configs that a
Holm-corrected Welch test shows worse than another config are eliminated. Survivors
get more repeats (`schedule`: 5, 10, 20, 30 by default) and the next look runs on all
their repeats so far, until every survivor has `total` repeats. Repeat i of a config is
the same run whatever the round (keys are `fold_in(seed, i)`), so a survivor's scores
are exactly those of a plain run with `total` repeats; only eliminated configs stop early.

Error control (the family-wise type I error over the whole race):
* **Within a look**, every pair of surviving configs gets a two-sided Welch test and
  Holm's step-down runs over all k(k−1)/2 pairs; a config is eliminated when it is the
  worse side (by mean) of a pair significant at the look's level. Any elimination is
  then a Holm rejection, so a look wrongly eliminates anything with probability at
  most its level, whatever the configs' true means. (Testing only "each vs the best"
  with Holm over k−1 tests is not valid: the best is chosen from the same data, which
  inflates its differences. Simulated, 10 equal normal configs, one look at α = 0.05:
  0.077 with 5 repeats and 0.118 with 10, against 0.025 and 0.027 over all pairs.)
* **Across looks**, the repeated looks at accumulating data are paid for by
  Bonferroni alpha spending: each of the L looks (`len(schedule) − 1`: no look after the
  last round, where eliminating saves nothing) runs at α / L. The union bound holds for
  any dependence between looks (overlapping repeats, unequal variances, non-normal
  scores), so the race's family-wise error is ≤ α without simulation-calibrated
  boundaries; the price is some conservatism. Simulated, 2000 races of equal normal
  configs, α = 0.05, 30 repeats from 5: the share of races eliminating anything is
  0.032 (4 configs, 5/10/20/30), 0.027 (4 configs, 5/10/.../30), 0.022 (2 configs,
  5/10/.../30), 0.027 (8 configs, 5/10/20/30); every look at the full α instead gives
  0.084, 0.117, 0.135, 0.079. tests/test_racing.py reruns a smaller version.

Diverged repeats (NaN/±inf, or flagged by the `diverged` mask) are failures, twice over:
* for the test, each is scored as the worst finite score of that look (over all
  surviving configs' repeats), so a config that diverges often ranks low;
* a config with more than `MAX_DIVERGED` (half) of its repeats diverged is dropped
  outright, unless it is the best of the look. This is a fixed quality bar, not a test
  (with 5 repeats, 4 diverged against 0 is not significant, but such a config is useless);
  equal configs that never diverge never meet it, so the error control above is untouched.
  `jaxlstm.search.objective` uses the same bar.
The reported scores keep NaN there and `stats` counts them as diverged (excluded from
means), as everywhere else. A look with no finite score eliminates nothing.

Numpy/scipy only (through `jaxlstm.stats`); never imports jax.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jaxlstm import stats
from jaxlstm.config import ConfigError

# A config whose repeats diverged in more than this share is a failed config (racing, search).
MAX_DIVERGED = 0.5

# evaluate(config_ids, repeats) -> {id: scores} or {id: (scores, diverged)}, one entry per id,
# `len(repeats)` scores each, repeat i of the range being repeat i of a plain run.
Evaluate = Callable[[tuple[Hashable, ...], range], Mapping[Hashable, Any]]


def schedule(initial: int, total: int, growth: str | float = "double") -> tuple[int, ...]:
  """Repeats per config after each round: strictly increasing, ending at `total`.

  Args:
    initial: repeats of the first round (>= 2: a test needs a spread).
    total: repeats of a plain run; the last round brings survivors to it.
    growth: "double" (5, 10, 20, 30), "linear" (5, 10, 15, ..., 30), or a
      factor > 1 (1.5: 5, 8, 12, 18, 27, 30).

  Raises:
    ConfigError: on initial < 2, total < initial or an unknown growth.
  """
  for name, value in (("initial", initial), ("total", total)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ConfigError(f"race {name} = {value!r} is not allowed: expected an integer.")
  if initial < 2:
    raise ConfigError(f"race initial = {initial!r} is not allowed: a look compares spreads, "
                      "so start with at least 2 repeats (5 is a good start).")
  if total < initial:
    raise ConfigError(f"race total = {total!r} is not allowed: expected at least initial = {initial} "
                      "repeats; raise --repeats or lower the first round.")
  if growth == "double":
    factor = 2.0
  elif growth == "linear":
    factor = None
  elif isinstance(growth, (int, float)) and not isinstance(growth, bool) and growth > 1:
    factor = float(growth)
  else:
    raise ConfigError(f"race growth = {growth!r} is not allowed: expected 'double', 'linear' "
                      "or a factor > 1.")
  steps = [int(initial)]
  while steps[-1] < total:
    nxt = steps[-1] + initial if factor is None else math.ceil(steps[-1] * factor)
    steps.append(min(max(nxt, steps[-1] + 1), int(total)))
  return tuple(steps)


@dataclasses.dataclass(frozen=True)
class RoundResult:
  """One look of a race.

  Attributes:
    round_index, n_rounds: this look's index (0-based) among the race's looks.
    alpha: the level this look ran at (the race's α / n_rounds).
    best: the config with the best mean (diverged repeats scored as `fill_value`),
      None when no score is finite.
    eliminated: configs dropped at this look, in input order.
    survivors: configs kept, in input order.
    means: each config's mean as the test saw it.
    n_diverged: each config's diverged repeats.
    pvalues: each config's smallest Holm-adjusted p-value over the pairs it loses
      (by mean); NaN for a config that loses no pair (the best) or cannot be tested.
    beaten_by: the opponent of that pair (None for the best).
    fill_value: the score diverged repeats were given (NaN when none diverged).
    reasons: why each eliminated config went: "worse than B (p=…, Holm, level …)" or
      "diverged in 4/5 repeats (> 50%)".
  """
  round_index: int
  n_rounds: int
  alpha: float
  best: Hashable | None
  eliminated: tuple
  survivors: tuple
  means: Mapping[Hashable, float]
  n_diverged: Mapping[Hashable, int]
  pvalues: Mapping[Hashable, float]
  beaten_by: Mapping[Hashable, Hashable | None]
  fill_value: float
  reasons: Mapping[Hashable, str] = dataclasses.field(default_factory=dict)

  def to_frame(self) -> pd.DataFrame:
    """One row per config: mean, n_diverged, p-value, beaten_by, eliminated."""
    rows = [{"config": c, "mean": self.means[c], "n_diverged": self.n_diverged[c],
             "pvalue_holm": self.pvalues[c], "beaten_by": self.beaten_by[c],
             "eliminated": c in self.eliminated, "reason": self.reasons.get(c)} for c in self.means]
    frame = pd.DataFrame(rows).set_index("config")
    frame.attrs.update(round_index=self.round_index, n_rounds=self.n_rounds, alpha=self.alpha,
                       best=self.best, correction="holm over all pairs, alpha / n_rounds per look")
    return frame


def _validate_scores(scores: Mapping, diverged: Mapping | None) -> dict[Hashable, np.ndarray]:
  if not isinstance(scores, Mapping) or not scores:
    raise ValueError("race_round needs scores as a non-empty mapping {config: [repeat] scores}.")
  if diverged is not None and not isinstance(diverged, Mapping):
    raise ValueError("expected diverged as a mapping {config: [repeat] mask} like scores.")
  masked = {}
  for config, values in scores.items():
    values = np.array(values, dtype=float)
    if values.ndim != 1 or values.size < 2:
      raise ValueError(f"scores[{config!r}] must be [repeat] with at least 2 repeats, "
                       f"got shape {values.shape}.")
    mask = None if diverged is None else diverged.get(config)
    if mask is not None:
      mask = np.asarray(mask, dtype=bool)
      if mask.shape != values.shape:
        raise ValueError(f"diverged[{config!r}] has shape {mask.shape}, scores {values.shape}.")
      values[mask] = np.nan
    values[~np.isfinite(values)] = np.nan
    masked[config] = values
  return masked


def race_round(scores: Mapping[Hashable, np.ndarray], *, higher_is_better: bool,
               alpha: float = 0.05, round_index: int = 0, n_rounds: int = 1,
               diverged: Mapping[Hashable, np.ndarray] | None = None,
               max_diverged: float = MAX_DIVERGED) -> RoundResult:
  """Decide one look: which configs are significantly worse than another, or failed.

  Pure: the same scores give the same decision. Holm runs over all pairs at
  level alpha / n_rounds (see the module docstring for why both); a config other
  than the best with more than `max_diverged` of its repeats diverged goes too.

  Args:
    scores: `{config: [repeat]}` all repeats so far of each surviving config.
    higher_is_better: direction (False: a loss).
    alpha: the race's family-wise error rate.
    round_index: this look's index, 0 <= round_index < n_rounds.
    n_rounds: how many looks the race makes in all (`len(schedule) - 1`).
    diverged: optional `{config: [repeat] bool}`; non-finite scores count as diverged too.
    max_diverged: the diverged share above which a config is dropped (1 disables).

  Returns:
    A `RoundResult`.

  Raises:
    ValueError: on alpha outside (0, 1), a bad round index or scores with < 2 repeats.
  """
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
  if not 0 <= max_diverged <= 1:
    raise ValueError(f"max_diverged must be a share in [0, 1], got {max_diverged!r}.")
  if not (isinstance(n_rounds, int) and n_rounds >= 1 and isinstance(round_index, int)
          and 0 <= round_index < n_rounds):
    raise ValueError(f"expected 0 <= round_index < n_rounds, got round_index={round_index!r}, "
                     f"n_rounds={n_rounds!r}.")
  values = _validate_scores(scores, diverged)
  configs = list(values)
  level = alpha / n_rounds
  n_diverged = {c: int(np.isnan(v).sum()) for c, v in values.items()}
  finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
  no_result = {c: math.nan for c in configs}  # nothing finite: no test, no best, no bar
  if not finite.size:
    return RoundResult(round_index, n_rounds, level, None, (), tuple(configs), no_result,
                       n_diverged, no_result, {c: None for c in configs}, math.nan)
  # A diverged repeat is a failure: as bad as the worst finite score of this look.
  fill = float(finite.min() if higher_is_better else finite.max())
  filled = {c: np.where(np.isnan(v), fill, v) for c, v in values.items()}
  means = {c: float(np.mean(v)) for c, v in filled.items()}
  pick = max if higher_is_better else min
  best = pick(configs, key=lambda c: means[c])  # first of equals, in input order

  pairs = [(a, b) for i, a in enumerate(configs) for b in configs[i + 1:]]
  raw = [stats.welch_test(filled[a], filled[b], higher_is_better=higher_is_better).pvalue
         for a, b in pairs]
  adjusted = stats.holm(raw) if pairs else np.zeros(0)
  pvalues: dict[Hashable, float] = {c: math.nan for c in configs}
  beaten_by: dict[Hashable, Hashable | None] = {c: None for c in configs}
  for (a, b), p in zip(pairs, adjusted):
    if not math.isfinite(p) or means[a] == means[b]:
      continue
    a_better = means[a] > means[b] if higher_is_better else means[a] < means[b]
    loser, winner = (b, a) if a_better else (a, b)
    if math.isnan(pvalues[loser]) or p < pvalues[loser]:
      pvalues[loser], beaten_by[loser] = float(p), winner
  reasons = {}
  for c in configs:
    n = values[c].size
    if c != best and n_diverged[c] > max_diverged * n:
      reasons[c] = f"diverged in {n_diverged[c]}/{n} repeats (> {max_diverged:.0%})"
    elif pvalues[c] < level:
      reasons[c] = f"worse than {beaten_by[c]} (p={pvalues[c]:.3g}, Holm, level {level:.3g})"
  eliminated = tuple(c for c in configs if c in reasons)
  survivors = tuple(c for c in configs if c not in reasons)
  return RoundResult(round_index=round_index, n_rounds=n_rounds, alpha=level, best=best,
                     eliminated=eliminated, survivors=survivors, means=means,
                     n_diverged=n_diverged, pvalues=pvalues, beaten_by=beaten_by,
                     fill_value=fill if any(n_diverged.values()) else math.nan, reasons=reasons)


@dataclasses.dataclass(frozen=True)
class ConfigRace:
  """One config's race.

  Attributes:
    config: its id.
    scores: `[repeats]` every score it got (NaN where a repeat diverged).
    diverged: `[repeats]` bool.
    eliminated_round: index of the look that dropped it, None for a survivor.
    pvalue: its smallest Holm-adjusted p-value at that look (NaN for a survivor).
    beaten_by: the config of that p-value (None for a survivor).
    reason: why it was dropped (`RoundResult.reasons`), None for a survivor.
  """
  config: Hashable
  scores: np.ndarray
  diverged: np.ndarray
  eliminated_round: int | None
  pvalue: float
  beaten_by: Hashable | None
  reason: str | None = None

  @property
  def repeats(self) -> int:
    return int(self.scores.size)


@dataclasses.dataclass(frozen=True)
class RaceResult:
  """A whole race: per-config outcome, each look, and the fits it saved.

  Attributes:
    configs: per config, in input order.
    rounds: each look's decision.
    schedule: repeats per round.
    alpha: the race's family-wise error rate.
    total: repeats of a plain run.
    higher_is_better: direction.
  """
  configs: tuple[ConfigRace, ...]
  rounds: tuple[RoundResult, ...]
  schedule: tuple[int, ...]
  alpha: float
  total: int
  higher_is_better: bool

  def __getitem__(self, config: Hashable) -> ConfigRace:
    for entry in self.configs:
      if entry.config == config:
        return entry
    raise KeyError(f"Unknown config {config!r}.")

  @property
  def survivors(self) -> tuple:
    return tuple(c.config for c in self.configs if c.eliminated_round is None)

  @property
  def fits(self) -> int:
    """Training runs the race used (repeats over all configs)."""
    return sum(c.repeats for c in self.configs)

  @property
  def plain_fits(self) -> int:
    """Training runs of a plain run: every config x `total` repeats."""
    return len(self.configs) * self.total

  @property
  def fits_saved(self) -> int:
    return self.plain_fits - self.fits

  def to_frame(self) -> pd.DataFrame:
    """One row per config: repeats used, elimination round, the p-value and opponent."""
    frame = pd.DataFrame([{"config": c.config, "repeats": c.repeats,
                           "n_diverged": int(c.diverged.sum()),
                           "eliminated_round": c.eliminated_round, "pvalue_holm": c.pvalue,
                           "beaten_by": c.beaten_by, "reason": c.reason}
                          for c in self.configs]).set_index("config")
    frame["eliminated_round"] = frame["eliminated_round"].astype("Int64")
    frame.attrs.update(schedule=list(self.schedule), alpha=self.alpha, fits=self.fits,
                       plain_fits=self.plain_fits, fits_saved=self.fits_saved,
                       higher_is_better=self.higher_is_better)
    return frame


def _as_scores(config: Hashable, value: Any, expected: int) -> tuple[np.ndarray, np.ndarray]:
  if isinstance(value, tuple) and len(value) == 2:
    scores, diverged = np.asarray(value[0], dtype=float), np.asarray(value[1], dtype=bool)
  else:
    scores, diverged = np.asarray(value, dtype=float), None
  if scores.shape != (expected,) or (diverged is not None and diverged.shape != (expected,)):
    raise ValueError(f"evaluate returned shape {scores.shape} for {config!r}; expected "
                     f"({expected},), one score per repeat asked for.")
  mask = ~np.isfinite(scores) if diverged is None else diverged | ~np.isfinite(scores)
  return np.where(mask, np.nan, scores), mask


def race(configs: Sequence[Hashable], evaluate: Evaluate, *, total: int, higher_is_better: bool,
         initial: int = 5, alpha: float = 0.05, growth: str | float = "double",
         finish_survivors: bool = True, max_diverged: float = MAX_DIVERGED) -> RaceResult:
  """Race `configs`: evaluate in rounds of growing repeats, eliminating at each look.

  Independent of training: `evaluate(ids, repeats)` trains (or looks up) repeats
  `repeats.start .. repeats.stop - 1` of each id and returns `{id: scores}` or
  `{id: (scores, diverged)}`. Each round makes one call with every survivor, so a
  real callback trains them as one vectorised batch.

  Args:
    configs: distinct config ids.
    evaluate: the callback above.
    total: repeats of a plain run (survivors end with exactly these).
    higher_is_better: direction (False: a loss).
    initial: repeats of the first round.
    alpha: family-wise error rate of the whole race.
    growth: see `schedule`.
    finish_survivors: when one config is left before the last round, still bring
      it to `total` repeats (one call) so its numbers equal a plain run; False
      stops there.
    max_diverged: see `race_round`.

  Returns:
    A `RaceResult`.

  Raises:
    ConfigError: on a bad schedule; ValueError on repeated ids or a malformed evaluate result.
  """
  configs = tuple(configs)
  if not configs:
    raise ValueError("race needs at least one config.")
  if len(set(configs)) != len(configs):
    raise ValueError("race got the same config id twice; ids must be distinct.")
  steps = schedule(initial, total, growth)
  n_looks = len(steps) - 1
  scores = {c: np.zeros(0) for c in configs}
  diverged = {c: np.zeros(0, dtype=bool) for c in configs}
  dropped: dict[Hashable, RoundResult] = {}
  rounds: list[RoundResult] = []
  alive, done, r = configs, 0, 0
  while alive and done < total:
    target = steps[r]
    if len(alive) == 1:  # nothing left to race
      if not finish_survivors and done > 0:
        break
      target = total if finish_survivors else target  # one call to finish it
    results = evaluate(alive, range(done, target))
    missing = [c for c in alive if c not in results]
    if missing:
      raise ValueError(f"evaluate returned no scores for {missing!r}.")
    for c in alive:
      new, mask = _as_scores(c, results[c], target - done)
      scores[c], diverged[c] = np.concatenate([scores[c], new]), np.concatenate([diverged[c], mask])
    done = target
    if r < n_looks and len(alive) > 1 and done < total:
      look = race_round({c: scores[c] for c in alive}, higher_is_better=higher_is_better,
                        alpha=alpha, round_index=r, n_rounds=n_looks,
                        diverged={c: diverged[c] for c in alive}, max_diverged=max_diverged)
      rounds.append(look)
      dropped.update({c: look for c in look.eliminated})
      alive = look.survivors
    r += 1
  entries = tuple(ConfigRace(config=c, scores=scores[c], diverged=diverged[c],
                             eliminated_round=dropped[c].round_index if c in dropped else None,
                             pvalue=dropped[c].pvalues[c] if c in dropped else math.nan,
                             beaten_by=dropped[c].beaten_by[c] if c in dropped else None,
                             reason=dropped[c].reasons[c] if c in dropped else None)
                  for c in configs)
  return RaceResult(configs=entries, rounds=tuple(rounds), schedule=steps, alpha=alpha,
                    total=int(total), higher_is_better=higher_is_better)
