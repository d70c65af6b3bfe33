"""Compiled programs: built once per static signature, kept for the process and on disk.

Two caches stand between a `fit` and XLA:

  * in this process, `program(key, fn, args)` keeps every compiled executable under
    its static signature (what the traced function closes over, plus the shapes,
    dtypes and tree structure of its arguments), so a second `fit` with another seed
    or new data of the same shapes compiles nothing;
  * across processes, JAX's persistent compilation cache (`configure_persistent_cache`,
    on by default in `cache_dir()`, the folder the CLI uses too) lets a new process
    load instead of compile. `JAXLSTM_NO_CACHE=1` (or `configure_persistent_cache(False)`)
    turns it off.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import jax

# LLVM at -O1: measured on the 2-core CPU, the default study compiles 0.5 s
# faster (2.4 vs 3.0 s) and W2 (stacked LSTM(20), 30 repeats) too, with equal
# run time; the heavy lifting is XLA's own fusion, not LLVM's later passes.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

_PROGRAMS: dict[Hashable, Any] = {}
_persistent: dict[str, Any] = {"configured": False, "path": None}


def signature(args: Any) -> Hashable:
  """Tree structure, shapes and dtypes of `args`: what a program's arguments fix."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


def program(key: Hashable, fn: Callable, args: tuple, *, in_shardings: Any = None,
            out_shardings: Any = None) -> tuple[Any, float]:
  """The compiled `jax.jit(fn)` for `args`, from the cache when `key` was compiled before.

  Args:
    key: everything `fn` closes over that changes the program (the caller's job;
      a sharded program's mesh among it); the arguments' `signature` and the
      shardings are added here.
    fn: the function to jit (pure).
    args: example arguments (arrays or shape structs).
    in_shardings, out_shardings: as `jax.jit` takes them (hashable: a sharding per
      argument / output, or None to let jax choose).

  Returns:
    `(executable, seconds spent compiling now)`: 0 seconds on a cache hit.
  """
  full_key = (key, signature(args), in_shardings, out_shardings)
  if full_key in _PROGRAMS:
    return _PROGRAMS[full_key], 0.0
  configure_persistent_cache()
  t0 = time.perf_counter()
  shardings = {name: value for name, value in (("in_shardings", in_shardings), ("out_shardings", out_shardings))
               if value is not None}
  # Lowered from shapes alone: host arrays cannot stand for arrays sharded over several processes.
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
  executable = jax.jit(fn, **shardings).lower(*abstract).compile(compiler_options=COMPILER_OPTIONS)
  _PROGRAMS[full_key] = executable
  return executable, time.perf_counter() - t0


def clear() -> None:
  """Forget every compiled program of this process (the persistent cache stays)."""
  _PROGRAMS.clear()


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
  """
  if enabled is None and _persistent["configured"]:
    return _persistent["path"]
  enabled = enabled is not False and os.environ.get("JAXLSTM_NO_CACHE", "") in ("", "0")
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
  return _persistent["path"]
