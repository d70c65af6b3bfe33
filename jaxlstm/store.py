"""The results folder of a sweep: manifest, per-config files, tables, checkpoints, resume.

Layout (DESIGN §5)::

  <run>/
    manifest.json          the study (base config, grid, repeats, seed, data fingerprints),
                           versions, device, per-config status and per-repeat outcomes,
                           per-group compile/run seconds, one entry per session
    configs/<id>.json      the resolved config of each grid point (`Config.from_dict`)
    histories/<id>.npz     metric -> [repeats, epochs] float32 (np.load(allow_pickle=False)); with
                           cross-validation the mean over each repeat's folds (`Ensemble.history`)
    histories/<id>.folds.npz  cross-validation only: per fold, "history/<metric>" [repeats, folds, epochs]
                           and "stopped_epoch", "best_epoch", "diverged_epoch" [repeats, folds]
    checkpoints/<id>/      orbax: the final params of every repeat (leading axis = repeats); written
                           without importing orbax where it can (`_write_plain_checkpoint`)
    state/<key>/           orbax epoch checkpoints of a group in flight (train.checkpoint_every)
    scores.csv, summary.csv, diagnosis.csv, comparisons.csv
                           tables derived from the files above (`jaxlstm.tables`, one writer each)
    plots/*.png, report.md the report (`jaxlstm.report`), built from the tables

Resume contract: a config is *done* when the manifest says so; the manifest is
written (atomically) only after the config's history and checkpoint are on
disk, so it is the commit point. Everything else (tables, plots, report) is
derived from the per-config files in study order and can be rebuilt at any
time; rebuilt tables are byte-identical to those of an uninterrupted run.
Every file is written to a temporary file in its own folder and moved into
place with `os.replace`; leftovers of a crash (`*.tmp`, orbax tmp dirs) are
never trusted and are deleted by `clean_leftovers`.

This is the only module that imports orbax. Nothing here loads pickle: JSON,
CSV, `.npz` with `allow_pickle=False`, and orbax checkpoints only.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FORMAT = 1
TOOL = "jaxlstm"  # the manifest's marker: only a folder whose manifest carries it is ever deleted
CONFIG_ID = re.compile(r"[0-9a-f]{12}")
SUMMARY_METRIC = "val_loss"
ORBAX_TMP = ".orbax-checkpoint-tmp"


# ---------------------------------------------------------------------------
# Atomic files.


def write_bytes(path: str | os.PathLike, data: bytes) -> bool:
  """Write `data` to `path` atomically (temp file in the same folder, then `os.replace`).

  A file that already holds exactly `data` is left untouched, so rebuilding an
  unchanged table keeps its modification time.

  Returns:
    Whether the file was (re)written.
  """
  path = Path(path)
  try:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
      return False
  except OSError:
    pass
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())  # a power cut must not leave a renamed but empty file
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return True


def write_text(path: str | os.PathLike, text: str) -> bool:
  """`write_bytes` of UTF-8 text."""
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> bool:
  """Write `obj` as indented, key-sorted JSON (NaN is refused: JSON has none).

  Lists of scalars stay on one line, so per-repeat arrays do not take a line
  per repeat. (Only whitespace around newlines is removed, and a JSON string
  never holds a raw newline, so no value changes.)
  """
  text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False)
  text = re.sub(r"\[[^\[\]{}]*\]",
                lambda m: re.sub(r"\n\s*", "", re.sub(r",\n\s*", ", ", m.group(0))), text)
  return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def clean_leftovers(run_dir: str | os.PathLike, *, skip: Sequence[str] = ()) -> list[str]:
  """Delete what a crash can leave behind: our `*.tmp` files, plot temp files, orbax tmp dirs.

  Args:
    run_dir: the folder.
    skip: sub-folders (relative) a live process is still writing: left alone.

  Returns:
    The removed paths, relative to `run_dir` (for a warning).
  """
  run_dir = Path(run_dir)
  removed = []
  if not run_dir.is_dir():
    return removed
  skipped = {Path(run_dir, name) for name in skip}
  for root, dirs, files in os.walk(run_dir, topdown=True):
    dirs[:] = [name for name in dirs if Path(root, name) not in skipped]
    for name in list(dirs):
      if ORBAX_TMP in name:
        shutil.rmtree(Path(root, name), ignore_errors=True)
        dirs.remove(name)
        removed.append(os.path.relpath(Path(root, name), run_dir))
    for name in files:
      # ".tmp-*.png" is what jaxlstm.plots.save writes before its rename.
      if name.endswith(".tmp") or name.startswith(".tmp-"):
        Path(root, name).unlink(missing_ok=True)
        removed.append(os.path.relpath(Path(root, name), run_dir))
  return sorted(removed)


# ---------------------------------------------------------------------------
# Per-config files.


def config_path(run_dir, config_id: str) -> Path:
  return Path(run_dir, "configs", f"{config_id}.json")


def history_path(run_dir, config_id: str) -> Path:
  return Path(run_dir, "histories", f"{config_id}.npz")


def checkpoint_path(run_dir, config_id: str) -> Path:
  return Path(run_dir, "checkpoints", config_id)


def folds_path(run_dir, config_id: str) -> Path:
  return Path(run_dir, "histories", f"{config_id}.folds.npz")


FOLD_EPOCHS = ("stopped_epoch", "best_epoch", "diverged_epoch")


def save_folds(run_dir, config_id: str, folds: Mapping[str, Any]) -> None:
  """Write one config's per-fold results: `history` (metric -> [repeats, folds, epochs]) and `FOLD_EPOCHS`."""
  arrays = {f"history/{k}": np.asarray(v, np.float32) for k, v in folds["history"].items()}
  arrays.update({k: np.asarray(folds[k], np.int64) for k in FOLD_EPOCHS})
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(folds_path(run_dir, config_id), buffer.getvalue())


def load_folds(run_dir, config_id: str) -> dict[str, Any] | None:
  """One config's per-fold results as `save_folds` wrote them, or None without cross-validation."""
  path = folds_path(run_dir, config_id)
  if not path.is_file():
    return None
  with np.load(path, allow_pickle=False) as npz:
    out: dict[str, Any] = {"history": {n.partition("/")[2]: npz[n] for n in npz.files if n.startswith("history/")}}
    out.update({k: npz[k] for k in FOLD_EPOCHS})
  return out


def save_history(run_dir, config_id: str, history: Mapping[str, np.ndarray]) -> None:
  """Write one config's history: metric -> `[repeats, epochs]` float32, in metric order."""
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in history.items()})
  write_bytes(history_path(run_dir, config_id), buffer.getvalue())


def load_history(run_dir, config_id: str) -> dict[str, np.ndarray]:
  """One config's history as saved: metric -> `[repeats, epochs]` (never unpickles)."""
  with np.load(history_path(run_dir, config_id), allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}


def save_params(run_dir, config_id: str, params: Any) -> None:
  """Write the stacked final params of one config as an orbax checkpoint (replacing any old one).

  An existing checkpoint of a config that is not marked done is untrusted (a
  crash between the save and the manifest's commit), so it is replaced.
  """
  path = _replaceable_checkpoint(run_dir, config_id)
  if path.exists():
    shutil.rmtree(path)
  _write_checkpoint(path, params)


def _replaceable_checkpoint(run_dir, config_id: str) -> Path:
  path = checkpoint_path(run_dir, config_id).absolute()
  if path.is_symlink():
    raise ValueError(f"refusing to write through the symlink {path}.")
  return path


def _write_checkpoint(path: Path, params: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  leaves = _plain_leaves(params)
  if leaves is not None:
    _write_plain_checkpoint(path, leaves)
    return
  import orbax.checkpoint as ocp
  params = _to_numpy(params)
  # Synchronous: the manifest must not say "done" before the files are final.
  with ocp.Checkpointer(ocp.StandardCheckpointHandler(), **_this_process_only()) as checkpointer:
    checkpointer.save(path, args=ocp.args.StandardSave(params))


# What orbax's StandardCheckpointHandler writes, by hand: the same files for numpy leaves, but
# uncompressed and without orbax's OCDBT database (both are options orbax writes and reads itself).
_STANDARD_HANDLER = "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler"
_DICT_KEY = 2  # orbax's key_type of a dict key


def _plain_leaves(params: Any) -> list[tuple[tuple[str, ...], np.ndarray]] | None:
  """`(key path, array)` per leaf in jax's order (sorted keys), if `params` is nested dicts of
  non-empty numeric arrays with str keys; else None."""
  leaves: list[tuple[tuple[str, ...], np.ndarray]] = []

  def visit(node, keys):
    if isinstance(node, Mapping):
      if not node or not all(isinstance(k, str) and k and "." not in k and "/" not in k for k in node):
        return False
      return all(visit(node[k], (*keys, k)) for k in sorted(node))
    if not hasattr(node, "shape") or not hasattr(node, "dtype"):
      return False
    array = np.asarray(node)
    if array.size == 0 or array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
      return False
    leaves.append((keys, array))
    return True
  return leaves if isinstance(params, Mapping) and visit(params, ()) else None


def _write_plain_checkpoint(path: Path, leaves: list[tuple[tuple[str, ...], np.ndarray]]) -> None:
  """Write an orbax checkpoint of numpy leaves without orbax (~0.4 s of imports on top of jax's).

  The files are those `orbax.checkpoint.PyTreeCheckpointHandler(use_ocdbt=False,
  use_compression=False)` writes (tests/test_store.py compares them byte for byte), so
  orbax restores it like any other: one zarr v2 array per leaf, named by its key path
  joined with ".", in one chunk; `_METADATA` (the tree); `_CHECKPOINT_METADATA` last.
  Written in an orbax tmp folder and renamed into place.
  """
  import time
  started = time.time_ns()
  tmp = path.with_name(f"{path.name}{ORBAX_TMP}-{os.getpid()}")
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir()
  try:
    tree = {}
    for keys, array in leaves:
      array = array.astype(array.dtype.newbyteorder("<"), copy=False)
      folder = tmp / ".".join(keys)
      folder.mkdir()
      zarray = {"chunks": list(array.shape), "compressor": None, "dimension_separator": ".",
                "dtype": array.dtype.str, "fill_value": None, "filters": None, "order": "C",
                "shape": list(array.shape), "zarr_format": 2}
      _write_synced(folder / ".zarray", json.dumps(zarray, sort_keys=True, separators=(",", ":")).encode())
      _write_synced(folder / (".".join("0" * array.ndim) or "0"), np.ascontiguousarray(array).tobytes())
      tree[str(keys)] = {"key_metadata": [{"key": k, "key_type": _DICT_KEY} for k in keys],
                         "value_metadata": {"value_type": "np.ndarray", "skip_deserialize": False}}
    _write_synced(tmp / "_METADATA", json.dumps({
        "tree_metadata": tree, "use_ocdbt": False, "use_zarr3": False,
        "store_array_data_equal_to_fill_value": True, "custom_metadata": None}).encode())
    _write_synced(tmp / "_CHECKPOINT_METADATA", json.dumps({
        "item_handlers": _STANDARD_HANDLER, "metrics": {}, "performance_metrics": {},
        "init_timestamp_nsecs": started, "commit_timestamp_nsecs": time.time_ns(),
        "custom_metadata": {}}).encode())
    _write_synced(tmp / "commit_success.txt", f"Checkpoint commit was successful to {path}".encode())
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _write_synced(path: Path, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def load_params(run_dir, config_id: str) -> Any:
  """The stacked params of one config (numpy leaves) from its orbax checkpoint."""
  import orbax.checkpoint as ocp
  path = checkpoint_path(run_dir, config_id).absolute()
  if path.is_symlink():
    raise ValueError(f"refusing to load the symlinked checkpoint {path}; copy it into the results folder.")
  if not path.is_dir():
    raise FileNotFoundError(f"no checkpoint for config {config_id} at {path}.")
  with ocp.Checkpointer(ocp.StandardCheckpointHandler(), **_this_process_only()) as checkpointer:
    return _to_numpy(checkpointer.restore(path))


def _this_process_only() -> dict[str, Any]:
  """Orbax options for files one process reads and writes alone (process 0 of a distributed run).

  Orbax otherwise synchronises every process of a `jax.distributed` run around a
  save, and the others never come.
  """
  import jax
  if jax.process_count() == 1:
    return {}
  import orbax.checkpoint as ocp
  me = jax.process_index()
  return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})}


def _to_numpy(tree: Any) -> Any:
  import jax
  return jax.tree.map(np.asarray, tree)


def checkpoint_complete(path: Path) -> bool:
  """Whether an orbax checkpoint dir is final (renamed into place, metadata written)."""
  return path.is_dir() and not path.is_symlink() and (path / "_CHECKPOINT_METADATA").exists()


# ---------------------------------------------------------------------------
# Epoch checkpoints of a group in flight.


class StateCheckpointer:
  """Orbax-backed epoch checkpoints of a group's training state (`run_group(checkpointer=...)`).

  Keeps the latest step only. A step is the number of epochs done; the state
  (a `TrainState` pytree of stacked members) and the history so far are saved
  together in one step, so a restore always sees a matching pair. PRNG key
  leaves, if a state ever holds any, are stored as their raw key data.

  Args:
    directory: where the steps live (created on the first save).
    like: the state pytree (arrays or `jax.ShapeDtypeStruct`s), or a callable
      returning it: gives the structure, shapes and dtypes to restore into.
      A callable is only called when there is something to restore.
  """

  def __init__(self, directory: str | os.PathLike, like: Any | Callable[[], Any]):
    self.directory = Path(directory).absolute()
    self._like = like
    self._manager = None

  def _open(self, create: bool):
    import orbax.checkpoint as ocp
    if self._manager is None:
      if not create and not self.directory.is_dir():
        return None
      options = ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(n=1),
          cleanup_tmp_directories=True,  # a killed save leaves a tmp dir: never trust it
          enable_async_checkpointing=False,
          create=True)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
      # The tmp-dir cleanup runs in the background; finish it before reading.
      self._manager.wait_until_finished()
    return self._manager

  def restore(self) -> tuple[int, Any, dict[str, np.ndarray]] | None:
    """`(epochs done, states, history so far)` of the latest step, or None."""
    import jax
    import orbax.checkpoint as ocp
    manager = self._open(create=False)
    if manager is None or manager.latest_step() is None:
      return None
    step = manager.latest_step()
    like = self._like() if callable(self._like) else self._like
    leaves, treedef = jax.tree.flatten(like)
    target = {f"{i:05d}": np.zeros(*_stored_shape_dtype(leaf)) for i, leaf in enumerate(leaves)}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), history=ocp.args.StandardRestore()))
    stored = restored["state"]
    values = []
    for i, leaf in enumerate(leaves):
      value = np.asarray(stored[f"{i:05d}"])
      if _is_key(leaf):
        # Keys of the project are jax.random.key's default implementation.
        value = jax.random.wrap_key_data(value)
      values.append(value)
    history = {k: np.asarray(v) for k, v in restored["history"].items()}
    return int(step), jax.tree.unflatten(treedef, values), history

  def save(self, epoch: int, states: Any, history: Mapping[str, np.ndarray]) -> None:
    """Save the state after `epoch` epochs (a step that exists already is kept as is)."""
    import jax
    import orbax.checkpoint as ocp
    manager = self._open(create=True)
    # Saving an existing step raises StepAlreadyExistsError even with force=True
    # (reliability.md §0.6); the same step holds the same state anyway.
    if int(epoch) in manager.all_steps():
      return
    leaves = jax.tree.leaves(states)
    flat = {f"{i:05d}": np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
            for i, leaf in enumerate(leaves)}
    manager.save(int(epoch), args=ocp.args.Composite(
        state=ocp.args.StandardSave(flat),
        history=ocp.args.StandardSave({k: np.asarray(v) for k, v in history.items()})))
    manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def clear(self) -> None:
    """Delete every step (after the group's results are committed)."""
    self.close()
    shutil.rmtree(self.directory, ignore_errors=True)


def _is_key(leaf) -> bool:
  import jax
  return jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key)


def _stored_shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
  import jax
  if _is_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(data.shape), np.dtype(data.dtype)
  return tuple(leaf.shape), np.dtype(leaf.dtype)


# ---------------------------------------------------------------------------
# The results folder.


class ForeignFolder(ValueError):
  """The folder holds a manifest.json that jaxlstm did not write (it is never deleted)."""


def _is_ours(manifest: Any) -> bool:
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    return False
  if manifest.get("tool") == TOOL:
    return True
  # Folders written before the marker: our manifest's own shape.
  study = manifest.get("study")
  return ("tool" not in manifest and isinstance(study, dict) and isinstance(study.get("configs"), list)
          and {"configs", "groups", "sessions", "versions"} <= manifest.keys())


class RunFolder:
  """One results folder: its manifest in memory, and every write that changes the folder.

  A config's entry holds its `status`: "pending" (nothing trained), "partial" (the
  first `repeats` of the study's repeats trained, e.g. after `--repeats` grew) or
  "done", plus its per-repeat outcomes and the checksums of its files.

  Args:
    path: the folder.
    manifest: its manifest (as read, or new).
  """

  def __init__(self, path: str | os.PathLike, manifest: dict):
    self.path = Path(path)
    self.manifest = manifest

  # ----- opening ---------------------------------------------------------------
  @staticmethod
  def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of an existing folder, None if there is none.

    Raises:
      ForeignFolder: manifest.json is not a jaxlstm manifest (unreadable, another
        tool's, or naming config ids that are not ours, such as "../../x").
    """
    file = Path(path, MANIFEST)
    if not file.is_file():
      return None
    try:
      manifest = read_json(file)
    except (OSError, ValueError) as e:
      raise ForeignFolder(f"{file} is not a jaxlstm manifest (it cannot be read: {e}).") from None
    if not _is_ours(manifest):
      raise ForeignFolder(f"{file} is not a jaxlstm manifest (format {FORMAT}, written by jaxlstm).")
    study, entries = manifest.get("study"), manifest.get("configs", {})
    if not (isinstance(study, dict) and isinstance(study.get("configs"), list) and isinstance(entries, dict)):
      raise ForeignFolder(f"{file} is a jaxlstm manifest without its study's config list (damaged); "
                          "restore it from a copy or write to another folder.")
    ids = list(study["configs"]) + list(entries)
    bad = [c for c in ids if not isinstance(c, str) or not CONFIG_ID.fullmatch(c)]
    if bad:
      raise ForeignFolder(f"{file} names config id {bad[0]!r}, which is not a jaxlstm id "
                          "(12 hexadecimal digits).")
    return manifest

  @classmethod
  def create(cls, path, *, study: dict, configs: Sequence[Any], groups: Sequence[dict],
             environment: dict) -> RunFolder:
    """Start a new folder: resolved configs and a manifest with every config pending."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    grid = study["grid"]
    manifest = {
        "format": FORMAT,
        "tool": TOOL,
        "study": study,
        "command": environment["argv"],
        "created": environment["time"],
        "versions": environment["versions"],
        "device": environment["device"],
        "devices": environment.get("devices"),
        "cpu": environment.get("cpu"),
        "configs": {
            cfg.config_id: {"index": i, "status": "pending", "repeats": 0,
                            "values": {key: jsonable(config_value(cfg, key)) for key in grid}}
            for i, cfg in enumerate(configs)},
        "groups": [dict(g, status="pending", compile_seconds=0.0, run_seconds=0.0, compiles=0)
                   for g in groups],
        "sessions": [],
    }
    for i, g in enumerate(manifest["groups"]):
      for config_id in g["configs"]:
        manifest["configs"][config_id]["group"] = i
    folder = cls(path, manifest)
    folder.write_manifest()  # first: from here on the folder is a results folder and resumable
    folder.write_configs(configs)
    return folder

  def write_configs(self, configs: Sequence[Any]) -> None:
    """configs/<id>.json of every config (files already right are left alone)."""
    for cfg in configs:
      write_json(config_path(self.path, cfg.config_id), cfg.to_dict())

  def write_manifest(self) -> None:
    write_json(self.path / MANIFEST, self.manifest)

  def add_configs(self, configs: Sequence[Any], groups: Sequence[dict], *,
                  data: Mapping[str, str] | None = None) -> None:
    """Grow the study by new configs (a search's batch) and the groups that will train them.

    Config files are written first and the manifest last, so a kill in between leaves
    only files that the next write of the same configs replaces. A config already in
    the folder (a batch killed before it finished) is moved to its new group.

    Args:
      configs: the configs, new or not yet done.
      groups: their groups, as `runner.group_entries` describes them.
      data: config id -> data fingerprint, recorded in the study spec.
    """
    self.write_configs(configs)
    study, entries = self.manifest["study"], self.manifest["configs"]
    for cfg in configs:
      if cfg.config_id not in entries:
        study["configs"].append(cfg.config_id)
        entries[cfg.config_id] = {"index": len(entries), "status": "pending", "repeats": 0,
                                  "values": {k: jsonable(config_value(cfg, k)) for k in study["grid"]}}
    offset = len(self.manifest["groups"])
    for i, g in enumerate(groups):
      self.manifest["groups"].append(dict(g, status="pending", compile_seconds=0.0, run_seconds=0.0, compiles=0))
      for config_id in g["configs"]:
        entries[config_id]["group"] = offset + i
    if data:
      study.setdefault("data", {}).update(data)
    self.manifest.pop("finished", None)
    self.write_manifest()

  # ----- state -----------------------------------------------------------------
  @property
  def config_ids(self) -> list[str]:
    """Config ids in study order."""
    return list(self.manifest["study"]["configs"])

  @property
  def repeats(self) -> int:
    """Repeats per config the study asks for."""
    return int(self.manifest["study"]["repeats"])

  def is_done(self, config_id: str) -> bool:
    return self.manifest["configs"][config_id]["status"] == "done"

  def done_ids(self) -> list[str]:
    return [c for c in self.config_ids if self.is_done(c)]

  def repeats_done(self, config_id: str) -> int:
    """How many of the config's repeats (0, 1, ...) are trained and committed."""
    entry = self.manifest["configs"][config_id]
    if entry["status"] == "pending":
      return 0
    return int(entry.get("repeats", len(entry.get("stopped_epoch", ()))))

  def extend_repeats(self, repeats: int) -> list[str]:
    """Grow the study to `repeats` per config; done configs become partial. Returns their ids."""
    grown = []
    for config_id in self.config_ids:
      entry = self.manifest["configs"][config_id]
      if entry["status"] == "done":
        entry["repeats"] = self.repeats_done(config_id)
        entry["status"] = "partial"
        grown.append(config_id)
    self.manifest["study"]["repeats"] = int(repeats)
    for group in self.manifest["groups"]:
      group["status"] = "pending"
    self.manifest.pop("finished", None)
    return grown

  def verify(self) -> list[str]:
    """Send configs whose committed files are missing or changed back to pending; return their ids.

    A file is checked against the checksum recorded when it was committed (folders
    written before checksums: that it exists), so a truncated or corrupt history or
    checkpoint is retrained, never read.
    """
    lost = []
    for config_id in self.config_ids:
      entry = self.manifest["configs"][config_id]
      if entry["status"] == "pending":
        continue
      files = {"config": config_path(self.path, config_id), "history": history_path(self.path, config_id),
               "checkpoint": checkpoint_path(self.path, config_id), "folds": folds_path(self.path, config_id)}
      ok = (files["config"].is_file() and files["history"].is_file()
            and checkpoint_complete(files["checkpoint"])
            and (int(entry.get("folds", 1)) <= 1 or files["folds"].is_file()))
      if ok and entry.get("checksums"):
        ok = all(checksum(files[name]) == digest for name, digest in entry["checksums"].items())
      if not ok:
        entry.update(status="pending", repeats=0)
        lost.append(config_id)
    for group in self.manifest["groups"]:
      if not all(self.is_done(c) for c in group["configs"]):
        group["status"] = "pending"
    if lost:
      self.manifest.pop("finished", None)
    return lost

  def start_session(self, environment: dict) -> None:
    self.manifest["sessions"].append({"argv": environment["argv"], "started": environment["time"],
                                      "versions": environment["versions"], "devices": environment.get("devices"),
                                      "cpu": environment.get("cpu"), "trained": []})
    self.write_manifest()

  def record(self, group_index: int, ensembles: Sequence[Any], info: Any, *,
             ensemble_scores: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Commit a group's trained repeats: histories and checkpoints first, then the manifest.

    Repeats that extend a partial config (`Ensemble.repeat_indices` starting where
    the folder's stop) are appended to its files; the repeats already there are
    kept as they are, byte for byte. `ensemble_scores` (config id -> the scores of
    the repeats' averaged prediction) are committed in the same manifest write.
    """
    entries = self.manifest["configs"]
    written, updates = {}, {}
    for ens in ensembles:
      config_id = ens.config.config_id
      first = int(ens.repeat_indices[0])
      if first != self.repeats_done(config_id):
        raise ValueError(f"config {config_id}: repeats from {first} do not follow the "
                         f"{self.repeats_done(config_id)} committed.")
      history, params = ens.history, ens.params
      per_repeat = {"stopped_epoch": ens.stopped_epoch, "best_epoch": ens.best_epoch,
                    "diverged_epoch": ens.diverged_epoch}
      per_repeat = {k: [int(v) for v in vals] for k, vals in per_repeat.items()}
      folds = None
      if getattr(ens, "folds", 1) > 1:
        folds = {"history": ens.fold_history, **{k: getattr(ens, f"fold_{k}") for k in FOLD_EPOCHS}}
      if first and folds is not None:
        old_folds = load_folds(self.path, config_id)
        if old_folds is None:
          raise ValueError(f"config {config_id}: the committed repeats have no per-fold results to extend.")
        folds = {"history": {k: np.concatenate([old_folds["history"][k], np.asarray(v, np.float32)])
                             for k, v in folds["history"].items()},
                 **{k: np.concatenate([old_folds[k], np.asarray(folds[k])]) for k in FOLD_EPOCHS}}
      if first:
        old = load_history(self.path, config_id)
        if list(old) != list(history) or any(old[k].shape[1] != history[k].shape[1] for k in old):
          raise ValueError(f"config {config_id}: the new repeats record other metrics or epochs "
                           "than the committed ones.")
        history = {k: np.concatenate([old[k], np.asarray(v, np.float32)]) for k, v in history.items()}
        import jax
        params = jax.tree.map(lambda a, b: np.concatenate([a, b]), load_params(self.path, config_id), params)
        per_repeat = {k: entries[config_id][k][:first] + vals for k, vals in per_repeat.items()}
      save_history(self.path, config_id, history)
      if folds is not None:
        save_folds(self.path, config_id, folds)
      written[config_id] = (params, per_repeat, first + len(ens.repeat_indices), folds is not None)
    self._save_checkpoints({config_id: params for config_id, (params, *_) in written.items()})
    for ens in ensembles:
      config_id = ens.config.config_id
      _, per_repeat, repeats, has_folds = written[config_id]
      checksums = {"history": checksum(history_path(self.path, config_id)),
                   "checkpoint": checksum(checkpoint_path(self.path, config_id))}
      if has_folds:
        checksums["folds"] = checksum(folds_path(self.path, config_id))
      updates[config_id] = dict(
          per_repeat, status="done" if repeats >= self.repeats else "partial", repeats=repeats,
          metrics=list(ens.history), outputs=int(ens.outputs), time_out=int(ens.time_out),
          frame_shape=[int(v) for v in ens.frame_shape], checksums=checksums,
          **({"folds": int(ens.folds)} if has_folds else {}))
    for config_id, update in updates.items():
      entries[config_id].update(update)
      if ensemble_scores and config_id in ensemble_scores:
        entries[config_id]["ensemble"] = dict(ensemble_scores[config_id])
    group = self.manifest["groups"][group_index]
    # A group resumed in parts sums the cost of its parts.
    group["compiles"] += int(info.compiles)
    group["compile_seconds"] = round(group["compile_seconds"] + info.compile_seconds, 3)
    group["run_seconds"] = round(group["run_seconds"] + info.run_seconds, 3)
    group["epoch_chunks"] = int(info.epoch_chunks)
    group["member_chunks"] = int(info.member_chunks)
    if all(self.is_done(c) for c in group["configs"]):
      group["status"] = "done"
    if self.manifest["sessions"]:
      self.manifest["sessions"][-1]["trained"] += [e.config.config_id for e in ensembles]
    self.write_manifest()

  def _save_checkpoints(self, params_by_id: Mapping[str, Any]) -> None:
    for config_id, params in params_by_id.items():
      save_params(self.path, config_id, params)

  def finish_session(self, time: str) -> None:
    """Mark the last session finished."""
    if self.manifest["sessions"]:
      self.manifest["sessions"][-1]["finished"] = time
      self.write_manifest()

  def finish(self, time: str, report: Mapping[str, Any]) -> None:
    """Mark the run finished (every config done, tables and report written) and what the report covers."""
    self.manifest["report"] = dict(report)
    self.manifest["finished"] = time
    if self.manifest["sessions"] and "finished" not in self.manifest["sessions"][-1]:
      self.manifest["sessions"][-1]["finished"] = time
    self.write_manifest()


def checksum(path: Path) -> str:
  """sha256 (16 hex digits) of a file, or of every file of a folder (names and bytes, sorted)."""
  digest = hashlib.sha256()
  path = Path(path)
  files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
  for file in files:
    digest.update(str(file.relative_to(path) if file != path else file.name).encode())
    with open(file, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()[:16]


def symlinks(run_dir: str | os.PathLike) -> list[str]:
  """Symbolic links inside a folder (relative paths): jaxlstm never writes through one."""
  found = []
  for root, dirs, files in os.walk(run_dir):
    for name in dirs + files:
      if Path(root, name).is_symlink():
        found.append(os.path.relpath(Path(root, name), run_dir))
  return sorted(found)


def config_value(cfg: Any, key: str) -> Any:
  """The value of dotted field `key` of a config, problem options (`data.options.<name>`) included.

  `model.units` gives the widths of every config, also those stored as cells x layers.
  """
  if key.startswith("data.options."):
    return cfg.data.options.get(key[len("data.options."):])
  if key == "model.units":
    return cfg.model.widths
  return cfg.get(key)


def jsonable(value: Any) -> Any:
  """A config value as JSON data: tuples become lists, nested configs dicts."""
  if isinstance(value, tuple):
    return [jsonable(v) for v in value]
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return value


def format_value(value: Any) -> str:
  """A table cell: ints and bools as text, floats in shortest round-trip form, missing empty."""
  if value is None:
    return ""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, np.floating):
    if not np.isfinite(value):
      return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    # float32 history values: numpy's shortest repr of the float32, not of its float64 widening.
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)
  if isinstance(value, str):
    return value
  return json.dumps(value, sort_keys=True)


def committed(manifest: dict) -> list[str]:
  """Ids of the configs with trained repeats on disk, in study order: done, partial while repeats
  grow, or eliminated by a race (`--race`: its first repeats, no more)."""
  entries = manifest["configs"]
  return [c for c in manifest["study"]["configs"] if entries[c]["status"] in ("done", "partial", "eliminated")]


def summary_metric(manifest: dict) -> str:
  """The metric a folder's scores come from: the study's `metric` (default val_loss)."""
  return manifest["study"].get("metric") or SUMMARY_METRIC


def summary_score(manifest: dict) -> str:
  """How a folder scores a repeat: "final", "best" or "restored" (the study's `score`; default final)."""
  return manifest["study"].get("score") or "final"


def labels(grid: Sequence[str], values: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
  """Short unique labels per config id: "cells=5, learning_rate=0.01".

  Args:
    grid: the grid's dotted fields, in order (named by their last part when that is unique).
    values: config id -> dotted field -> value.

  Returns:
    config id -> label; the id itself without a grid, and the label with the id
    appended where two configs would read the same.
  """
  short = [k.rsplit(".", 1)[-1] for k in grid]
  names = short if len(set(short)) == len(short) else list(grid)
  texts = {c: ", ".join(f"{n}={format_value(v[k])}" for n, k in zip(names, grid)) or c
           for c, v in values.items()}
  counts: dict[str, int] = {}
  for text in texts.values():
    counts[text] = counts.get(text, 0) + 1
  return {c: (text if counts[text] == 1 else f"{text} [{c}]") for c, text in texts.items()}


def config_labels(manifest: dict) -> dict[str, str]:
  """Labels of every config of a folder, in study order (see `labels`)."""
  entries = manifest["configs"]
  return labels(list(manifest["study"]["grid"]), {c: entries[c]["values"] for c in manifest["study"]["configs"]})


def load_histories(run_dir, config_ids: Sequence[str] | None = None):
  """Histories as a tidy frame: config_id, repeat, epoch, metric, value (NaN after a stop).

  Args:
    run_dir: the results folder.
    config_ids: which configs (default: every done config, in study order).
  """
  import pandas as pd
  manifest = RunFolder.read_manifest(run_dir)
  if manifest is None:
    raise ValueError(f"{run_dir} has no {MANIFEST}: not a jaxlstm results folder.")
  if config_ids is None:
    config_ids = [c for c in manifest["study"]["configs"] if manifest["configs"][c]["status"] == "done"]
  parts = []
  for config_id in config_ids:
    for metric, values in load_history(run_dir, config_id).items():
      repeats, epochs = values.shape
      parts.append(pd.DataFrame({
          "config_id": config_id, "repeat": np.repeat(np.arange(repeats), epochs),
          "epoch": np.tile(np.arange(epochs), repeats), "metric": metric,
          "value": values.reshape(-1).astype(np.float64)}))
  if not parts:
    return pd.DataFrame({"config_id": pd.Series(dtype=str), "repeat": pd.Series(dtype=int),
                         "epoch": pd.Series(dtype=int), "metric": pd.Series(dtype=str),
                         "value": pd.Series(dtype=float)})
  return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------
# Before a sweep writes: may it use this folder? (no jax: the CLI asks before importing it)


class FolderRefused(ValueError):
  """`--out` cannot be used: not writable, not ours, holding another study (one line, for the CLI)."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, Mapping) or not d:
    return {prefix.rstrip("."): d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def study_differences(old: Mapping, new: Mapping) -> list[str]:
  """What makes two study specs different, in words (empty when they are the same study)."""
  diffs = []
  if old.get("base") != new.get("base"):
    a, b = _flatten(old.get("base", {})), _flatten(new.get("base", {}))
    fields = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    diffs.append("base config (" + "; ".join(f"{k}: {json.dumps(a.get(k))} in the folder, "
                                             f"{json.dumps(b.get(k))} now" for k in fields[:4])
                 + ("; ..." if len(fields) > 4 else "") + ")")
  if old.get("grid") != new.get("grid"):
    a, b = old.get("grid") or {}, new.get("grid") or {}
    keys = [k for k in [*a, *[k for k in b if k not in a]] if a.get(k) != b.get(k)]
    diffs.append("grid (" + "; ".join(f"{k}: {json.dumps(a.get(k))} in the folder, {json.dumps(b.get(k))} now"
                                      for k in keys) + ")")
  for key in ("space", "search", "race"):  # a search space, how it is searched, how it is raced
    if old.get(key) != new.get(key):
      diffs.append(f"{key} ({_space_words(old.get(key))} in the folder, {_space_words(new.get(key))} now)")
  for key in ("random", "seed"):
    if old.get(key) != new.get(key):
      diffs.append(f"{key} ({json.dumps(old.get(key))} in the folder, {json.dumps(new.get(key))} now)")
  if isinstance(new.get("repeats"), int) and isinstance(old.get("repeats"), int) and new["repeats"] < old["repeats"]:
    diffs.append(f"repeats ({old['repeats']} in the folder, {new['repeats']} now: a folder's repeats can grow, "
                 f"never shrink; rerun with --repeats {old['repeats']} or more)")
  if old.get("data") != new.get("data") and old.get("configs") == new.get("configs"):
    changed = [c for c in new.get("data", {}) if old.get("data", {}).get(c) != new["data"][c]]
    diffs.append(f"data (the dataset of {len(changed)} config(s) has a different fingerprint)")
  if not diffs and old.get("configs") != new.get("configs"):
    diffs.append("configs (the grid resolves to different config ids)")
  return diffs


def _space_words(spec: Any) -> str:
  """A space spec (`Space.spec()`) or search settings as short text; "none" when absent."""
  if not spec:
    return "none"
  if "dimensions" in spec:
    from jaxlstm.space import Space
    return Space.from_spec(spec).describe()
  return json.dumps(spec, sort_keys=True)


def _check_writable(out: Path) -> None:
  """Raise FolderRefused unless `out` can be created or written, without creating anything."""
  probe = out
  while not probe.exists():
    if probe.parent == probe:
      break
    probe = probe.parent
  if probe.exists() and not probe.is_dir():
    raise FolderRefused(f"cannot write --out {out}: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise FolderRefused(f"cannot write --out {out}: {probe} is not writable")


def check_folder(out: Path, study_spec: dict, *, overwrite: bool) -> dict | None:
  """Refuse a folder the sweep must not write into; return its manifest (None for a new folder).

  Checks, writing nothing: `out` can be created or written; an existing folder is ours
  (a jaxlstm manifest, or empty), holds no symbolic link, and (unless `overwrite`) holds
  the same study. A spec without "data" fingerprints skips the data comparison (the
  CLI checks again with them once the data is resolved).

  Raises:
    FolderRefused: with the reason and the fix, in one line.
  """
  out = Path(out)
  _check_writable(out)
  existing = None
  if out.exists():
    if not out.is_dir():
      raise FolderRefused(f"--out {out} exists and is not a directory")
    try:
      existing = RunFolder.read_manifest(out)
    except ForeignFolder as e:
      raise FolderRefused(f"--out {out} is not a jaxlstm results folder: {e} A folder that is not ours is "
                          "never replaced or deleted, even with --overwrite; choose another --out") from None
    if existing is None and any(p.name != ".lock" for p in out.iterdir()):
      raise FolderRefused(f"--out {out} exists and is not a jaxlstm results folder (no manifest.json); "
                          "choose another --out (it is never deleted, even with --overwrite)")
    links = symlinks(out)
    if links:
      raise FolderRefused(f"--out {out} contains a symbolic link ({links[0]}); jaxlstm writes only into "
                          "folders of its own: remove the link or choose another --out")
  if existing and not overwrite:
    spec = study_spec if "data" in study_spec else dict(study_spec, data=existing["study"].get("data"))
    diffs = study_differences(existing["study"], spec)
    if diffs:
      raise FolderRefused(f"--out {out} holds a different study: {'; '.join(diffs)}. "
                          "Pass --overwrite to replace it, or choose another --out")
  return existing


# ---------------------------------------------------------------------------
# Loading.


@dataclasses.dataclass
class Run:
  """A results folder, loaded.

  Attributes:
    path: the folder.
    manifest: manifest.json as a dict.
    configs: config id -> `Config`, every config of the study in study order.
      The ids are the folder's (file names, table keys): a folder written by an
      older jaxlstm whose `Config` had fewer fields keeps its ids, even though
      `Config.config_id` of the loaded config may differ.
    scores: scores.csv (one row per config and seed).
    summary: summary.csv (one row per config), indexed by config_id.
  """
  path: Path
  manifest: dict
  configs: dict
  scores: Any
  summary: Any

  @property
  def done(self) -> list[str]:
    """Ids of the finished configs, in study order."""
    return [c for c in self.configs if self.manifest["configs"][c]["status"] == "done"]

  @functools.cached_property
  def histories(self):
    """Tidy frame of every done config's history: config_id, repeat, epoch, metric, value."""
    return load_histories(self.path, self.done)

  def history(self, config_id: str) -> dict[str, np.ndarray]:
    """One config's history: metric -> `[repeats, epochs]`."""
    return load_history(self.path, config_id)

  def ensemble(self, config_id: str, *, partial: bool = False):
    """The saved `Ensemble` of one config (params restored from its checkpoint).

    Args:
      config_id: a config of the run.
      partial: also load a config that holds fewer repeats than the study asks for:
        one eliminated by a race, or one a grown or interrupted run has not finished
        (its `repeat_indices` say which repeats it has).

    Raises:
      KeyError: not a config of the run.
      ValueError: it has no trained repeats, or fewer than the study's and not `partial`.
    """
    from jaxlstm.ensemble import Ensemble
    entry = self.manifest["configs"].get(config_id)
    if entry is None:
      raise KeyError(f"unknown config {config_id!r}; this run has {', '.join(self.manifest['study']['configs'])}.")
    status, repeats = entry["status"], int(entry.get("repeats", len(entry.get("stopped_epoch", ()))))
    if status == "pending":
      raise ValueError(f"config {config_id} has no trained repeats yet; rerun the sweep to train it.")
    if status != "done" and not partial:
      load = f"run.ensemble({config_id!r}, partial=True) loads those {repeats}"
      if status == "eliminated":
        raise ValueError(f"config {config_id} was eliminated by the race after {repeats} repeats; {load}.")
      raise ValueError(f"config {config_id} has {repeats} of {self.manifest['study']['repeats']} repeats; "
                       f"rerun the sweep to complete it, or {load}.")
    config = self.configs[config_id]
    group = self.manifest["groups"][entry["group"]]
    diverged_epoch = np.asarray(entry["diverged_epoch"], dtype=int)
    folds = load_folds(self.path, config_id)
    per_fold = {}
    if folds is not None:
      per_fold = {"folds": int(entry.get("folds", folds["stopped_epoch"].shape[1])), "fold_history": folds["history"],
                  **{f"fold_{k}": np.asarray(folds[k], dtype=int) for k in FOLD_EPOCHS}}
    return Ensemble(
        config=config, history=self.history(config_id), params=load_params(self.path, config_id),
        stopped_epoch=np.asarray(entry["stopped_epoch"], dtype=int),
        best_epoch=np.asarray(entry["best_epoch"], dtype=int),
        diverged=diverged_epoch >= 0, diverged_epoch=diverged_epoch,
        seed=int(self.manifest["study"]["seed"]),
        repeat_indices=np.arange(len(diverged_epoch)), outputs=int(entry["outputs"]),
        time_out=int(entry["time_out"]), frame_shape=tuple(entry["frame_shape"]),
        timings={"compile_seconds": group["compile_seconds"], "run_seconds": group["run_seconds"],
                 "compiles": group["compiles"]}, **per_fold)

  @functools.cached_property
  def ensembles(self) -> dict:
    """config id -> saved `Ensemble`, for every done config in study order."""
    return {config_id: self.ensemble(config_id) for config_id in self.done}


def load_run(path: str | os.PathLike) -> Run:
  """Load a results folder written by `python -m jaxlstm.sweep`.

  Tables and configs are read at once; histories and ensembles (orbax
  checkpoints) when first used. Nothing is unpickled.

  Raises:
    ValueError: `path` is not a results folder.
  """
  import pandas as pd
  from jaxlstm.config import Config
  path = Path(path)
  manifest = RunFolder.read_manifest(path)
  if manifest is None:
    raise ValueError(f"{path} has no {MANIFEST}: not a jaxlstm results folder.")
  configs = {c: Config.from_dict(read_json(config_path(path, c))) for c in manifest["study"]["configs"]}
  # Ids are hex text: "0123e4567890" must not become a float.
  read = functools.partial(pd.read_csv, dtype={"config_id": str})
  scores = read(path / "scores.csv") if (path / "scores.csv").is_file() else pd.DataFrame()
  if "stopped_epoch" in scores:
    scores["stopped_epoch"] = scores["stopped_epoch"].astype("Int64")
  summary = read(path / "summary.csv") if (path / "summary.csv").is_file() else pd.DataFrame()
  if "config_id" in summary:
    summary = summary.set_index("config_id")
  return Run(path=path, manifest=manifest, configs=configs, scores=scores, summary=summary)
