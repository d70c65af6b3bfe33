"""Search: objectives over repeats, the ask/tell loop, batching, resume after a crash or kill -9."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from jaxlstm import search
from jaxlstm import space as S
from jaxlstm.config import ConfigError

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]
LR_SPACE = {"optim.learning_rate": "loguniform:1e-5:1"}


def synthetic(params, repeats=5):
  """A trial's repeats: a bowl in log10(lr) with its minimum at 10**-2.5, plus noise
  that depends on the params only (as a config's seeded repeats do)."""
  x = math.log10(params["optim.learning_rate"])
  noise = np.random.default_rng(zlib.crc32(S.point_key(params).encode())).normal(0, 0.05, repeats)
  return (x + 2.5) ** 2 + noise, np.zeros(repeats, bool)


class Evaluator:
  """evaluate_batch that logs every params it trains."""

  def __init__(self, fail_on_call=None):
    self.calls, self.fail_on_call = [], fail_on_call

  def __call__(self, params_list):
    self.calls.append([S.point_key(p) for p in params_list])
    if self.fail_on_call == len(self.calls):
      raise RuntimeError("simulated crash inside training")
    return [synthetic(p) for p in params_list]

  @property
  def trained(self):
    return [k for call in self.calls for k in call]


def states(folder):
  study = search.open_study(folder)
  return [t.state.name for t in study.get_trials()]


def history(folder):
  """(trial number, params, objective) of every trial: what a resumed run must reproduce."""
  table = pd.read_csv(Path(folder) / "trials.csv")
  return list(zip(table["trial"], table["optim.learning_rate"], table["objective"]))


# ---------------------------------------------------------------------------
# objective


def test_objective_kinds_match_their_definitions():
  x = np.array([3.0, 1.0, 2.0, 10.0, 4.0, 2.5, 1.5, 3.5])
  assert search.objective(x, kind="mean") == pytest.approx(x.mean())
  assert search.objective(x, kind="median") == pytest.approx(np.median(x))
  assert search.objective(x, kind="iqm") == pytest.approx(sstats.trim_mean(x, 0.25))
  low, high = sstats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sstats.sem(x))
  assert search.objective(x, kind="ucb") == pytest.approx(high)  # a loss: the bad end is high
  assert search.objective(x, kind="ucb", higher_is_better=True) == pytest.approx(low)


def test_ucb_prefers_the_reliable_of_two_equal_means():
  steady = np.array([1.0, 1.1, 0.9, 1.0, 1.0])
  erratic = np.array([0.2, 1.8, 0.1, 1.9, 1.0])
  assert search.objective(steady, kind="mean") == pytest.approx(search.objective(erratic, kind="mean"))
  assert search.objective(steady, kind="ucb") < search.objective(erratic, kind="ucb")


def test_diverged_repeats_are_failures():
  x = np.array([1.0, 2.0, 3.0, 4.0])
  # Up to half diverged: each counts as the trial's worst finite score.
  assert search.objective([1.0, 2.0, np.nan, 4.0], kind="mean") == pytest.approx((1 + 2 + 4 + 4) / 4)
  assert search.objective(x, [0, 0, 1, 0], kind="mean") == pytest.approx((1 + 2 + 4 + 4) / 4)
  assert search.objective([1.0, 2.0, np.inf, 4.0], kind="mean", higher_is_better=True) == \
      pytest.approx((1 + 2 + 1 + 4) / 4)
  # More than half: a failed trial, the worst value in the metric's direction.
  assert search.objective(x, [1, 1, 1, 0], kind="median") == math.inf
  assert search.objective(x, [1, 1, 1, 0], kind="iqm", higher_is_better=True) == -math.inf
  assert search.objective([np.nan, np.nan], kind="mean") == math.inf
  assert search.objective(x, [1, 1, 1, 0], kind="mean", max_diverged=1.0) == pytest.approx(4.0)
  # A failure costs: the mean with one diverged repeat is worse than without it.
  assert search.objective(x, [1, 0, 0, 0]) > search.objective(x[1:])


def test_objective_rejects_bad_input():
  with pytest.raises(ConfigError, match=r"objective = 'ucbb' is not allowed.*Did you mean 'ucb'\?"):
    search.objective([1.0, 2.0], kind="ucbb")
  with pytest.raises(ConfigError, match=r"'ucb' needs at least 2 repeats per trial, got 1"):
    search.objective([1.0], kind="ucb")


# ---------------------------------------------------------------------------
# the loop


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_tpe_finds_the_good_learning_rates(tmp_path, higher_is_better):
  sign = -1 if higher_is_better else 1

  def evaluate(params_list):
    return [(sign * synthetic(p)[0], synthetic(p)[1]) for p in params_list]

  space = S.Space.from_mapping(LR_SPACE)
  result = search.run_search(space, evaluate, trials=32, batch=4, storage_path=tmp_path, seed=0,
                             higher_is_better=higher_is_better)
  assert result.completed == 32 and result.evaluated == 32
  # The bowl's floor is 10**-2.5; within 0.25 decades the mean loss is < 0.07.
  assert abs(math.log10(result.best_params["optim.learning_rate"]) + 2.5) < 0.25
  assert sign * result.best_value < 0.07


def test_batches_ask_batch_trials_per_call(tmp_path):
  evaluate = Evaluator()
  space = S.Space.from_mapping({**LR_SPACE, "model.dropout": "uniform:0:0.5"})
  result = search.run_search(space, evaluate, sampler="random", trials=10, batch=4,
                             storage_path=tmp_path, seed=1)
  assert [len(c) for c in evaluate.calls] == [4, 4, 2]
  assert result.completed == 10 and len(set(evaluate.trained)) == 10
  table = pd.read_csv(tmp_path / "trials.csv")
  assert list(table.columns) == list(search.TRIAL_COLUMNS) + ["optim.learning_rate", "model.dropout"]
  assert list(table["trial"]) == list(range(10)) and set(table["state"]) == {"COMPLETE"}
  assert set(table["repeats"]) == {5} and table["elimination_round"].isna().all()
  # Rerunning the finished command trains nothing; more trials extend the study.
  again = Evaluator()
  assert search.run_search(space, again, sampler="random", trials=10, batch=4,
                           storage_path=tmp_path, seed=1).evaluated == 0
  assert again.calls == []
  search.run_search(space, again, sampler="random", trials=12, batch=4, storage_path=tmp_path, seed=1)
  assert [len(c) for c in again.calls] == [2]


def test_resume_after_a_crash_in_training_repeats_nothing(tmp_path):
  space = S.Space.from_mapping(LR_SPACE)
  crashing = Evaluator(fail_on_call=3)
  with pytest.raises(RuntimeError, match="simulated crash"):
    search.run_search(space, crashing, trials=12, batch=4, storage_path=tmp_path / "a", seed=3)
  assert states(tmp_path / "a").count("RUNNING") == 4
  resumed = Evaluator()
  result = search.run_search(space, resumed, trials=12, batch=4, storage_path=tmp_path / "a", seed=3)
  finished = crashing.trained[:8] + resumed.trained  # the crashed call finished nothing
  assert len(finished) == len(set(finished)) == 12 and result.evaluated == 4 + 0
  assert states(tmp_path / "a") == ["COMPLETE"] * 12
  # The resumed study is the uninterrupted one, trial for trial.
  search.run_search(space, Evaluator(), trials=12, batch=4, storage_path=tmp_path / "b", seed=3)
  assert history(tmp_path / "a") == history(tmp_path / "b")


def test_results_stored_before_a_kill_are_told_not_retrained(tmp_path, monkeypatch):
  space = S.Space.from_mapping(LR_SPACE)
  told = []
  real_tell = optuna.study.Study.tell

  def tell_then_die(self, trial, *args, **kwargs):
    if len(told) == 6:  # mid-batch: trials 6 and 7 hold their results but are not told
      raise KeyboardInterrupt
    told.append(trial)
    return real_tell(self, trial, *args, **kwargs)

  monkeypatch.setattr(optuna.study.Study, "tell", tell_then_die)
  first = Evaluator()
  with pytest.raises(KeyboardInterrupt):
    search.run_search(space, first, trials=12, batch=4, storage_path=tmp_path, seed=4)
  monkeypatch.setattr(optuna.study.Study, "tell", real_tell)
  assert states(tmp_path).count("RUNNING") == 2
  second = Evaluator()
  result = search.run_search(space, second, trials=12, batch=4, storage_path=tmp_path, seed=4)
  assert len(second.trained) == 4 and not set(first.trained) & set(second.trained)
  assert result.reused == 2 and states(tmp_path) == ["COMPLETE"] * 12


KILLED_RUN = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_search import synthetic
    from jaxlstm import search, space as S

    store, calls = {store!r}, []

    def evaluate(params_list):
      calls.append(len(params_list))
      for i, params in enumerate(params_list):
        scores, diverged = synthetic(params)
        with open(store, "a") as f:  # a results folder: each config saved as it finishes
          f.write(json.dumps({{"key": S.point_key(params), "scores": scores.tolist()}}) + "\\n")
        if len(calls) == 3 and i == 1:
          os.kill(os.getpid(), signal.SIGKILL)  # kill -9 half-way through the third batch
      return [synthetic(p) for p in params_list]

    search.run_search(S.Space.from_mapping({space!r}), evaluate, trials=16, batch=4,
                      storage_path={folder!r}, seed=5)
""")


def test_kill_9_mid_search_then_resume(tmp_path):
  folder, store = tmp_path / "run", tmp_path / "store.jsonl"
  script = KILLED_RUN.format(tests=str(REPO / "tests"), store=str(store), space=LR_SPACE, folder=str(folder))
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert states(folder).count("RUNNING") == 4
  saved = {json.loads(line)["key"] for line in store.read_text().splitlines()}
  assert len(saved) == 10  # two batches of 4, then 2 of the third

  def known(params):  # what the lead's store lookup does for a resumed folder
    key = S.point_key(params)
    return synthetic(params) if key in saved else None

  resumed = Evaluator()
  result = search.run_search(S.Space.from_mapping(LR_SPACE), resumed, trials=16, batch=4,
                             storage_path=folder, seed=5, known=known)
  assert not set(resumed.trained) & saved  # nothing the killed run finished trains again
  assert [len(c) for c in resumed.calls] == [2, 4]  # the killed batch's other half, then batch 4
  assert result.completed == 16 and states(folder) == ["COMPLETE"] * 16
  table = pd.read_csv(folder / "trials.csv")
  assert len(table) == 16 and table["objective"].notna().all()
  search.run_search(S.Space.from_mapping(LR_SPACE), Evaluator(), trials=16, batch=4,
                    storage_path=tmp_path / "ref", seed=5)
  assert history(folder) == history(tmp_path / "ref")


def test_a_trial_killed_before_its_params_were_drawn_fails_untrained(tmp_path):
  space = S.Space.from_mapping({**LR_SPACE, "model.dropout": "uniform:0:0.5"})
  search.run_search(space, Evaluator(), sampler="random", trials=2, storage_path=tmp_path)
  study = search.open_study(tmp_path)
  study.ask({"optim.learning_rate": space.to_optuna()["optim.learning_rate"]})  # one of two params
  evaluate = Evaluator()
  result = search.run_search(space, evaluate, sampler="random", trials=3, storage_path=tmp_path)
  assert states(tmp_path) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
  assert len(evaluate.trained) == 1 and result.completed == 3
  assert pd.read_csv(tmp_path / "trials.csv")["state"].tolist()[2] == "FAIL"


def test_repeated_params_are_trained_once(tmp_path):
  space = S.Space.from_mapping({"model.cell": "choice:lstm,gru", "model.layers": "int:1:2"})
  calls = []

  def evaluate(params_list):
    calls.append(params_list)
    return [(np.full(3, p["model.layers"] + (p["model.cell"] == "gru")), np.zeros(3, bool))
            for p in params_list]

  result = search.run_search(space, evaluate, trials=12, batch=3, storage_path=tmp_path, seed=0)
  trained = [S.point_key(p) for call in calls for p in call]
  assert len(trained) == len(set(trained)) <= 4
  assert result.completed == 12 and result.reused == 12 - len(trained)
  table = pd.read_csv(tmp_path / "trials.csv")
  assert table["reused_from"].notna().sum() == 12 - len(trained)
  assert result.best_params == {"model.cell": "lstm", "model.layers": 1}


def test_known_results_are_not_trained(tmp_path):
  space = S.Space.from_mapping(LR_SPACE)
  evaluate = Evaluator()
  seen = []

  def known(params):
    seen.append(params)
    return synthetic(params) if len(seen) % 2 else None

  search.run_search(space, evaluate, sampler="random", trials=6, batch=3, storage_path=tmp_path,
                    seed=0, known=known)
  assert len(seen) == 6 and len(evaluate.trained) == 3


def test_grid_sampler_covers_the_grid_once(tmp_path):
  space = S.Space.from_mapping({**LR_SPACE, "model.cell": "choice:lstm,gru"})
  evaluate = Evaluator()
  seen = []

  def spy(params_list):
    seen.extend((p["optim.learning_rate"], p["model.cell"]) for p in params_list)
    return [synthetic(p) for p in params_list]

  result = search.run_search(space, spy, sampler="grid", grid_points=3, trials=100, batch=4,
                             storage_path=tmp_path, seed=0)
  assert result.completed == 6 and len(seen) == 6
  assert sorted(seen) == sorted((lr, c) for lr in (1e-5, 10 ** -2.5, 1.0) for c in ("lstm", "gru"))
  with pytest.raises(ConfigError, match="needs grid_points"):
    search.run_search(space, evaluate, sampler="grid", trials=4, storage_path=tmp_path / "g")


def test_grid_resumed_after_a_crash_still_covers_it_once(tmp_path):
  space = S.Space.from_mapping({**LR_SPACE, "model.cell": "choice:lstm,gru"})
  crashing = Evaluator(fail_on_call=2)
  with pytest.raises(RuntimeError):
    search.run_search(space, crashing, sampler="grid", grid_points=3, trials=6, batch=4,
                      storage_path=tmp_path, seed=0)
  resumed = Evaluator()
  search.run_search(space, resumed, sampler="grid", grid_points=3, trials=6, batch=4,
                    storage_path=tmp_path, seed=0)
  finished = crashing.trained[:4] + resumed.trained
  assert len(finished) == len(set(finished)) == 6 and states(tmp_path) == ["COMPLETE"] * 6


def test_failed_trials_are_worst_and_the_search_goes_on(tmp_path):
  space = S.Space.from_mapping(LR_SPACE)

  def evaluate(params_list):  # large learning rates diverge in most repeats
    out = []
    for p in params_list:
      scores, diverged = synthetic(p)
      if p["optim.learning_rate"] > 0.1:
        diverged[:4] = True
        scores[:4] = np.nan
      out.append((scores, diverged))
    return out

  result = search.run_search(space, evaluate, trials=16, batch=4, storage_path=tmp_path, seed=0)
  table = pd.read_csv(tmp_path / "trials.csv")
  big = table["optim.learning_rate"] > 0.1
  assert big.any() and (table.loc[big, "objective"] == math.inf).all()
  assert (table.loc[big, "n_diverged"] == 4).all() and set(table["state"]) == {"COMPLETE"}
  assert result.best_params["optim.learning_rate"] <= 0.1


def test_racing_elimination_round_reaches_the_table(tmp_path):
  space = S.Space.from_mapping(LR_SPACE)

  def evaluate(params_list):
    return [search.TrialResult(*synthetic(p, repeats=5), elimination_round=0 if i % 2 else None)
            for i, p in enumerate(params_list)]

  search.run_search(space, evaluate, sampler="random", trials=4, batch=4, storage_path=tmp_path)
  table = pd.read_csv(tmp_path / "trials.csv")
  assert table["elimination_round"].isna().tolist() == [True, False, True, False]
  assert (table["elimination_round"].dropna() == 0).all()


def test_a_changed_search_in_the_same_folder_is_refused(tmp_path):
  space = S.Space.from_mapping(LR_SPACE)
  search.run_search(space, Evaluator(), trials=2, storage_path=tmp_path)
  wider = S.Space.from_mapping({"optim.learning_rate": "loguniform:1e-6:1"})
  with pytest.raises(ConfigError, match=r"holds a search made differently \(optim\.learning_rate was "
                                        r"loguniform:1e-05:1\.0, now loguniform:1e-06:1\.0\)"):
    search.run_search(wider, Evaluator(), trials=2, storage_path=tmp_path)
  with pytest.raises(ConfigError, match=r"\(sampler was 'tpe', now 'random'\)"):
    search.run_search(space, Evaluator(), sampler="random", trials=2, storage_path=tmp_path)
  with pytest.raises(ConfigError, match=r"\(objective was 'mean', now 'ucb'\)"):
    search.run_search(space, Evaluator(), objective_kind="ucb", trials=2, storage_path=tmp_path)
  with pytest.raises(ConfigError, match=r"\(higher_is_better was False, now True\)"):
    search.run_search(space, Evaluator(), higher_is_better=True, trials=2, storage_path=tmp_path)
  with pytest.raises(ConfigError, match=r"\(seed was 0, now 1\)"):
    search.run_search(space, Evaluator(), seed=1, trials=2, storage_path=tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"sampler": "tpee"}, r"sampler = 'tpee' is not allowed.*Did you mean 'tpe'\?"),
    ({"objective_kind": "mode"}, r"objective = 'mode' is not allowed"),
    ({"trials": 0}, r"trials = 0 is not allowed: expected an integer >= 1"),
    ({"batch": 2.5}, r"batch = 2\.5 is not allowed"),
])
def test_bad_settings_are_refused(tmp_path, kwargs, match):
  with pytest.raises(ConfigError, match=match):
    search.run_search(S.Space.from_mapping(LR_SPACE), Evaluator(), storage_path=tmp_path,
                      **{"trials": 2, **kwargs})


def test_missing_optuna_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "optuna", None)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[search\]"'):
    search.run_search(S.Space.from_mapping(LR_SPACE), Evaluator(), trials=2, storage_path=tmp_path)
