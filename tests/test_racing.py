"""Racing: schedules, one look's decision, the driver, and family-wise error across looks."""
import math

import numpy as np
import pytest
from scipy import stats as sstats

from jaxlstm import racing
from jaxlstm.config import ConfigError


def fake_scores(config: int, repeats: range, means) -> np.ndarray:
  """Repeat i of config c: a normal draw that depends on (c, i) only, as fold_in keys do."""
  return np.array([means[config] + np.random.default_rng([config, i]).normal() for i in repeats])


class Recorder:
  """An evaluate callback that logs every (config, repeat) it is asked for."""

  def __init__(self, means, diverge=None):
    self.means, self.diverge, self.calls = means, diverge or {}, []

  def __call__(self, ids, repeats):
    self.calls.append((tuple(ids), repeats))
    out = {}
    for c in ids:
      scores = fake_scores(c, repeats, self.means)
      for i in repeats:
        if i in self.diverge.get(c, ()):
          scores[i - repeats.start] = np.nan
      out[c] = scores
    return out


@pytest.mark.parametrize("initial, total, growth, expected", [
    (5, 30, "double", (5, 10, 20, 30)),
    (5, 30, "linear", (5, 10, 15, 20, 25, 30)),
    (5, 30, 1.5, (5, 8, 12, 18, 27, 30)),
    (5, 40, "double", (5, 10, 20, 40)),
    (30, 30, "double", (30,)),
    (2, 3, "double", (2, 3)),
])
def test_schedule(initial, total, growth, expected):
  assert racing.schedule(initial, total, growth) == expected


@pytest.mark.parametrize("args, match", [
    ((1, 30), r"race initial = 1 is not allowed: .*at least 2 repeats"),
    ((10, 5), r"race total = 5 is not allowed: expected at least initial = 10"),
    ((5, 30, "triple"), r"race growth = 'triple' is not allowed"),
    ((5, 30, 1.0), r"race growth = 1\.0 is not allowed"),
    ((5.5, 30), r"race initial = 5\.5 is not allowed: expected an integer"),
])
def test_schedule_rejects(args, match):
  with pytest.raises(ConfigError, match=match):
    racing.schedule(*args)


def test_clearly_worse_config_goes_in_the_first_round():
  means = {0: 0.0, 1: 0.0, 2: 0.1, 3: 5.0}
  evaluate = Recorder(means)
  result = racing.race(list(means), evaluate, total=30, initial=5, higher_is_better=False)
  assert result[3].eliminated_round == 0 and result[3].repeats == 5
  assert result[3].beaten_by in (0, 1, 2) and result[3].pvalue < 0.05 / 3
  assert result.survivors == (0, 1, 2)
  assert result.fits == 3 * 30 + 5 and result.plain_fits == 120 and result.fits_saved == 25
  frame = result.to_frame()
  assert frame.loc[3, "eliminated_round"] == 0 and frame.attrs["fits_saved"] == 25
  # Higher is better: the same config is now clearly the best, and stays.
  flipped = racing.race(list(means), Recorder(means), total=30, initial=5, higher_is_better=True)
  assert 3 in flipped.survivors and flipped.rounds[0].best == 3


def test_survivors_equal_a_plain_run_and_no_repeat_is_trained_twice():
  means = {0: 0.0, 1: 0.2, 2: 1.5, 3: 3.0, 4: 0.1}
  evaluate = Recorder(means)
  result = racing.race(list(means), evaluate, total=30, initial=5, higher_is_better=False)
  assert result.schedule == (5, 10, 20, 30)
  for entry in result.configs:
    plain = fake_scores(entry.config, range(30), means)
    np.testing.assert_array_equal(entry.scores, plain[:entry.repeats])  # repeats extend
    if entry.eliminated_round is None:
      assert entry.repeats == 30
    else:
      assert entry.repeats == result.schedule[entry.eliminated_round]
  assert {2, 3} <= {c.config for c in result.configs if c.eliminated_round is not None}
  asked = [(c, i) for ids, repeats in evaluate.calls for c in ids for i in repeats]
  assert len(asked) == len(set(asked)) == result.fits
  # One call per round, each with every survivor: one vectorised batch per round.
  assert [r.stop for _, r in evaluate.calls] == [5, 10, 20, 30][:len(evaluate.calls)]


def test_last_survivor_is_finished_in_one_call_or_left():
  means = {0: 0.0, 1: 9.0, 2: 9.0}
  evaluate = Recorder(means)
  result = racing.race([0, 1, 2], evaluate, total=30, initial=5, higher_is_better=False)
  assert result.survivors == (0,) and result[0].repeats == 30
  assert evaluate.calls[-1] == ((0,), range(5, 30))
  short = racing.race([0, 1, 2], Recorder(means), total=30, initial=5, higher_is_better=False,
                      finish_survivors=False)
  assert short[0].repeats == 5 and short.fits == 15
  alone = Recorder({7: 0.0})
  assert racing.race([7], alone, total=30, higher_is_better=False)[7].repeats == 30
  assert alone.calls == [((7,), range(0, 30))]


def test_mostly_diverged_config_is_eliminated_and_keeps_its_nans():
  means = {0: 0.0, 1: 0.0, 2: -1.0}  # config 2 is the best when it trains at all
  diverge = {2: {0, 1, 3, 4}}
  result = racing.race([0, 1, 2], Recorder(means, diverge), total=20, initial=5,
                       higher_is_better=False)
  look = result.rounds[0]
  assert look.n_diverged[2] == 4
  # Diverged repeats are scored as the worst finite score of the look, over every config.
  finite = np.concatenate([fake_scores(0, range(5), means), fake_scores(1, range(5), means),
                           fake_scores(2, [2], means)])
  assert look.fill_value == finite.max()
  assert result[2].eliminated_round == 0 and result[2].reason == "diverged in 4/5 repeats (> 50%)"
  assert result[2].diverged.sum() == 4 and np.isnan(result[2].scores).sum() == 4


def test_race_round_takes_a_diverged_mask_and_scores_it_as_the_worst_finite():
  good = np.array([1.0, 1.1, 0.9, 1.0, 1.05])
  odd = np.array([1.0, 1.1, 0.9, 1.0, 1.05])
  look = racing.race_round({"a": good, "b": odd}, higher_is_better=False,
                           diverged={"b": np.array([1, 1, 1, 1, 0], bool)})
  assert look.fill_value == 1.1 and look.n_diverged == {"a": 0, "b": 4}
  assert look.means["b"] == pytest.approx((4 * 1.1 + 1.05) / 5)
  assert look.eliminated == ("b",) and look.best == "a"
  assert look.reasons == {"b": "diverged in 4/5 repeats (> 50%)"}
  # The bar is a parameter; without it the spread of b hides it from the test.
  assert racing.race_round({"a": good, "b": odd}, higher_is_better=False, max_diverged=1,
                           diverged={"b": np.array([1, 1, 1, 1, 0], bool)}).eliminated == ()
  # The best is never dropped for diverging: someone must survive.
  both = racing.race_round({"a": [np.nan, np.nan, 1.0], "b": [np.nan, np.nan, 2.0]},
                           higher_is_better=False)
  assert both.best == "a" and both.survivors == ("a",)


def test_race_round_spends_alpha_over_looks():
  a = np.array([0.0, 1, 2, 1, 0.5, 1.5, 0.2, 0.8])
  b = a[::-1] + 0.8
  p = sstats.ttest_ind(a, b, equal_var=False).pvalue
  assert 0.05 / 3 < p < 0.05  # significant alone, not at a third of the level
  one = racing.race_round({"a": a, "b": b}, higher_is_better=False, alpha=0.05)
  three = racing.race_round({"a": a, "b": b}, higher_is_better=False, alpha=0.05,
                            round_index=0, n_rounds=3)
  assert one.eliminated == ("b",) and three.eliminated == ()
  assert three.alpha == pytest.approx(0.05 / 3) and three.pvalues["b"] == pytest.approx(p)
  assert math.isnan(three.pvalues["a"]) and three.beaten_by == {"a": None, "b": "a"}


def test_race_round_rejects_bad_input():
  with pytest.raises(ValueError, match="at least 2 repeats"):
    racing.race_round({"a": [1.0], "b": [2.0, 3.0]}, higher_is_better=False)
  with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
    racing.race_round({"a": [1.0, 2.0]}, higher_is_better=False, alpha=5)
  with pytest.raises(ValueError, match="round_index"):
    racing.race_round({"a": [1.0, 2.0]}, higher_is_better=False, round_index=3, n_rounds=3)
  with pytest.raises(ValueError, match=r"evaluate returned shape \(4,\) for 0"):
    racing.race([0, 1], lambda ids, r: {c: np.zeros(4) for c in ids}, total=10,
                higher_is_better=False)
  with pytest.raises(ValueError, match="same config id twice"):
    racing.race([0, 0], Recorder({0: 0.0}), total=10, higher_is_better=False)


def _share_eliminating(races: int, k: int, *, spend: bool, seed: int) -> float:
  """Share of races between k equal normal configs that eliminate any config."""
  rng = np.random.default_rng(seed)
  steps = racing.schedule(5, 30, "linear")
  hits = 0
  for _ in range(races):
    table = rng.normal(size=(k, 30))
    if spend:
      result = racing.race(range(k), lambda ids, r: {c: table[c, r.start:r.stop] for c in ids},
                           total=30, initial=5, growth="linear", higher_is_better=False)
      hits += len(result.survivors) < k
    else:  # the same looks, each at the full alpha: what spending protects against
      hits += any(racing.race_round({c: table[c, :n] for c in range(k)}, higher_is_better=False).eliminated
                  for n in steps[:-1])
  return hits / races


def test_family_wise_error_holds_across_looks():
  alpha, races = 0.05, 400
  upper = sstats.binom.ppf(0.995, races, alpha) / races  # the 99% band's top
  spent = _share_eliminating(races, 3, spend=True, seed=0)
  assert spent <= upper, f"racing eliminated an equal config in {spent:.3f} of races (band top {upper:.3f})"
  # The test can fail: five looks at the full alpha each exceed the band.
  naive = _share_eliminating(races, 3, spend=False, seed=0)
  assert naive > upper, f"naive looks gave {naive:.3f}; the simulation cannot see inflation"
