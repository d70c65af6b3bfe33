"""Compiled programs across processes, and imports that stay light.

In process, `tests/test_train.py` checks that a second `fit` of the same shapes traces
nothing. Here real subprocesses check the persistent XLA cache (a new process with a
warm cache compiles nothing) and that the analysis modules never load jax.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

FIT = textwrap.dedent("""
    import collections, json, sys
    import jax
    counts = collections.Counter()
    jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
    import jaxlstm
    config = jaxlstm.Config().override({"model.cells": 3, "train.epochs": 4, "train.batch_size": 0})
    ens = jaxlstm.fit(config, repeats=int(sys.argv[1]), seed=int(sys.argv[2]))
    print(json.dumps({"misses": counts["/jax/compilation_cache/cache_misses"],
                      "hits": counts["/jax/compilation_cache/cache_hits"],
                      "compiles": ens.timings["compiles"]}))
""")


def _run(code: str, *args: str, env: dict) -> str:
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(300)
def test_a_new_process_with_a_warm_cache_compiles_nothing(tmp_path):
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("JAXLSTM_NO_CACHE", None)
  cold = json.loads(_run(FIT, "5", "0", env=env))
  assert cold["misses"] >= 1  # the first process compiled and wrote the cache
  assert (tmp_path / "cache" / "jaxlstm" / "xla").is_dir()
  warm = json.loads(_run(FIT, "5", "7", env=env))  # another seed, same shapes
  assert warm["misses"] == 0 and warm["hits"] >= 1, warm
  off = json.loads(_run(FIT, "5", "7", env=dict(env, JAXLSTM_NO_CACHE="1")))
  assert off["misses"] == 0 and off["hits"] == 0  # JAXLSTM_NO_CACHE=1: the cache is not used at all


@pytest.mark.parametrize("module", ["jaxlstm", "jaxlstm.report", "jaxlstm.stats", "jaxlstm.diagnose",
                                    "jaxlstm.plots", "jaxlstm.tables", "jaxlstm.study"])
def test_analysis_modules_do_not_import_jax(module):
  code = f"import sys, {module}; print('jax' in sys.modules, 'flax' in sys.modules, 'optax' in sys.modules)"
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["False", "False", "False"]


def test_the_engine_loads_on_first_use():
  code = "import sys, jaxlstm; f = jaxlstm.fit; print('jax' in sys.modules, f.__module__)"
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["True", "jaxlstm.ensemble"]


def test_groups_that_differ_only_in_input_width_keep_their_own_programs_and_states():
  """One-hot (10 features) and integer (1 feature) codes of one problem: two groups, two programs,
  and neither reuses the other's cached state shapes."""
  import jaxlstm
  base = jaxlstm.Config().override({"data.problem": "echo", "data.options": {"n_train": 8, "n_val": 4},
                                    "model.cells": 2, "model.output_activation": "softmax",
                                    "train.loss": "categorical_crossentropy", "train.epochs": 2})
  configs = [base, base.override({"data.encoding": "integer"})]
  onehot, integer = jaxlstm.fit_many(configs, repeats=2)
  assert onehot.params["lstm_0"]["kernel"].shape[1] == 10
  assert integer.params["lstm_0"]["kernel"].shape[1] == 1
