"""Compiled programs across processes, and imports that stay light.

In process, `tests/test_train.py` checks that a second `fit` of the same shapes traces
nothing. Here real subprocesses check the persistent caches (a new process with a
warm cache compiles nothing; with the program store it does not even trace, and
gets the same numbers; a damaged or failing entry is compiled again) and that the
analysis modules never load jax.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import pytest

FIT = textwrap.dedent("""
    import collections, hashlib, json, sys
    import jax, numpy as np
    counts, traces = collections.Counter(), collections.Counter()
    jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: traces.update([kw.get("fun_name")])
        if event == "/jax/core/compile/jaxpr_trace_duration" else None)
    from jaxlstm import compiled
    if "--through-jax-cache" in sys.argv:  # compile through JAX's cache, store what it loads (fails elsewhere)
      compiled._BYPASS_JAX_CACHE = False
    import jaxlstm
    config = jaxlstm.Config().override({"model.cells": 3, "train.epochs": 4, "train.batch_size": 0})
    ens = jaxlstm.fit(config, repeats=int(sys.argv[1]), seed=int(sys.argv[2]))
    numbers = [np.asarray(ens.history[k]) for k in sorted(ens.history)] + jax.tree.leaves(ens.params)
    print(json.dumps({"misses": counts["/jax/compilation_cache/cache_misses"],
                      "hits": counts["/jax/compilation_cache/cache_hits"],
                      "compiles": ens.timings["compiles"], "traced": traces["run_chunk"], "traces": traces,
                      "digest": hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in numbers)).hexdigest()}))
""")


def _run(code: str, *args: str, env: dict) -> str:
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip().splitlines()[-1]


def _env(tmp_path) -> dict:
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("JAXLSTM_NO_CACHE", None)
  return env


def _stored(tmp_path) -> list:
  return sorted((tmp_path / "cache" / "jaxlstm" / "programs").glob("*.jaxexe"))


@pytest.mark.timeout(300)
def test_a_new_process_with_a_warm_cache_compiles_nothing(tmp_path):
  env = _env(tmp_path)
  cold = json.loads(_run(FIT, "5", "0", env=env))
  assert cold["traced"] == 1  # the first process compiled and stored the program
  assert (tmp_path / "cache" / "jaxlstm" / "xla").is_dir() and len(_stored(tmp_path)) == 1
  warm = json.loads(_run(FIT, "5", "0", env=env))
  # The program store: no trace, no lowering, not even a lookup in JAX's cache; the same numbers.
  assert warm["misses"] == 0 and warm["traced"] == 0 and warm["compiles"] == 1, warm
  assert warm["digest"] == cold["digest"]
  # Nor does it trace the model's initialisation or the optimizer's for the shapes of the
  # parameters and the states (`compiled.shapes`): nothing is traced at all.
  assert "<lambda>" in cold["traces"] and not warm["traces"], warm["traces"]
  assert len(list((tmp_path / "cache" / "jaxlstm" / "programs").glob("*.shapes.json"))) == 2
  other_seed = json.loads(_run(FIT, "5", "7", env=env))  # another seed, same shapes: the same program
  assert other_seed["traced"] == 0 and other_seed["digest"] != cold["digest"]
  off = json.loads(_run(FIT, "5", "0", env=dict(env, JAXLSTM_NO_CACHE="1")))
  # JAXLSTM_NO_CACHE=1: neither cache is used at all.
  assert off["misses"] == 0 and off["hits"] == 0 and off["traced"] == 1 and off["digest"] == cold["digest"]
  assert "<lambda>" in off["traces"]


@pytest.mark.timeout(400)
def test_the_program_store_heals_damaged_and_failing_entries(tmp_path):
  """What is stored only saves time: a damaged entry, or one whose first call fails, is compiled again.

  XLA:CPU (jaxlib 0.10.2) cannot re-serialise an executable that JAX's cache loaded:
  loaded in another process, its first call fails ("Function ... not found"). So the
  store compiles with JAX's cache off, and a stored program that fails anyway is
  compiled again and replaced. The test makes such an entry on purpose.
  """
  env = _env(tmp_path)
  cold = json.loads(_run(FIT, "5", "0", env=env))
  (entry,) = _stored(tmp_path)
  entry.write_bytes(b"not a program")
  damaged = json.loads(_run(FIT, "5", "0", env=env))
  assert damaged["traced"] == 1 and damaged["digest"] == cold["digest"]
  healed = json.loads(_run(FIT, "5", "0", env=env))
  assert healed["traced"] == 0 and healed["digest"] == cold["digest"]

  entry.unlink()
  json.loads(_run(FIT, "5", "0", "--through-jax-cache", env=env))  # puts the program in JAX's cache too
  entry.unlink()
  poisoned = json.loads(_run(FIT, "5", "0", "--through-jax-cache", env=env))
  assert poisoned["hits"] >= 1 and len(_stored(tmp_path)) == 1  # stored what JAX's cache loaded
  failing = json.loads(_run(FIT, "5", "0", env=env))
  assert failing["traced"] == 1, "the entry re-serialised from JAX's cache ran: has jax fixed that? " + str(failing)
  assert failing["digest"] == cold["digest"]
  again = json.loads(_run(FIT, "5", "0", env=env))
  assert again["traced"] == 0 and again["digest"] == cold["digest"]

  (entry,) = _stored(tmp_path)
  entry.chmod(0o664)  # writable by others: an entry that is not ours alone is never loaded
  shared = json.loads(_run(FIT, "5", "0", env=env))
  assert shared["traced"] == 1 and shared["digest"] == cold["digest"]
  assert _stored(tmp_path)[0].stat().st_mode & 0o777 == 0o600


def test_the_store_fingerprint_follows_the_jax_settings_that_change_programs():
  from jaxlstm import compiled
  before = compiled.fingerprint()
  assert compiled.fingerprint() == before
  saved = jax.config.values["jax_default_matmul_precision"]
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    assert compiled.fingerprint() != before
  finally:
    jax.config.update("jax_default_matmul_precision", saved)
  assert compiled.fingerprint() == before
  # The rank-promotion check and the cache settings do not change a program: in-process
  # tests (which raise on rank promotion) and the command lines share stored programs.
  jax.config.update("jax_numpy_rank_promotion", "allow")
  try:
    assert compiled.fingerprint() == before
  finally:
    jax.config.update("jax_numpy_rank_promotion", "raise")


def test_the_store_fingerprint_holds_the_kind_of_cpu(monkeypatch):
  # XLA:CPU compiles for the host's instruction set, and numbers differ by it (W2's mean validation MAE
  # 0.0320963 on an avx2 host, 0.0320131 on an avx512 one, same code: benchmarks/RESULTS.md, "thirteenth
  # session"). A store shared by machines (an NFS home) must not hand one kind's program to another.
  from jaxlstm import compiled
  before = compiled.fingerprint()
  if os.path.exists("/proc/cpuinfo"):  # Linux: the instruction-set flags themselves are in it
    assert "flags" in compiled._host_cpu() or "Features" in compiled._host_cpu()
  monkeypatch.setattr(compiled, "_host_cpu", lambda: "x86_64;another CPU;flags: sse2 avx2 fma")
  compiled._code_fingerprint.cache_clear()
  try:
    assert compiled.fingerprint() != before
  finally:
    monkeypatch.undo()
    compiled._code_fingerprint.cache_clear()
  assert compiled.fingerprint() == before


def test_two_host_devices_asked_for_before_or_after_jax_share_the_store():
  # The command line asks through XLA_FLAGS before jax is imported; a script that imported jax
  # first gets the same devices through jax's setting. Same devices, same programs, same entries.
  flag = "--xla_force_host_platform_device_count=2"
  before = f"import os; os.environ['XLA_FLAGS'] = '{flag}'; import jax"
  after = "import jax; jax.config.update('jax_num_cpu_devices', 2)"
  prints = []
  for setup in (before, after):
    code = setup + "; from jaxlstm import compiled; print(len(jax.devices()), compiled.fingerprint())"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    prints.append(proc.stdout.split())
  assert prints[0][0] == prints[1][0] == "2" and prints[0][1] == prints[1][1]


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


def test_stored_tree_structures_round_trip_and_resolve_only_known_types():
  """The store keeps argument and output structures as JSON (nothing is unpickled): NamedTuples of
  jaxlstm, optax and flax and plain containers come back equal; any other type is refused."""
  import optax

  from jaxlstm import compiled
  from jaxlstm.train import TrainState
  state = TrainState({"lstm_0": {"kernel": 1, "bias": 2}}, optax.ScaleByAdamState(3, 4, 5), 6, (7, None), [8])
  tree = jax.tree.structure(({"x": state, "y": None}, {}))
  assert compiled._tree_from_json(json.loads(json.dumps(compiled._tree_to_json(tree)))) == tree
  for name in ("os:system", "collections:OrderedDict", "builtins:eval"):
    with pytest.raises((ValueError, KeyError)):
      compiled._tree_from_json([name, None, []])
  with pytest.raises(ValueError, match="cannot store a tree node"):
    compiled._tree_to_json(jax.tree.structure(jax.tree_util.Partial(print, 1)))


def test_a_program_that_cannot_be_stored_is_marked_and_not_tried_again(tmp_path):
  """What jax cannot serialise (e.g. a program with constants) is marked; later compiles use JAX's cache."""
  from jaxlstm import compiled
  compiles = []

  def compile_now():
    compiles.append(jax.config.values["jax_enable_compilation_cache"])
    return object()  # nothing serialize_executable can take

  was_on = jax.config.values["jax_enable_compilation_cache"]
  entry = tmp_path / "program.jaxexe"
  compiled._compile_and_store(entry, compile_now)
  assert entry.with_suffix(".unstorable").exists() and not entry.exists()
  compiled._compile_and_store(entry, compile_now)
  assert compiles == [False, was_on]  # first with JAX's cache off (to store it), then through it
  assert jax.config.values["jax_enable_compilation_cache"] == was_on


def _entry(root, name: str, size: int, age: float):
  path = root / name
  path.write_bytes(b"x" * size)
  stamp = time.time() - age
  os.utime(path, (stamp, stamp))
  return path


def test_the_store_evicts_its_least_recently_used_entries_and_nothing_else(tmp_path):
  """Over its limit, the store deletes its oldest entries (by last use) first; never the entry just
  written, a file that is not an entry, or a symlink; temporary files only once their write is long dead."""
  from jaxlstm import compiled
  root = tmp_path / "programs"
  root.mkdir()
  old, middle, new = (_entry(root, f"{c * 64}.jaxexe", 100, age) for c, age in (("a", 300), ("b", 200), ("c", 100)))
  shapes = _entry(root, "d" * 64 + ".shapes.json", 100, 250)
  foreign = _entry(root, "notes.txt", 1000, 10_000)
  outside = _entry(tmp_path, "outside.bin", 100, 10_000)
  link = root / ("e" * 64 + ".jaxexe")
  link.symlink_to(outside)
  dead, fresh = _entry(root, ".tmp-k3j_x.jaxexe", 100, 7200), _entry(root, ".tmp-q7x2.json", 100, 5)

  assert compiled.evict(root, 250) == 3  # the dead temporary file, then the two least recently used
  assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in (middle, new, foreign, link, fresh))
  assert compiled.evict(root, 50, keep=middle) == 1 and not new.exists() and middle.exists()
  assert compiled.evict(root, None) == 0 and outside.exists() and foreign.exists() and fresh.exists()
  del old, shapes, dead


def test_the_store_limit_comes_from_the_environment_and_is_checked(monkeypatch):
  from jaxlstm import config
  assert config.program_store_limit({}) == 2**30
  assert config.program_store_limit({"JAXLSTM_STORE_LIMIT": "500M"}) == 500 * 2**20
  assert config.program_store_limit({"JAXLSTM_STORE_LIMIT": "none"}) is None
  for bad in ("lots", "-1G", "0", "inf"):
    with pytest.raises(ValueError, match=f"JAXLSTM_STORE_LIMIT='{bad}' is not a size: set it to a size such as"):
      config.program_store_limit({"JAXLSTM_STORE_LIMIT": bad})
  monkeypatch.setenv("JAXLSTM_STORE_LIMIT", "lots")
  from jaxlstm import sweep
  proc = subprocess.run([sys.executable, "-m", "jaxlstm.sweep", "--repeats", "2", "--dry-run"], capture_output=True,
                        text=True, timeout=120)
  expected = (f"{sweep.PROG}: error: JAXLSTM_STORE_LIMIT='lots' is not a size: set it to a size such as 500M or 4G, "
              "or to 'none' for no limit")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [expected]


def test_programs_stored_past_the_limit_push_out_the_least_recently_used(tmp_path, monkeypatch):
  """Real entries: a program written past the limit evicts the oldest; reading an entry marks it used."""
  import numpy as np

  from jaxlstm import compiled
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  root = compiled.store_dir()
  assert root == tmp_path / "cache" / "jaxlstm" / "programs"
  first = compiled.shapes(("test-lru", 1), lambda: {"w": jax.ShapeDtypeStruct((2, 3), np.float32)})
  compiled.program(("test-lru", 2), lambda x: x * 2, (np.zeros(3, np.float32),))
  (shapes_file,), (program_file,) = list(root.glob("*.shapes.json")), list(root.glob("*.jaxexe"))
  for path in (shapes_file, program_file):
    os.utime(path, (time.time() - 600, time.time() - 600))
  assert compiled.shapes(("test-lru", 1), lambda: pytest.fail("not read from the store")) == first
  assert time.time() - shapes_file.stat().st_mtime < 60  # marked used
  size = program_file.stat().st_size  # room for the shapes and one and a half programs
  monkeypatch.setenv("JAXLSTM_STORE_LIMIT", str(shapes_file.stat().st_size + size + size // 2))
  compiled.program(("test-lru", 3), lambda x: x * 3, (np.zeros(3, np.float32),))
  assert shapes_file.exists() and not program_file.exists() and len(list(root.glob("*.jaxexe"))) == 1


def test_jaxs_cache_is_kept_under_the_limit_in_our_folder_and_never_in_the_users(tmp_path, monkeypatch):
  """JAX writes its cache without deleting (its own limit needs `filelock`): turning the cache on trims
  our folder to JAXLSTM_STORE_LIMIT, oldest written first, and leaves other files and a folder the user
  named (JAX_COMPILATION_CACHE_DIR) alone."""
  import numpy as np

  from jaxlstm import compiled
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  for key, value in compiled._persistent.items():  # this process's cache settings come back afterwards
    monkeypatch.setitem(compiled._persistent, key, value)
  root = compiled.configure_persistent_cache(True)
  assert root == tmp_path / "cache" / "jaxlstm" / "xla"
  for scale in (2.0, 3.0):  # two real entries of JAX's, written through its cache (not the store)
    jax.jit(lambda x, s=scale: x * s).lower(np.zeros(4, np.float32)).compile()
  written = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
  assert len(written) == 2 and all(compiled._JAX_ENTRY_NAME.fullmatch(p.name) for p in written), written
  os.utime(written[0], (time.time() - 600, time.time() - 600))
  foreign = _entry(root, "notes-" + "a" * 64 + ".txt", 10_000, 10_000)
  monkeypatch.setenv("JAXLSTM_STORE_LIMIT", str(written[1].stat().st_size + 1))
  compiled.configure_persistent_cache(True)
  assert sorted(root.iterdir()) == sorted([foreign, written[1]])

  theirs = tmp_path / "theirs"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(theirs))
  assert compiled.configure_persistent_cache(True) == theirs
  for scale in (4.0, 5.0):
    jax.jit(lambda x, s=scale: x * s).lower(np.zeros(4, np.float32)).compile()
  assert compiled.trim_jax_cache() == 0 and len(list(theirs.iterdir())) == 2


def _traced_by(threads: list):
  """A tiny program that records which thread traced it."""
  import threading

  def fn(x):
    threads.append(threading.current_thread().name)
    return jax.numpy.tanh(x) * 2
  return fn


def _join_builder():
  from jaxlstm import compiled
  builder = compiled._BUILDER["thread"]
  if builder is not None:
    builder.join(timeout=60)


def test_a_program_asked_for_ahead_is_built_while_another_compiles_and_only_once():
  """`ahead` queues; the next compile (XLA lets go of Python's lock) starts the builder thread; the
  program the caller then asks for is that thread's."""
  import numpy as np

  from jaxlstm import compiled
  x, threads, key = np.arange(6, dtype=np.float32).reshape(2, 3), [], ("ahead", time.time_ns())
  compiled.ahead(key, _traced_by(threads), (x,))
  compiled.ahead(key, _traced_by(threads), (x,))  # queued once
  assert threads == []  # nothing runs before a compile (or `start_ahead`)
  compiled.program(("ahead-trigger", time.time_ns()), lambda a: a @ a.T, (x,))
  _join_builder()
  executable, _ = compiled.program(key, _traced_by(threads), (x,))
  assert threads == ["jaxlstm-ahead"]
  np.testing.assert_allclose(np.asarray(executable(x)), np.tanh(x) * 2, rtol=1e-6)


def test_a_program_not_yet_started_ahead_is_built_by_its_caller_once():
  import numpy as np

  from jaxlstm import compiled
  x, threads, key = np.ones((2, 2), np.float32), [], ("ahead-late", time.time_ns())
  compiled.ahead(key, _traced_by(threads), (x,))
  _, seconds = compiled.program(key, _traced_by(threads), (x,))
  compiled.start_ahead()  # the queued job finds it built
  _join_builder()
  assert threads == ["MainThread"] and seconds > 0
  assert compiled.program(key, _traced_by(threads), (x,))[1] == 0.0


def test_a_program_under_way_on_the_builder_is_waited_for_and_counts_as_the_callers_build():
  """Asked for while the background thread traces it, the program is waited for, not built twice; its
  first caller gets seconds > 0 (a group's compile is counted once), later callers 0."""
  import threading

  import numpy as np

  from jaxlstm import compiled
  started, go, threads = threading.Event(), threading.Event(), []

  def slow(x):
    threads.append(threading.current_thread().name)
    started.set()
    go.wait(30)
    return x + 1

  x, key = np.zeros((3,), np.float32), ("ahead-slow", time.time_ns())
  compiled.ahead(key, slow, (x,))
  compiled.start_ahead()
  assert started.wait(30)
  threading.Timer(0.2, go.set).start()
  executable, seconds = compiled.program(key, slow, (x,))
  assert threads == ["jaxlstm-ahead"] and seconds > 0
  np.testing.assert_array_equal(np.asarray(executable(x)), x + 1)
  assert compiled.program(key, slow, (x,))[1] == 0.0


def test_the_builder_lets_go_when_its_queue_is_empty_so_a_later_job_gets_a_thread():
  """A builder past its last look at the queue, but not yet ended, must not swallow the next job.

  It clears `_BUILDER` under the lock before it ends; `start_ahead` then starts a new thread.
  (Before, a job queued in that window stayed queued: a flake of the test below, once on Python 3.13.)
  """
  import threading

  from jaxlstm import compiled
  ran = [threading.Event(), threading.Event()]
  compiled.later(ran[0].set)
  compiled.start_ahead()
  first = compiled._BUILDER["thread"]
  assert ran[0].wait(60)
  first.join(timeout=60)
  assert compiled._BUILDER["thread"] is None
  compiled.later(ran[1].set)
  compiled.start_ahead()
  assert ran[1].wait(60) and compiled._BUILDER["thread"] is not first


def test_a_program_that_fails_ahead_fails_again_for_its_caller():
  """The builder keeps a failure to itself: the caller compiles again and meets the error first hand."""
  import numpy as np

  from jaxlstm import compiled
  calls = []

  def broken(x):
    calls.append(1)
    raise ValueError("this program cannot be traced")

  x, key = np.ones((2,), np.float32), ("ahead-broken", time.time_ns())
  compiled.ahead(key, broken, (x,))
  compiled.start_ahead()
  _join_builder()
  with pytest.raises(ValueError, match="cannot be traced"):
    compiled.program(key, broken, (x,))
  assert len(calls) == 2


def test_jax_cache_stays_off_until_the_last_of_overlapping_store_compiles_ends():
  """Two threads compiling for the store at once: JAX's cache is off while either runs, then back on."""
  import threading

  from jaxlstm import compiled
  was = jax.config.values["jax_enable_compilation_cache"]
  entered, leave, seen = threading.Event(), threading.Event(), []

  def other():
    with compiled._jax_cache_off():
      entered.set()
      leave.wait(30)
      seen.append(jax.config.values["jax_enable_compilation_cache"])

  thread = threading.Thread(target=other)
  with compiled._jax_cache_off():
    thread.start()
    entered.wait(30)
  seen.append(jax.config.values["jax_enable_compilation_cache"])  # the other thread is still in
  leave.set()
  thread.join(30)
  assert seen == [False, False]
  assert jax.config.values["jax_enable_compilation_cache"] == was


def test_the_next_groups_program_is_built_while_the_one_before_it_compiles_and_trains():
  """`ensemble.prepare_group` (what the sweep does for the group after the running one): the second
  group's program is traced on the background thread, and its `run_group` counts it as its one compile."""
  import threading

  from conftest import TRACE_EVENT

  import jaxlstm
  from jaxlstm import compiled, ensemble
  base = jaxlstm.Config().override({"model.cells": 2, "train.epochs": 2, "train.batch_size": 0})
  first, second = ensemble.plan([base, base.override({"model.layers": 2})], 2)
  traced_on = []

  def listener(event, duration, **kwargs):
    if event == TRACE_EVENT and kwargs.get("fun_name") == "run_chunk":
      traced_on.append(threading.current_thread().name)

  compiled.clear()
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    ensemble.prepare_group(second, seed=0)
    _, info_first = ensemble.run_group(first, seed=0)
    _join_builder()
    _, info_second = ensemble.run_group(second, seed=0)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert sorted(traced_on) == ["MainThread", "jaxlstm-ahead"]
  assert info_first.compiles == info_second.compiles == 1
