"""Compiled programs: built once per static signature, kept for the process and on disk.

Two caches stand between a `fit` and XLA:

  * in this process, `program(key, fn, args)` keeps every compiled executable under
    its static signature (what the traced function closes over, plus the shapes,
    dtypes and tree structure of its arguments), so a second `fit` with another seed
    or new data of the same shapes compiles nothing;
  * across processes, JAX's persistent compilation cache (`configure_persistent_cache`,
    on by default in `cache_dir()`, the folder the CLI uses too) lets a new process
    load instead of compile. `JAXLSTM_NO_CACHE=1` (or `configure_persistent_cache(False)`)
    turns it off;
  * beside it, the program store (`store_dir()`, on and off with that cache) keeps each
    executable jaxlstm compiled under its static signature and a fingerprint of
    everything else a program depends on (`fingerprint`: our source, the versions of
    jax and the libraries that trace into it, jax's settings, the devices, the host
    CPU). JAX's cache is keyed by the lowered program, so a process must trace and
    lower before it can look there (about 1 s of the default study's warm run); the
    store is looked up by key alone. Only an executable this process compiled is
    stored: one JAX's cache loaded does not serialise whole on XLA:CPU (jaxlib 0.10.2;
    its first call in another process fails), and a stored one that fails is compiled
    again. The store keeps under `config.program_store_limit()` (1 GiB unless
    `JAXLSTM_STORE_LIMIT` says otherwise) by deleting its least recently used entries (`evict`),
    and JAX's cache in `cache_dir()` under the same limit (`trim_jax_cache`).

A program known to be needed later can be built ahead (`ahead`, or any job with
`later`): on one background thread that starts when this one next waits in XLA's
compiler (which lets go of Python's lock) or on a call (`start_ahead`), so its
tracing and compiling overlap that wait instead of following it. `program` is
single-flight across threads: a program under way is waited for, not built twice.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import jax

from jaxlstm.config import program_store_limit

# LLVM at -O1: measured on the 2-core CPU, the default study compiles 0.5 s
# faster (2.4 vs 3.0 s) and W2 (stacked LSTM(20), 30 repeats) too, with equal
# run time; the heavy lifting is XLA's own fusion, not LLVM's later passes.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

_PROGRAMS: dict[Hashable, Any] = {}
_persistent: dict[str, Any] = {"configured": False, "path": None, "ours": False}
# A program some thread is building now (full key -> its future): asked for again, it is waited for.
_BUILDING: dict[Hashable, concurrent.futures.Future] = {}
# Programs the background thread built that no caller has asked for yet.
_FRESH: set = set()
# Jobs for the background thread, in order (`later`), and the thread (one job at a time).
_QUEUE: collections.deque = collections.deque()
_BUILDER: dict[str, threading.Thread | None] = {"thread": None}
_LOCK = threading.RLock()


def signature(args: Any) -> Hashable:
  """Tree structure, shapes and dtypes of `args`: what a program's arguments fix."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


def program(key: Hashable, fn: Callable, args: tuple, *, in_shardings: Any = None,
            out_shardings: Any = None) -> tuple[Any, float]:
  """The compiled `jax.jit(fn)` for `args`, from the cache when `key` was compiled before.

  Thread-safe: a program another thread is building is waited for, not built twice.

  Args:
    key: everything `fn` closes over that changes the program (the caller's job;
      a sharded program's mesh among it); the arguments' `signature` and the
      shardings are added here. Its `repr` names the program in the store, so it
      must not hold objects whose repr varies between processes (ids, addresses).
    fn: the function to jit (pure).
    args: example arguments (arrays or shape structs).
    in_shardings, out_shardings: as `jax.jit` takes them (hashable: a sharding per
      argument / output, or None to let jax choose).

  Returns:
    `(executable, seconds spent compiling or loading now)`: 0 seconds when this
    process had it already; for a program built ahead (`ahead`), the first caller
    gets the seconds it waited for it (more than 0: it counts as that caller's build).
  """
  full_key = (key, signature(args), in_shardings, out_shardings)
  t0 = time.perf_counter()
  background = threading.current_thread() is _BUILDER["thread"]
  while True:
    with _LOCK:
      if full_key in _PROGRAMS:
        if background or full_key not in _FRESH:
          return _PROGRAMS[full_key], 0.0
        _FRESH.discard(full_key)
        return _PROGRAMS[full_key], max(time.perf_counter() - t0, 1e-9)
      future = _BUILDING.get(full_key)
      if future is None:
        future = _BUILDING[full_key] = concurrent.futures.Future()
        break
    # Another thread builds it: wait. If that fails, build it here (and meet the error here).
    with contextlib.suppress(Exception):
      future.result()
  try:
    executable = _build(full_key, fn, args, in_shardings, out_shardings)
  except BaseException as error:
    with _LOCK:
      del _BUILDING[full_key]
    future.set_exception(error)
    raise
  with _LOCK:
    _PROGRAMS[full_key] = executable
    del _BUILDING[full_key]
    if background:
      _FRESH.add(full_key)
  future.set_result(executable)
  return executable, time.perf_counter() - t0


def ahead(key: Hashable, fn: Callable, args: tuple, *, in_shardings: Any = None, out_shardings: Any = None,
          soon: bool = False) -> None:
  """Have `program(key, fn, args, ...)` built on the background thread (`later`).

  The caller's own `program` call then waits for it (or builds it, if the thread
  has not come to it yet). The executable is the one `program` would build: only
  when it is built changes. A failure is left for that call to meet again.
  """
  later(functools.partial(program, key, fn, args, in_shardings=in_shardings, out_shardings=out_shardings),
        soon=soon)


def later(job: Callable[[], Any], *, soon: bool = False) -> None:
  """Queue `job()` for the background thread (first in line with `soon`).

  The thread starts when this process next waits in XLA's compiler (`program`'s
  compile lets go of Python's lock) or at `start_ahead()`, and runs the jobs one at
  a time. A job's exceptions are dropped: whoever needs its result builds it again.
  """
  with _LOCK:
    (_QUEUE.appendleft if soon else _QUEUE.append)(job)


def start_ahead() -> None:
  """Start the background thread on the jobs queued by `later` / `ahead` (if any)."""
  with _LOCK:
    if not _QUEUE or (_BUILDER["thread"] is not None and _BUILDER["thread"].is_alive()):
      return
    _BUILDER["thread"] = threading.Thread(target=_run_queued, name="jaxlstm-ahead", daemon=True)
    _BUILDER["thread"].start()


def _run_queued() -> None:
  while True:
    with _LOCK:
      if not _QUEUE:
        # Let go under the lock `start_ahead` takes: a thread still alive but past this check would
        # otherwise leave a job queued after it unrun (start_ahead would see it alive and not start one).
        _BUILDER["thread"] = None
        return
      job = _QUEUE.popleft()
    with contextlib.suppress(Exception):  # whoever needs it builds it again and sees the error
      job()


def _build(full_key: Hashable, fn: Callable, args: tuple, in_shardings: Any, out_shardings: Any) -> Any:
  """Compile `fn` for `args` (or load it from the store)."""
  configure_persistent_cache()
  shardings = {name: value for name, value in (("in_shardings", in_shardings), ("out_shardings", out_shardings))
               if value is not None}

  def compile_now() -> Any:
    # Lowered from shapes alone: host arrays cannot stand for arrays sharded over several processes.
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    lowered = jax.jit(fn, **shardings).lower(*abstract)
    start_ahead()  # XLA's compile below lets go of Python's lock: time for what is queued
    return lowered.compile(compiler_options=COMPILER_OPTIONS)

  file = _store_file(full_key)
  if file is None:
    executable = compile_now()
    trim_jax_cache()  # JAX's cache may have grown by this program
    return executable
  executable = _load(file, compile_now)
  return executable if executable is not None else _compile_and_store(file, compile_now)


# ---------------------------------------------------------------------------
# The program store.

_STORE_SUFFIX = ".jaxexe"
_SHAPES_SUFFIX = ".shapes.json"
# What the store holds: entries named by a sha256, and the temporary files of their writes.
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.(jaxexe|shapes\.json|unstorable)")
_TEMP_NAME = re.compile(r"\.tmp-[A-Za-z0-9_]+\.(jaxexe|json)")
# A temporary file this old is a write that died (kill -9, a full disk), not one under way.
_STALE_TEMP_SECONDS = 3600
# JAX's persistent cache entries (jax/_src/lru_cache.py): `<module name>-<sha256 hex>-cache`.
_JAX_ENTRY_NAME = re.compile(r".+-[0-9a-f]{64}-cache")
# Tests turn this off to store an executable JAX's cache loaded (an entry whose first call fails).
_BYPASS_JAX_CACHE = True


def store_dir() -> Path | None:
  """Where compiled programs are stored: `cache_dir()`'s sibling `programs`; None when off.

  On with the persistent cache (`configure_persistent_cache`), in a single process
  (a distributed run's executables span processes).
  """
  if configure_persistent_cache() is None or jax.process_count() > 1:
    return None
  return cache_dir().parent / "programs"


@functools.cache
def _code_fingerprint() -> str:
  """Our source and the versions of what traces into a program (fixed for a process)."""
  digest = hashlib.sha256()
  package = Path(__file__).parent
  for file in sorted(package.rglob("*.py")):
    digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes"):
    digest.update(f"{name}={_version(name)};".encode())
  # The host device count is left out: the devices are in `fingerprint` however they were asked for.
  from jaxlstm import devices
  digest.update(f"{sys.version};{COMPILER_OPTIONS!r};{devices.other_xla_flags()}".encode())
  digest.update(_host_cpu().encode())
  return digest.hexdigest()


def _version(name: str) -> str:
  """A package's installed version, without importing it (a run whose programs are stored imports no flax)."""
  import importlib.metadata
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:  # not installed as a distribution: a source tree on the path
    return str(getattr(sys.modules.get(name), "__version__", "?"))


def _host_cpu() -> str:
  """The CPU XLA:CPU compiles for: a cache folder shared by machines (an NFS home) must not mix them."""
  import platform

  from jaxlstm import devices
  lines = devices.cpuinfo_lines()  # Linux: the model and every instruction-set flag
  return (f"{platform.machine()};{platform.processor()}"
          + lines.get("model name", "") + lines.get("flags", "") + lines.get("Features", ""))


# jax settings that do not change a compiled program: where caches live, what is logged,
# numpy's rank-promotion check (a program that traced under "allow" is the same under "raise"),
# and how many CPU devices were asked for (the devices themselves are in the fingerprint: the
# sweep asks through XLA_FLAGS before jax is imported, and through this setting after).
_SETTINGS_OUTSIDE_PROGRAMS = ("jax_compilation_cache", "jax_persistent_cache", "jax_enable_compilation_cache",
                              "jax_log_compiles", "jax_explain_cache_misses", "jax_numpy_rank_promotion",
                              "jax_num_cpu_devices")


def fingerprint() -> str:
  """What a stored program depends on besides its key: code, versions, jax's settings, devices."""
  settings = repr(sorted((name, repr(value)) for name, value in jax.config.values.items()
                         if not name.startswith(_SETTINGS_OUTSIDE_PROGRAMS)))
  devices = jax.devices()
  devices = repr([devices[0].client.platform_version] + [(d.id, d.platform, d.device_kind, d.process_index)
                                                          for d in devices])
  return hashlib.sha256(f"{_code_fingerprint()}|{settings}|{devices}".encode()).hexdigest()


def _store_write(file: Path, data: bytes) -> None:
  """Write a store entry (`_write_atomically`), then keep the store within `program_store_limit()`."""
  _write_atomically(file, data)
  evict(file.parent, program_store_limit(), keep=file)


def evict(root: Path, limit: int | None, *, keep: Path | None = None, entries: re.Pattern = _ENTRY_NAME) -> int:
  """Delete a cache folder's least recently used entries until it holds at most `limit` bytes.

  Loading a store entry marks it used (its mtime); JAX's cache marks nothing, so
  its entries go oldest written first. Only the cache's own files are touched:
  entries named as `entries` says and temporary files of the store's writes that
  died an hour ago or more; anything else in the folder is neither counted nor
  deleted. Another process may evict an entry this one is about to read: it then
  compiles again, which is all a missing entry costs.

  Args:
    root: the store's folder (`store_dir()`), or JAX's cache folder in `cache_dir()`.
    limit: bytes (`program_store_limit()`); None: no limit (only dead temporary files go).
    keep: an entry just written (never deleted here).
    entries: the names of the folder's entries (the store's, or `_JAX_ENTRY_NAME`).

  Returns:
    The number of files deleted.
  """
  found, deleted, now = [], 0, time.time()
  with contextlib.suppress(OSError):
    for entry in os.scandir(root):
      if not entry.is_file(follow_symlinks=False):
        continue
      status = entry.stat(follow_symlinks=False)
      if _TEMP_NAME.fullmatch(entry.name):
        if now - status.st_mtime > _STALE_TEMP_SECONDS:
          with contextlib.suppress(OSError):
            os.unlink(entry.path)
            deleted += 1
      elif entries.fullmatch(entry.name):
        found.append((status.st_mtime, status.st_size, entry.path))
  total = sum(size for _, size, _ in found)
  for _, size, path in sorted(found):
    if limit is None or total <= limit:
      break
    if keep is not None and path == str(keep):
      continue
    with contextlib.suppress(OSError):
      os.unlink(path)
      deleted += 1
    total -= size
  return deleted


def _mark_used(file: Path) -> None:
  with contextlib.suppress(OSError):
    os.utime(file)


def _store_file(full_key: Hashable, suffix: str = _STORE_SUFFIX) -> Path | None:
  root = store_dir()
  if root is None:
    return None
  name = hashlib.sha256(f"{fingerprint()}|{full_key!r}".encode()).hexdigest()
  return root / (name + suffix)


def shapes(key: Hashable, compute: Callable[[], Any]) -> Any:
  """`compute()`, a tree of `jax.ShapeDtypeStruct`, kept in the program store.

  A model's parameter shapes come from `jax.eval_shape` of its initialisation, which
  traces it (0.15-0.2 s of the default study's warm run), and a training state's from
  its optimizer's (which needs optax); a process that finds them in the store reads a
  small JSON file instead. `key` as `program`'s (its repr names the entry). The tree's
  nodes are those a stored program's trees may hold (`_tree_to_json`); a tree of
  other nodes is computed every time.
  """
  file = _store_file(("shapes", key), _SHAPES_SUFFIX)
  if file is not None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
      tree = _shapes_from_json(json.loads(file.read_text(encoding="utf-8")))
      _mark_used(file)
      return tree
  tree = compute()
  if file is not None:
    with contextlib.suppress(OSError, ValueError, TypeError):
      text = json.dumps(_shapes_to_json(tree))
      if jax.tree.structure(_shapes_from_json(json.loads(text))) == jax.tree.structure(tree):
        _store_write(file, text.encode())
  return tree


def _shapes_to_json(tree: Any) -> dict[str, Any]:
  leaves, treedef = jax.tree.flatten(tree)
  if not all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
    raise ValueError("a shapes tree holds jax.ShapeDtypeStruct leaves only")
  return {"tree": _tree_to_json(treedef), "leaves": [[list(leaf.shape), str(leaf.dtype)] for leaf in leaves]}


def _shapes_from_json(node: dict[str, Any]) -> Any:
  leaves = [jax.ShapeDtypeStruct(tuple(int(n) for n in shape), jax.numpy.dtype(dtype)) for shape, dtype in node["leaves"]]
  return jax.tree.unflatten(_tree_from_json(node["tree"]), leaves)


def _compile_and_store(file: Path, compile_now: Callable[[], Any]) -> Any:
  """Compile with JAX's persistent cache off, then store the executable.

  What the store keeps must be compiled in this process: an executable loaded from
  JAX's cache does not serialise whole on XLA:CPU (jaxlib 0.10.2). A program that
  cannot be stored (`file` + ".unstorable" marks it) compiles through JAX's cache.
  """
  unstorable = file.with_suffix(".unstorable")
  if unstorable.exists():
    return compile_now()
  if not _BYPASS_JAX_CACHE:
    executable = compile_now()
  else:
    with _jax_cache_off():
      executable = compile_now()
  if not _save(file, executable):
    with contextlib.suppress(OSError):
      unstorable.touch()
  return executable


_CACHE_OFF = {"depth": 0, "was_on": False}


@contextlib.contextmanager
def _jax_cache_off():
  """JAX's persistent cache off while any thread compiles a program for the store."""
  from jax.experimental.compilation_cache import compilation_cache
  with _LOCK:
    if not _CACHE_OFF["depth"]:
      _CACHE_OFF["was_on"] = jax.config.values["jax_enable_compilation_cache"]
      jax.config.update("jax_enable_compilation_cache", False)
      compilation_cache.reset_cache()
    _CACHE_OFF["depth"] += 1
  try:
    yield
  finally:
    with _LOCK:
      _CACHE_OFF["depth"] -= 1
      if not _CACHE_OFF["depth"]:
        jax.config.update("jax_enable_compilation_cache", _CACHE_OFF["was_on"])
        compilation_cache.reset_cache()


def _save(file: Path, executable: Any) -> bool:
  """Store `executable` in `file` atomically; False when it cannot be serialised.

  The file is one line of JSON (the argument and output tree structures, the devices,
  the payload's length), then jax's serialised executable.
  """
  from jax.experimental import serialize_executable
  try:
    payload, in_tree, out_tree = serialize_executable.serialize(executable)
    shardings = jax.tree.leaves((executable.input_shardings, executable.output_shardings))
    header = {"in_tree": _tree_to_json(in_tree), "out_tree": _tree_to_json(out_tree),
              "devices": sorted({d.id for sharding in shardings for d in sharding.device_set}),
              "payload_bytes": len(payload)}
    data = json.dumps(header).encode() + b"\n" + payload
  except Exception:  # noqa: BLE001 - e.g. a program with constants jax cannot serialise yet
    return False
  with contextlib.suppress(OSError):  # a read-only or full disk: run without storing
    _store_write(file, data)
  return True


def _write_atomically(file: Path, data: bytes) -> None:
  """`data` into `file` through a temporary file of ours (mode 0600) and a rename."""
  tmp = None
  try:
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=file.suffix)
    with os.fdopen(handle, "wb") as out:
      out.write(data)
    os.replace(tmp, file)
  except OSError:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.unlink(tmp)
    raise


# Tree nodes a stored program's arguments and outputs may hold: containers, and NamedTuples of these packages.
_TREE_MODULES = ("jaxlstm.", "optax.", "flax.")


def _tree_to_json(tree: Any) -> Any:
  """A tree structure as JSON: "*" for a leaf, else `[type, dict keys or None, children]`.

  Raises:
    ValueError: a node that is not a tuple, list, dict, None or a NamedTuple of ours or our libraries'.
  """
  if tree.num_nodes == 1 and tree.num_leaves == 1:
    return "*"
  kind, aux = tree.node_data()
  name = f"{kind.__module__}:{kind.__qualname__}"
  containers = (tuple, list, dict, type(None))
  if kind not in containers and not (issubclass(kind, tuple) and hasattr(kind, "_fields")
                                     and kind.__module__.startswith(_TREE_MODULES)):
    raise ValueError(f"cannot store a tree node of type {name}")
  keys = list(aux) if kind is dict else None
  if (aux is not None and kind is not dict) or (keys is not None and not all(isinstance(k, str) for k in keys)):
    raise ValueError(f"cannot store the node data of {name}")
  return [name, keys, [_tree_to_json(child) for child in tree.children()]]


def _tree_from_json(node: Any) -> Any:
  """The tree structure `_tree_to_json` wrote (types resolved only among containers and those modules)."""
  def skeleton(node):
    if node == "*":
      return 0
    name, keys, children = node
    module, qualname = name.split(":")
    children = [skeleton(child) for child in children]
    if module == "builtins":
      kind = {"tuple": tuple, "list": list, "dict": dict, "NoneType": type(None)}[qualname]
      return None if kind is type(None) else dict(zip(keys, children)) if kind is dict else kind(children)
    if not module.startswith(_TREE_MODULES):
      raise ValueError(f"unexpected tree node type {name}")
    import importlib
    kind = importlib.import_module(module)
    for part in qualname.split("."):
      kind = getattr(kind, part)
    if not (isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields")):
      raise ValueError(f"unexpected tree node type {name}")
    return kind(*children)
  return jax.tree.structure(skeleton(node))


def _load(file: Path, compile_now: Callable[[], Any]) -> Any:
  """The stored executable in `file` (None when there is none or it cannot be loaded).

  An entry is native code that will run, so, as JAX's own cache, the store trusts
  whoever can write it: only a file this user owns and no one else can write is
  loaded (`_save` writes them 0600). jaxlstm unpickles nothing here: the trees are
  JSON and their node types resolve only among containers and NamedTuples of
  jaxlstm, optax and flax; the payload is jax's own format.
  """
  from jax.experimental import serialize_executable
  try:
    with open(file, "rb") as f:
      status = os.fstat(f.fileno())
      if hasattr(os, "getuid") and (status.st_uid != os.getuid() or status.st_mode & 0o022):
        return None  # not ours alone: compile instead (and replace it with our own)
      header = json.loads(f.readline())
      payload = f.read()
    if len(payload) != header["payload_bytes"]:
      return None  # cut short
    by_id = {d.id: d for d in jax.devices()}
    executable = serialize_executable.deserialize_and_load(
        payload, _tree_from_json(header["in_tree"]), _tree_from_json(header["out_tree"]),
        execution_devices=[by_id[i] for i in header["devices"]])
  except Exception:  # noqa: BLE001 - none yet, damaged or foreign: compile instead (and store anew)
    return None
  _mark_used(file)
  return _Stored(executable, file, compile_now)


class _Stored:
  """A stored executable that compiles again if its first call fails.

  Calls are pure and no argument is donated, so a failed first call can be repeated.
  """

  def __init__(self, executable: Any, file: Path, compile_now: Callable[[], Any]):
    self._executable, self._file, self._compile_now, self._proven = executable, file, compile_now, False

  def __call__(self, *args):
    if self._proven:
      return self._executable(*args)
    try:
      out = jax.block_until_ready(self._executable(*args))
    except jax.errors.JaxRuntimeError:
      with contextlib.suppress(OSError):
        self._file.unlink()
      self._executable = _compile_and_store(self._file, self._compile_now)
      out = self._executable(*args)
    self._proven = True
    return out

  def __getattr__(self, name: str) -> Any:
    return getattr(self._executable, name)


def clear() -> None:
  """Forget every compiled program of this process (the persistent cache stays).

  Jobs queued for the background thread are dropped; one under way is waited for first.
  """
  with _LOCK:
    _QUEUE.clear()
    builder = _BUILDER["thread"]
  if builder is not None:
    builder.join()
  with _LOCK:
    _PROGRAMS.clear()
    _FRESH.clear()


def cache_dir() -> Path:
  """The persistent XLA cache of jaxlstm: $XDG_CACHE_HOME/jaxlstm/xla (default ~/.cache)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base, "jaxlstm", "xla")


def configure_persistent_cache(enabled: bool | None = None) -> Path | None:
  """Turn JAX's persistent compilation cache on (in `cache_dir()`) or off.

  Called with no argument, it acts once per process: on unless `JAXLSTM_NO_CACHE`
  is set to a non-empty value other than "0". A compile then costs once per machine,
  not once per process. `JAXLSTM_NO_CACHE` also keeps the cache off when it is
  asked for (`enabled=True`, as the command lines do without --no-cache): it is the
  switch for a whole environment. A directory set by the user
  (`JAX_COMPILATION_CACHE_DIR`) is kept.

  Returns:
    The cache directory, or None when the cache is off.

  Raises:
    ValueError: `JAXLSTM_STORE_LIMIT` is not a size (`config.program_store_limit`).
  """
  if enabled is None and _persistent["configured"]:
    return _persistent["path"]
  enabled = enabled is not False and os.environ.get("JAXLSTM_NO_CACHE", "") in ("", "0")
  if enabled:
    program_store_limit()  # a bad JAXLSTM_STORE_LIMIT is said now (ValueError), before anything compiles
  from jax.experimental.compilation_cache import compilation_cache
  _persistent["configured"] = True
  _persistent["path"] = None
  jax.config.update("jax_enable_compilation_cache", bool(enabled))
  if not enabled:
    return None
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_dir())
  try:
    Path(path).mkdir(parents=True, exist_ok=True)
  except OSError:
    jax.config.update("jax_enable_compilation_cache", False)  # no cache beats no run
    return None
  if jax.config.values.get("jax_compilation_cache_dir") != path:
    jax.config.update("jax_compilation_cache_dir", path)
    compilation_cache.reset_cache()  # a cache already opened in this process keeps its old dir otherwise
  # Our programs compile in seconds and are small: cache them all.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  _persistent["path"] = Path(path)
  _persistent["ours"] = not os.environ.get("JAX_COMPILATION_CACHE_DIR")
  trim_jax_cache()
  return _persistent["path"]


def trim_jax_cache() -> int:
  """Keep JAX's cache under `program_store_limit()` too, when its folder is ours (`cache_dir()`).

  JAX limits its cache only with the `filelock` package, and writes to it without
  ever deleting: each process trims it as it turns the cache on, and after each
  compile of its own that went through JAX's cache (a distributed run's programs).
  A folder the user named (`JAX_COMPILATION_CACHE_DIR`) is never touched.

  Returns:
    The number of entries deleted.
  """
  path = _persistent["path"]
  if path is None or not _persistent.get("ours"):
    return 0
  return evict(path, program_store_limit(), entries=_JAX_ENTRY_NAME)
