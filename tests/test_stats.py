"""jaxlstm.stats against its references: pandas, scipy.stats and the known answers in
/work/shared/reference/statistics.md (cited by section below)."""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from jaxlstm import stats

RTOL = 1e-12


@pytest.fixture
def seeds30():
  # statistics.md §8 table: "random 30-seed vectors".
  return np.random.default_rng(30).normal(0.8, 0.05, size=30)


def assert_matches_references(summary, x, confidence=0.95):
  """The summarize row equals pandas describe(), scipy.stats.sem and t.interval at rtol 1e-12."""
  row = summary.to_frame().iloc[0]
  described = pd.Series(x).describe()
  np.testing.assert_allclose(row[list(described.index)].to_numpy(float),
                             described.to_numpy(float), rtol=RTOL)
  sem = sps.sem(x)
  low, high = sps.t.interval(confidence, x.size - 1, loc=np.mean(x), scale=sem)
  np.testing.assert_allclose(row[["sem", "ci_low", "ci_high"]].to_numpy(float), [sem, low, high],
                             rtol=RTOL)
  np.testing.assert_allclose(row["iqm"], sps.trim_mean(x, 0.25), rtol=RTOL)


# --- summarize ---------------------------------------------------------------

def test_summarize_matches_describe_sem_and_t_interval(seeds30):
  summary = stats.summarize(seeds30)
  assert_matches_references(summary, seeds30)
  assert_matches_references(stats.summarize(seeds30, confidence=0.9), seeds30, confidence=0.9)
  # describe() columns first, in describe() order, then ours.
  assert list(summary.to_frame().columns) == [
      "count", "mean", "std", "min", "25%", "50%", "75%", "max",
      "n_diverged", "sem", "ci_low", "ci_high", "iqm"]
  assert summary.ci_low < summary.mean < summary.ci_high
  assert summary.to_frame().attrs["ddof"] == 1


def test_a_ddof0_implementation_fails_the_reference_check(seeds30):
  # statistics.md §0 finding 4: ddof=1 vs ddof=0 differ by sqrt(n/(n-1)) (0.010045 vs 0.009876
  # on their 30-seed example), far outside rtol 1e-12; the check above must catch it.
  n = seeds30.size
  std0 = np.std(seeds30)  # numpy's default ddof=0
  wrong = dataclasses.replace(stats.summarize(seeds30), std=std0, sem=std0 / math.sqrt(n))
  with pytest.raises(AssertionError):
    assert_matches_references(wrong, seeds30)
  right = stats.summarize(seeds30)
  np.testing.assert_allclose(right.sem / wrong.sem, math.sqrt(n / (n - 1)), rtol=RTOL)
  np.testing.assert_allclose(0.010045 / 0.009876, math.sqrt(30 / 29), rtol=1e-4)


def test_nan_seed_is_counted_and_excluded(seeds30):
  x = seeds30.copy()
  x[[3, 17]] = [np.nan, np.inf]
  finite = x[np.isfinite(x)]
  summary = stats.summarize(x)
  assert (summary.count, summary.n_diverged) == (28, 2)
  assert_matches_references(summary, finite)
  # A diverged mask flags a finite seed the same way.
  mask = np.zeros(30, bool)
  mask[5] = True
  masked = stats.summarize(seeds30, diverged=mask)
  assert (masked.count, masked.n_diverged) == (29, 1)
  np.testing.assert_allclose(masked.mean, np.delete(seeds30, 5).mean(), rtol=RTOL)
  # The same seeds leave every other statistic too.
  b = np.random.default_rng(1).normal(0.82, 0.05, 25)
  w = stats.welch_test(x, b, higher_is_better=True)
  assert (w.n_a, w.n_diverged_a) == (28, 2)
  assert w.pvalue == pytest.approx(sps.ttest_ind(finite, b, equal_var=False).pvalue, rel=RTOL)
  assert stats.mann_whitney(x, b, higher_is_better=True).pvalue == pytest.approx(
      sps.mannwhitneyu(finite, b).pvalue, rel=RTOL)
  boot = stats.bootstrap_ci(x, rng=0, n_resamples=500)
  assert (boot.n, boot.n_diverged) == (28, 2)
  assert boot.ci_low == stats.bootstrap_ci(finite, rng=0, n_resamples=500).ci_low
  poi = stats.prob_improvement(x, b, higher_is_better=True, rng=0, n_resamples=200)
  assert (poi.n_a, poi.n_diverged_a) == (28, 2)
  assert poi.prob == stats.prob_improvement(finite, b, higher_is_better=True, rng=0,
                                            n_resamples=200).prob
  curve = stats.repeats_curve(x, rng=0, n_resamples=50)
  assert curve.n_diverged == 2 and curve.n[-1] == 28
  assert curve.mean[-1] == pytest.approx(finite.mean(), rel=RTOL)


def test_summarize_many_configs_one_row_each_and_few_seeds_give_nan():
  scores = {"lr=1e-3": [1.0, 2.0, 3.0, 4.0], "lr=1e-2": [0.5, 1.5, 1.0, np.nan],
            "one": [np.nan, 7.0, np.inf], "none": [np.nan, np.nan]}
  table = stats.summarize(scores)
  frame = table.to_frame()
  assert list(frame.index) == list(scores)
  assert frame["count"].tolist() == [4, 3, 1, 0]
  assert frame["n_diverged"].tolist() == [0, 1, 2, 2]
  # One finite seed: describe()'s NaN std, and NaN SEM and interval; no crash.
  one = frame.loc["one"]
  assert one["mean"] == 7.0 and one[["std", "sem", "ci_low", "ci_high"]].isna().all()
  assert frame.loc["none"].drop(["count", "n_diverged"]).isna().all()
  assert table["lr=1e-3"].std == pytest.approx(np.std([1, 2, 3, 4], ddof=1), rel=RTOL)
  # A wide frame (rows configs) and a [config, seed] array give the same table.
  wide = pd.DataFrame([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], index=["a", "b"])
  by_frame = stats.summarize(wide).to_frame()
  by_dict = stats.summarize({"a": [1.0, 2.0, 3.0], "b": [4.0, np.nan, 6.0]}).to_frame()
  pd.testing.assert_frame_equal(by_frame, by_dict)
  np.testing.assert_array_equal(stats.summarize(wide.to_numpy()).to_frame().to_numpy(),
                                by_dict.to_numpy())
  # best follows the direction; NaN configs never win.
  assert stats.summarize(scores, higher_is_better=False).best == "lr=1e-2"
  assert stats.summarize(scores, higher_is_better=True).best == "one"


def test_iqm_known_answers():
  # statistics.md §3: rliable metrics_test.py fixture, aggregate_iqm(x) = 1.5, (y) = 2.
  x = np.array([[1, 2], [2, 2], [1, 1], [2, 1]], float)
  y = np.array([[1, 1], [2, 2], [3, 3]], float)
  assert stats.iqm(x) == 1.5 and stats.iqm(y) == 2.0
  assert stats.summarize(x.ravel()).iqm == 1.5
  # The middle 50% drops the outliers a mean would chase.
  assert stats.iqm([0, 1, 1, 1, 1, 1, 1, 100]) == 1.0


# --- repeats -----------------------------------------------------------------

def test_repeats_curve_sem_follows_sigma_over_sqrt_n():
  # statistics.md §1 (Brownlee): 1000 results from N(60, 10); §8: SEM(n) within 15% of
  # 10/√n for n ≥ 30, log-log slope −0.5 ± 0.05. A fixed draw: SEM of the first 30 is
  # s/√30 with s/σ having sd ≈ 13%, so about half of all seeds would miss 15% there.
  x = np.random.default_rng(2017).normal(60, 10, size=1000)
  curve = stats.repeats_curve(x, rng=0)
  n = curve.n
  assert n[0] == 2 and n[-1] == 1000
  big = n >= 30
  np.testing.assert_allclose(curve.sem[big], 10 / np.sqrt(n[big]), rtol=0.15)
  np.testing.assert_allclose(curve.boot_std[big], 10 / np.sqrt(n[big]), rtol=0.15)
  slope = np.polyfit(np.log(n[big]), np.log(curve.sem[big]), 1)[0]
  assert slope == pytest.approx(-0.5, abs=0.05)
  assert curve.mean[-1] == pytest.approx(x.mean(), rel=RTOL) == curve.final_mean
  assert curve.sem[28] == pytest.approx(sps.sem(x[:30]), rel=RTOL)
  assert np.all(curve.boot_low < curve.boot_high)
  assert np.all((curve.ci_low < curve.mean) & (curve.mean < curve.ci_high))
  frame = curve.to_frame()
  assert len(frame) == 999 and frame.attrs["n_resamples"] == 1000
  again = stats.repeats_curve(x, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(again.boot_std, curve.boot_std)


def test_required_repeats_known_answer():
  # statistics.md §1: solving t_{0.975, n-1}·σ/√n ≤ 2 with σ = 10 gives n = 99 (z: 96.04).
  def brute(sigma, h):
    return next(n for n in range(2, 10_000) if sps.t.ppf(0.975, n - 1) * sigma / math.sqrt(n) <= h)

  result = stats.required_repeats(std=10, half_width=2)
  assert result.n == 99 == brute(10, 2)
  assert result.n_normal == pytest.approx(96.04, abs=0.01) and result.n_normal <= result.n
  assert result.half_width <= 2 < sps.t.ppf(0.975, 97) * 10 / math.sqrt(98)
  # From a pilot: the pilot std, and a target relative to the pilot mean (5% of it).
  pilot = np.random.default_rng(3).normal(60, 10, size=20)
  s = np.std(pilot, ddof=1)
  assert stats.required_repeats(pilot, half_width=2).n == brute(s, 2)
  rel = stats.required_repeats(pilot, half_width=0.05, relative=True)
  assert rel.n == brute(s, 0.05 * pilot.mean()) and rel.target == pytest.approx(0.05 * pilot.mean())
  # Too small a pilot gives NaN, not a crash; a bad target is an error.
  assert math.isnan(stats.required_repeats([5.0, np.nan], half_width=1).n)
  with pytest.raises(ValueError, match="half_width must be > 0"):
    stats.required_repeats(std=1, half_width=0)


# --- two-sample tests --------------------------------------------------------

def test_welch_matches_scipy_and_the_welch_example():
  gen = np.random.default_rng(4)
  a, b = gen.normal(1.0, 1.0, 12), gen.normal(1.8, 3.0, 20)
  for hib in (True, False):
    res = stats.welch_test(a, b, higher_is_better=hib)
    ref = sps.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose([res.statistic, res.df, res.pvalue], [ref.statistic, ref.df, ref.pvalue],
                               rtol=RTOL)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose([res.ci_low, res.ci_high], [ci.low, ci.high], rtol=RTOL)
  # "better" is "greater" for accuracies and "less" for losses.
  for hib, raw in ((True, "greater"), (False, "less")):
    res = stats.welch_test(a, b, higher_is_better=hib, alternative="better")
    assert res.pvalue == pytest.approx(
        sps.ttest_ind(a, b, equal_var=False, alternative=raw).pvalue, rel=RTOL)
  # statistics.md §8: Welch example A1/A2 (15 values each): t=−2.4554, df=24.9885, p=0.02138.
  a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
  a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
  res = stats.welch_test(a1, a2, higher_is_better=True)
  np.testing.assert_allclose([res.statistic, res.df, res.pvalue], [-2.4554, 24.9885, 0.02138],
                             rtol=1e-4)
  # Student's pooled test (Henderson's script, §0 finding 2) gives a different p.
  assert not np.isclose(sps.ttest_ind(a, b).pvalue, stats.welch_test(
      a, b, higher_is_better=True).pvalue, rtol=1e-3)


def test_hedges_g_hand_computed():
  a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 5.0, 6.0])
  # Pooled variance (3·5/3 + 4·5/2) / 7 = 15/7; d = (2.5 − 4)/√(15/7) = −1.0247;
  # J(df=7) = Γ(3.5)/(√3.5·Γ(3)) = 0.88820 (the 1 − 3/(4df − 1) approximation: 0.88889).
  d = -1.5 / math.sqrt(15 / 7)
  j = math.gamma(3.5) / (math.sqrt(3.5) * math.gamma(3))
  assert stats.welch_test(a, b, higher_is_better=True).hedges_g == pytest.approx(d * j, rel=RTOL)
  assert d * j == pytest.approx(-0.91014, abs=1e-5)


def test_mann_whitney_matches_scipy_and_hand_count():
  gen = np.random.default_rng(5)
  a, b = gen.normal(0, 1, 18), np.round(gen.normal(0.5, 1, 23), 1)
  res = stats.mann_whitney(a, b, higher_is_better=True)
  ref = sps.mannwhitneyu(a, b)
  assert (res.statistic, res.pvalue) == (pytest.approx(ref.statistic, rel=RTOL),
                                         pytest.approx(ref.pvalue, rel=RTOL))
  for hib, raw in ((True, "greater"), (False, "less")):
    got = stats.mann_whitney(a, b, higher_is_better=hib, alternative="better").pvalue
    assert got == pytest.approx(sps.mannwhitneyu(a, b, alternative=raw).pvalue, rel=RTOL)
  # Hand count: a = [1, 3], b = [2, 3]: 1 beats nothing, 3 beats 2 and ties 3 -> U = 1.5.
  small = stats.mann_whitney([1.0, 3.0], [2.0, 3.0], higher_is_better=True)
  assert small.statistic == 1.5 and small.prob_better == 1.5 / 4
  assert stats.mann_whitney([1.0, 3.0], [2.0, 3.0], higher_is_better=False).prob_better == 2.5 / 4


# --- bootstrap ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["percentile", "BCa"])
@pytest.mark.parametrize("statistic", ["mean", "iqm"])
def test_bootstrap_ci_matches_scipy_bootstrap(seeds30, method, statistic):
  # statistics.md §8: same rng and method as scipy.stats.bootstrap -> identical bounds.
  funcs = {"mean": np.mean, "iqm": lambda x, axis: sps.trim_mean(x, 0.25, axis=axis)}
  res = stats.bootstrap_ci(seeds30, statistic=statistic, method=method, n_resamples=2000,
                           rng=np.random.default_rng(11))
  ref = sps.bootstrap((seeds30,), funcs[statistic], method=method, n_resamples=2000,
                      rng=np.random.default_rng(11))
  np.testing.assert_allclose([res.ci_low, res.ci_high],
                             [ref.confidence_interval.low, ref.confidence_interval.high], rtol=RTOL)
  np.testing.assert_allclose(res.standard_error, ref.standard_error, rtol=RTOL)
  assert res.ci_low < res.estimate < res.ci_high
  # An int seed is the same as default_rng(seed); another seed gives another interval.
  assert stats.bootstrap_ci(seeds30, statistic=statistic, method=method, n_resamples=2000,
                            rng=11).ci_low == res.ci_low
  assert stats.bootstrap_ci(seeds30, statistic=statistic, method=method, n_resamples=2000,
                            rng=12).ci_low != res.ci_low


def test_bootstrap_ci_degenerate_inputs_and_rng_required():
  assert math.isnan(stats.bootstrap_ci([1.0, np.nan], rng=0).ci_low)
  flat = stats.bootstrap_ci([2.0, 2.0, 2.0], rng=0)
  assert (flat.ci_low, flat.ci_high) == (2.0, 2.0)
  with pytest.raises(TypeError, match="rng must be a np.random.Generator or an int seed"):
    stats.bootstrap_ci([1.0, 2.0, 3.0], rng=None)
  with pytest.raises(ValueError, match="method must be 'BCa', 'percentile' or 'basic'"):
    stats.bootstrap_ci([1.0, 2.0, 3.0], rng=0, method="studentized")


# --- probability of improvement ----------------------------------------------

def test_prob_improvement_known_answers():
  # statistics.md §3: rliable fixture, probability_of_improvement(x, y) = 1/3 (mean over 2
  # tasks); identical samples give exactly 0.5.
  x = np.array([[1, 2], [2, 2], [1, 1], [2, 1]], float)
  y = np.array([[1, 1], [2, 2], [3, 3]], float)
  poi = stats.prob_improvement(x, y, higher_is_better=True, rng=0, n_resamples=500)
  assert poi.prob == pytest.approx(1 / 3, rel=RTOL) and poi.n_tasks == 2
  assert poi.ci_low <= poi.prob <= poi.ci_high
  assert stats.prob_improvement(y, y, higher_is_better=True, rng=0, n_resamples=10).prob == 0.5
  # statistics.md §2/§3: one task, P(A>B) + ½P(A=B) = mannwhitneyu(a, b).statistic / (n_a n_b).
  gen = np.random.default_rng(6)
  a, b = gen.normal(1.0, 1.0, 30), gen.normal(0.0, 1.0, 30)
  poi = stats.prob_improvement(a, b, higher_is_better=True, rng=1)
  assert poi.prob == pytest.approx(sps.mannwhitneyu(a, b).statistic / 900, rel=RTOL)
  assert 0.5 < poi.ci_low < poi.prob < poi.ci_high < 1.0
  assert stats.prob_improvement(a, b, higher_is_better=True, rng=1) == poi


def test_higher_is_better_flips_prob_improvement_and_verdicts():
  gen = np.random.default_rng(7)
  low, high = gen.normal(0.0, 1.0, 30), gen.normal(2.0, 1.0, 30)  # "high" has larger values
  acc = stats.prob_improvement(high, low, higher_is_better=True, rng=0, n_resamples=300)
  loss = stats.prob_improvement(high, low, higher_is_better=False, rng=0, n_resamples=300)
  assert acc.prob > 0.9 and loss.prob == pytest.approx(1 - acc.prob, rel=RTOL)
  assert (loss.ci_low, loss.ci_high) == pytest.approx((1 - acc.ci_high, 1 - acc.ci_low), rel=RTOL)
  scores = {"high": high, "low": low}
  as_acc = stats.compare_configs(scores, higher_is_better=True, rng=0, n_resamples=200).pairs[0]
  as_loss = stats.compare_configs(scores, higher_is_better=False, rng=0, n_resamples=200).pairs[0]
  assert as_acc.verdict.startswith("high is better than low (p=")
  assert as_loss.verdict.startswith("low is better than high (p=")
  assert as_acc.verdict.endswith(", Holm)")
  assert as_acc.prob_better > 0.9 > 0.1 > as_loss.prob_better
  assert stats.welch_test(high, low, higher_is_better=True).a_is_better
  assert not stats.welch_test(high, low, higher_is_better=False).a_is_better


# --- many configs ------------------------------------------------------------

def test_holm_hand_computed():
  # Sorted 0.005, 0.01, 0.03, 0.04 times m − i = 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04, then the
  # running max makes the last 0.06; back in input order:
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02],
                             rtol=RTOL)
  np.testing.assert_array_equal(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
  # NaN stays NaN and is not counted in m.
  np.testing.assert_allclose(stats.holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02], rtol=RTOL)


def test_compare_configs_pairs_holm_and_verdicts():
  gen = np.random.default_rng(8)
  scores = {"a": gen.normal(0.0, 1, 20), "b": gen.normal(1.5, 1, 20),
            "c": gen.normal(0.1, 1, 20), "tiny": [1.0, np.nan, np.nan]}
  allpairs = stats.compare_configs(scores, higher_is_better=False, rng=0, n_resamples=200)
  frame = allpairs.to_frame()
  assert len(frame) == 6 and frame.attrs["correction"] == "holm"
  assert list(frame[["a", "b"]].itertuples(index=False, name=None))[:3] == [
      ("a", "b"), ("a", "c"), ("a", "tiny")]
  # Raw p is Welch's; Holm runs over the pairs that have one.
  for row in frame.itertuples():
    if row.b != "tiny":
      assert row.pvalue == pytest.approx(sps.ttest_ind(scores[row.a], scores[row.b],
                                                       equal_var=False).pvalue, rel=RTOL)
  np.testing.assert_allclose(frame["pvalue_holm"], stats.holm(frame["pvalue"]), rtol=RTOL)
  assert frame["pvalue_holm"].isna().sum() == 3 == frame["pvalue"].isna().sum()
  assert (frame.loc[frame.b == "tiny", "verdict"].str.startswith("not enough finite repeats")).all()
  verdicts = dict(zip(zip(frame.a, frame.b), frame.verdict))
  assert verdicts[("a", "b")].startswith("a is better than b (p=")  # lower is better
  assert verdicts[("a", "c")].startswith("no significant difference (p=")

  best = stats.compare_configs(scores, higher_is_better=False, against="best", rng=0,
                               n_resamples=200)
  assert [(p.a, p.b) for p in best.pairs] == [("a", "b"), ("a", "c"), ("a", "tiny")]
  base = stats.compare_configs(scores, higher_is_better=False, against="c", rng=0,
                               n_resamples=200, test="mann_whitney")
  assert [(p.a, p.b) for p in base.pairs] == [("a", "c"), ("b", "c"), ("tiny", "c")]
  b_vs_c = base.pairs[1]
  assert b_vs_c.statistic == sps.mannwhitneyu(scores["b"], scores["c"]).statistic
  assert b_vs_c.verdict.startswith("c is better than b") and b_vs_c.prob_high < 0.5
  with pytest.raises(ValueError, match="against must be 'all', 'best' or a config name"):
    stats.compare_configs(scores, higher_is_better=False, against="d", rng=0)


def test_scores_from_histories():
  hist = np.array([[[3.0, 2.0, 2.5], [3.0, np.nan, 1.0]],
                   [[4.0, 1.0, 0.5], [2.0, 2.0, 2.0]]])  # [config, seed, epoch]
  last = stats.scores_from_histories(hist, higher_is_better=False)
  np.testing.assert_array_equal(last, [[2.5, np.nan], [0.5, 2.0]])  # a NaN epoch marks divergence
  best = stats.scores_from_histories(hist, higher_is_better=False, at="best")
  np.testing.assert_array_equal(best, [[2.0, np.nan], [0.5, 2.0]])
  assert stats.scores_from_histories(hist, higher_is_better=True, at="best")[1, 0] == 4.0
  assert stats.summarize(last).to_frame()["n_diverged"].tolist() == [1, 0]


# --- paired comparisons (common random numbers) --------------------------------

def crn_pair(seed, n=30, shift=0.05, seed_sd=1.0, own_sd=0.05):
  """Scores of A and B that share each repeat's luck (seed_sd), B worse by `shift` (a loss)."""
  gen = np.random.default_rng(seed)
  luck = gen.normal(0.0, seed_sd, n)
  return 1.0 + luck + gen.normal(0, own_sd, n), 1.0 + shift + luck + gen.normal(0, own_sd, n)


def paired_inputs():
  """(a, b) cases: random, heavy-tailed, large, rounded (ties), with zero differences."""
  gen = np.random.default_rng(15)
  a = gen.normal(0.0, 1.0, 12)
  yield a, a + gen.normal(0.4, 1.0, 12)
  x = gen.standard_t(3, 25)
  yield x, 0.5 * x + gen.standard_t(3, 25)
  yield gen.normal(0.0, 1.0, 80), gen.normal(0.1, 1.0, 80)
  r = np.round(gen.normal(0.0, 1.0, 20), 1)
  yield r, np.round(r + gen.normal(0.2, 0.3, 20), 1)  # ties in |d| and some zero differences


def test_paired_t_matches_ttest_rel_and_a_hand_computed_case():
  # statistics.md §0 finding 3: deepsig's power analysis calls ttest_rel, a paired test, under
  # a "Welch" docstring; here the paired test is its own function, checked against ttest_rel.
  for a, b in paired_inputs():
    for hib in (True, False):
      res = stats.paired_t_test(a, b, higher_is_better=hib)
      ref = sps.ttest_rel(a, b)
      np.testing.assert_allclose([res.statistic, res.df, res.pvalue],
                                 [ref.statistic, ref.df, ref.pvalue], rtol=RTOL)
      ci = ref.confidence_interval(0.95)
      np.testing.assert_allclose([res.ci_low, res.ci_high], [ci.low, ci.high], rtol=RTOL)
      for alt in ("better", "worse"):
        raw = {(True, "better"): "greater", (True, "worse"): "less",
               (False, "better"): "less", (False, "worse"): "greater"}[hib, alt]
        got = stats.paired_t_test(a, b, higher_is_better=hib, alternative=alt).pvalue
        np.testing.assert_allclose(got, sps.ttest_rel(a, b, alternative=raw).pvalue, rtol=RTOL)
  # d = A − B = [1, 2, 3, 5]: mean 2.75, sd √(8.75/3) = 1.70783, t = 2.75 / (sd/2) = 3.22047.
  res = stats.paired_t_test([2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0], higher_is_better=True)
  sd = math.sqrt(8.75 / 3)
  assert (res.mean_diff, res.df, res.n_pairs) == (2.75, 3.0, 4)
  assert res.sd_diff == pytest.approx(sd, rel=RTOL) and res.se_diff == pytest.approx(sd / 2, rel=RTOL)
  assert res.statistic == pytest.approx(3.22047, abs=1e-5)
  assert res.cohen_dz == pytest.approx(2.75 / sd, rel=RTOL) == pytest.approx(1.61023, abs=1e-5)
  assert res.a_is_better and res.ci_low < res.mean_diff < res.ci_high
  assert not stats.paired_t_test([2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0],
                                  higher_is_better=False).a_is_better


def test_paired_t_edge_cases_follow_scipy():
  a = np.array([1.0, 2.0, 3.0, 4.0])
  with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
    same, shifted = sps.ttest_rel(a, a), sps.ttest_rel(a, a - 1)
  # Every pair differs by the same amount: scipy's t = inf, p = 0.
  res = stats.paired_t_test(a, a - 1, higher_is_better=True)
  assert res.statistic == shifted.statistic == math.inf and res.pvalue == shifted.pvalue == 0.0
  # No difference at all: NaN as scipy; the verdict then says so (test_compare_configs_paired).
  res = stats.paired_t_test(a, a, higher_is_better=True)
  assert math.isnan(res.statistic) and math.isnan(same.statistic) and math.isnan(res.pvalue)
  # A non-finite side drops the pair: the same as ttest_rel on the kept pairs.
  gen = np.random.default_rng(16)
  x, y = gen.normal(size=10), gen.normal(size=10)
  x[2], y[7] = np.nan, np.inf
  res = stats.paired_t_test(x, y, higher_is_better=False)
  keep = np.isfinite(x) & np.isfinite(y)
  assert (res.n_pairs, res.n_dropped) == (8, 2)
  assert res.pvalue == pytest.approx(sps.ttest_rel(x[keep], y[keep]).pvalue, rel=RTOL)
  assert math.isnan(stats.paired_t_test([1.0, np.nan], [2.0, 3.0], higher_is_better=True).pvalue)
  with pytest.raises(ValueError, match=r"same number of repeats; got 3 and 2\. Pass the same repeats"):
    stats.paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0], higher_is_better=True)


def test_wilcoxon_matches_scipy_with_ties_zeros_and_both_directions():
  for a, b in paired_inputs():
    for hib in (True, False):
      res = stats.wilcoxon_signed_rank(a, b, higher_is_better=hib)
      ref = sps.wilcoxon(a, b)
      np.testing.assert_allclose([res.statistic, res.pvalue], [ref.statistic, ref.pvalue],
                                 rtol=RTOL)
      for alt, raw in (("better", "greater" if hib else "less"),
                       ("worse", "less" if hib else "greater")):
        got = stats.wilcoxon_signed_rank(a, b, higher_is_better=hib, alternative=alt)
        ref = sps.wilcoxon(a, b, alternative=raw)
        np.testing.assert_allclose([got.statistic, got.pvalue], [ref.statistic, ref.pvalue],
                                   rtol=RTOL)
  # The rounded case really has zero differences and tied |d| (else it tests nothing new).
  a, b = list(paired_inputs())[-1]
  d = a - b
  assert (d == 0).any() and len(np.unique(np.abs(d[d != 0]))) < np.count_nonzero(d)
  assert stats.wilcoxon_signed_rank(a, b, higher_is_better=True).n_zero == np.count_nonzero(d == 0)


def test_wilcoxon_hand_counted():
  # d = [1, 2, -3, 4, 5]: ranks 1..5, W+ = 12, W- = 3. Exact null: 5 of the 32 sign patterns
  # have W+ <= 3 (W+ = 0, 1, 2, 3 twice), so two-sided p = 2·5/32 = 0.3125.
  res = stats.wilcoxon_signed_rank([1.0, 2.0, -3.0, 4.0, 5.0], np.zeros(5), higher_is_better=True)
  assert (res.w_plus, res.w_minus, res.statistic) == (12.0, 3.0, 3.0)
  assert res.pvalue == pytest.approx(0.3125, rel=RTOL)
  assert res.rank_biserial == pytest.approx(0.6, rel=RTOL)
  # A zero difference leaves the ranks (scipy's zero_method="wilcox") and is counted.
  res = stats.wilcoxon_signed_rank([1.0, 2.0, -3.0, 4.0, 5.0, 7.0], [0, 0, 0, 0, 0, 7.0],
                                   higher_is_better=True)
  assert (res.n_pairs, res.n_zero, res.w_plus) == (6, 1, 12.0)


def test_prob_improvement_paired_hand_counted_and_resampled_over_pairs():
  # Pairs: 1>0 win, 2=2 tie (½), 3<5 loss, 4>1 win -> 2.5/4 for higher-is-better.
  a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]
  res = stats.prob_improvement_paired(a, b, higher_is_better=True, rng=0, n_resamples=400)
  assert res.prob == 0.625 and res.n_ties == 1 and res.n_pairs == 4
  loss = stats.prob_improvement_paired(a, b, higher_is_better=False, rng=0, n_resamples=400)
  assert loss.prob == 0.375
  assert (loss.ci_low, loss.ci_high) == pytest.approx((1 - res.ci_high, 1 - res.ci_low), rel=RTOL)
  # The interval is the percentile interval of the mean win over resampled pairs.
  wins = np.array([1.0, 0.5, 0.0, 1.0])
  boot = wins[np.random.default_rng(0).integers(0, 4, (400, 4))].mean(axis=1)
  np.testing.assert_allclose([res.ci_low, res.ci_high], np.quantile(boot, [0.025, 0.975]), rtol=RTOL)
  # With common random numbers A wins most pairs (P = Φ(0.05 / 0.0707) = 0.76), while a
  # run of A beats a run of B only about half the time (each seed's luck dominates).
  better, worse = crn_pair(17)  # better has the lower loss
  paired = stats.prob_improvement_paired(better, worse, higher_is_better=False, rng=1)
  unpaired = stats.prob_improvement(better, worse, higher_is_better=False, rng=1)
  assert paired.ci_low > 0.5 and unpaired.ci_low < 0.5 < unpaired.ci_high
  a[1] = np.nan
  assert stats.prob_improvement_paired(a, b, higher_is_better=True, rng=0).n_dropped == 1


def test_se_difference_paired_and_unpaired():
  gen = np.random.default_rng(18)
  a = gen.normal(0, 1, 20)
  b = 0.8 * a + gen.normal(0, 0.5, 20)
  se = stats.se_difference(a, b)
  assert se.se_paired == pytest.approx(sps.sem(a - b), rel=RTOL)
  assert se.se_unpaired == pytest.approx(math.hypot(sps.sem(a), sps.sem(b)), rel=RTOL)
  # se_paired² = se_unpaired² − 2 cov(A, B) / n
  cov = np.cov(a, b, ddof=1)[0, 1]
  assert se.se_paired**2 == pytest.approx(se.se_unpaired**2 - 2 * cov / 20, rel=1e-10)
  assert se.se_ratio == pytest.approx(se.se_paired / se.se_unpaired, rel=RTOL)
  assert se.variance_reduction == pytest.approx(1 - se.se_ratio**2, rel=RTOL)
  assert se.correlation == pytest.approx(sps.pearsonr(a, b).statistic, rel=1e-10)
  assert se.se_ratio < 1
  # Negatively correlated pairs: pairing makes the difference noisier, and says so.
  anti = stats.se_difference(a, -a + gen.normal(0, 0.1, 20))
  assert anti.se_ratio > 1 and anti.variance_reduction < 0
  assert set(se.to_frame().columns) >= {"se_paired", "se_unpaired", "se_ratio", "variance_reduction"}


def test_paired_test_rejects_a_small_effect_where_welch_does_not():
  # A known small effect (0.05) under shared per-repeat noise (sd 1): pairing cancels the
  # noise, Welch cannot see past it. Fixed seed, then the rejection rates over 200 seeds.
  better, worse = crn_pair(19)
  paired = stats.paired_t_test(better, worse, higher_is_better=False)
  welch = stats.welch_test(better, worse, higher_is_better=False)
  assert paired.pvalue < 1e-3 < 0.5 < welch.pvalue
  assert paired.a_is_better
  se = stats.se_difference(better, worse)
  assert se.se_paired < 0.1 * se.se_unpaired
  assert se.se_paired == pytest.approx(paired.se_diff, rel=RTOL)
  rejects = np.array([[stats.paired_t_test(*crn_pair(s), higher_is_better=False).pvalue < 0.05,
                       stats.welch_test(*crn_pair(s), higher_is_better=False).pvalue < 0.05]
                      for s in range(200)])
  assert rejects[:, 0].mean() > 0.95 and rejects[:, 1].mean() < 0.1


def test_compare_configs_paired():
  gen = np.random.default_rng(20)
  luck = gen.normal(0, 1, 12)
  scores = {"a": luck + gen.normal(0, 0.05, 12), "b": luck + 0.1 + gen.normal(0, 0.05, 12),
            "c": luck + 0.01 + gen.normal(0, 0.05, 12)}
  scores["c"][4] = np.nan  # c's repeat 4 diverged: that pair is dropped wherever c appears
  mask = {"b": np.eye(12, dtype=bool)[7]}  # and b's repeat 7, flagged by training
  result = stats.compare_configs(scores, higher_is_better=False, rng=0, paired=True,
                                 diverged=mask, n_resamples=300)
  assert result.test == "paired_t" and result.paired
  frame = result.to_frame()
  unpaired_columns = [f.name for f in dataclasses.fields(stats.PairComparison)]
  assert list(frame.columns[:len(unpaired_columns)]) == unpaired_columns
  assert {"n_pairs", "n_dropped", "cohen_dz", "se_paired", "se_unpaired", "se_ratio"} <= set(frame)
  assert frame.attrs["paired"] is True and frame.attrs["correction"] == "holm"
  rows = {(r.a, r.b): r for r in frame.itertuples()}
  assert [(rows[k].n_pairs, rows[k].n_dropped) for k in rows] == [(11, 1), (11, 1), (10, 2)]
  assert (rows["a", "c"].n_diverged_a, rows["a", "c"].n_diverged_b) == (0, 1)
  b = np.where(mask["b"], np.nan, scores["b"])
  keep = np.isfinite(b)
  for (x, y), row in rows.items():
    ra = b if x == "b" else scores[x]
    rb = b if y == "b" else scores[y]
    kept = np.isfinite(ra) & np.isfinite(rb)
    assert row.pvalue == pytest.approx(sps.ttest_rel(ra[kept], rb[kept]).pvalue, rel=RTOL)
    assert row.n_a == row.n_b == row.n_pairs == kept.sum()
    assert row.se_ratio < 0.2
  np.testing.assert_allclose(frame["pvalue_holm"], stats.holm(frame["pvalue"]), rtol=RTOL)
  assert rows["a", "b"].verdict.startswith("a is better than b (p=")
  wins = scores["a"][keep] < b[keep]  # keep: pairs of (a, b) with b's repeat 7 out
  assert rows["a", "b"].prob_better == pytest.approx(wins.mean(), rel=RTOL) and wins.mean() > 0.9
  # The same scores unpaired: the shared luck hides the 0.1 difference.
  unpaired = stats.compare_configs(scores, higher_is_better=False, rng=0, diverged=mask,
                                   n_resamples=300).to_frame()
  assert unpaired.loc[0, "verdict"].startswith("no significant difference")
  assert list(unpaired.columns) == unpaired_columns and "paired" not in unpaired.attrs

  wil = stats.compare_configs(scores, higher_is_better=False, rng=0, paired=True,
                              test="wilcoxon", against="b", diverged=mask, n_resamples=300)
  assert [(p.a, p.b) for p in wil.pairs] == [("a", "b"), ("c", "b")]
  assert wil.pairs[0].pvalue == pytest.approx(sps.wilcoxon(scores["a"][keep], b[keep]).pvalue,
                                              rel=RTOL)
  assert wil.pairs[0].verdict.startswith("a is better than b")

  same = stats.compare_configs({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]},
                               higher_is_better=True, rng=0, paired=True)
  assert same.pairs[0].verdict == "no difference: x and y are equal on all 3 pairs"
  few = stats.compare_configs({"x": [1.0, np.nan], "y": [1.0, 2.0]}, higher_is_better=True,
                              rng=0, paired=True)
  assert few.pairs[0].verdict == "not enough finite pairs to compare (n_pairs=1, n_dropped=1)"
  with pytest.raises(ValueError, match=r"same number of repeats; got \{'x': 3, 'y': 2\}"):
    stats.compare_configs({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}, higher_is_better=True,
                          rng=0, paired=True)
  with pytest.raises(ValueError, match=r"'welch' needs paired=False"):
    stats.compare_configs(scores, higher_is_better=True, rng=0, paired=True, test="welch")
  with pytest.raises(ValueError, match=r"'wilcoxon' needs paired=True"):
    stats.compare_configs(scores, higher_is_better=True, rng=0, test="wilcoxon")
