"""Several processes (hosts) in one run: `jax.distributed`, agreement, a watchdog.

Every process runs the same command (`python -m jaxlstm.sweep ... --distributed`):
`start` calls `jax.distributed.initialize` (the coordinator, process count and
id given, or detected under SLURM, Open MPI or on a TPU VM as jax does), and the
members of every group are laid out on a mesh over all processes' devices. The
processes then

  * `agree` on the study before anything is written: each sends a hash of what it
    is about to train (or its error), and every process refuses to go on when any
    failed or the hashes differ;
  * follow process 0: it alone opens and writes the results folder and
    `broadcast`s what is left to train; results are gathered to every process
    (`jaxlstm.devices.gather`) and process 0 records them;
  * watch each other: a `Watchdog` thread beats in the coordination service's
    key-value store every second, and a process that sees a peer silent for
    `peer_timeout` seconds prints one line and exits with status 1. When process
    0 dies, the coordination service it hosts goes with it and jax stops the
    others at once (its own message, "Terminating process because the JAX
    distributed service detected fatal errors"). A collective whose peer died
    fails at once in gloo (a `JaxRuntimeError`), which the command line turns
    into the same one line.

A process that stops early makes the others stop within `peer_timeout` seconds
(plus one beat); rerunning the same command on every process resumes from what
process 0 had committed.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

DEFAULT_PEER_TIMEOUT = 60.0
_ALIVE = "jaxlstm/alive/"
_FINISHED = "jaxlstm/finished/"


class DistributedError(ValueError):
  """`--distributed` cannot start (no coordinator outside a cluster, bad process ids)."""


def digest(obj: Any) -> str:
  """A short hash of a JSON-able object (what the processes compare)."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Peers:
  """This process's view of the run's processes (see the module docstring).

  Attributes:
    index: this process's id (0 writes the results folder).
    count: number of processes.
  """

  def __init__(self, index: int, count: int, watchdog: Watchdog | None = None):
    self.index, self.count, self.watchdog = index, count, watchdog

  @property
  def lead(self) -> bool:
    return self.index == 0

  def exchange(self, obj: Any) -> list[Any]:
    """Every process's JSON-able `obj`, in process order (a collective: all must call it)."""
    if self.count == 1:
      return [obj]
    from jax.experimental import multihost_utils
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(self.count, -1)
    return [json.loads(bytes(row[:size]).decode()) for row, size in zip(rows, sizes)]

  def broadcast(self, obj: Any) -> Any:
    """Process 0's `obj` on every process (the others' arguments are ignored)."""
    return self.exchange(obj if self.lead else None)[0]

  def agree(self, fingerprint: str | None, error: str | None) -> str | None:
    """Compare what every process is about to run; the reason to stop, or None.

    Args:
      fingerprint: this process's hash of its study and plan (None with an error).
      error: what went wrong here, if anything.

    Returns:
      None when every process holds the same fingerprint; else one line that says
      which process failed or differs (the same decision on every process).
    """
    views = self.exchange({"fingerprint": fingerprint, "error": error})
    for index, view in enumerate(views):
      if view["error"]:
        return view["error"] if index == self.index else f"process {index}: {view['error']}"
    reference = views[0]["fingerprint"]
    differ = [i for i, v in enumerate(views) if v["fingerprint"] != reference]
    if differ:
      return (f"the processes were started with different studies (study hash {reference} on process 0, "
              f"{views[differ[0]]['fingerprint']} on process {differ[0]}); start every process with the "
              "same command (the same study, data, seed, repeats and --devices)")
    return None

  def finish(self) -> None:
    """Mark this process done (peers stop watching it) and stop its watchdog."""
    if self.watchdog is not None:
      self.watchdog.finish()


def start(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
          peer_timeout: float = DEFAULT_PEER_TIMEOUT,
          on_failure: Callable[[str], None] | None = None) -> Peers:
  """Join the run's processes (`jax.distributed.initialize`) and start the watchdog.

  Must run before jax starts its backends. Arguments left None are detected from
  the cluster (SLURM, Open MPI, TPU VM) as jax does.

  Args:
    coordinator: "HOST:PORT" of process 0.
    num_processes, process_id: how many processes, and which one this is.
    peer_timeout: seconds without a heartbeat after which a peer counts as dead.
    on_failure: called with a one-line message when a peer is lost (default: print
      it to stderr and exit with status 1 at once).

  Raises:
    DistributedError: nothing to connect to (no coordinator and no cluster), or
      inconsistent ids.
  """
  import jax
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise DistributedError(f"--process-id {process_id} is out of range for --num-processes {num_processes} "
                           f"(expected 0 to {num_processes - 1})")
  timeout = max(1, int(round(peer_timeout)))
  host = coordinator.rsplit(":", 1)[0].strip("[]") if coordinator else None
  # A coordinator on the loopback address listens there only (jax binds every interface otherwise).
  bind = coordinator if host in ("127.0.0.1", "localhost", "::1") else None
  try:
    jax.distributed.initialize(
        coordinator, num_processes, process_id, coordinator_bind_address=bind,
        # Our watchdog speaks first (clean message); jax's heartbeat is the backstop.
        heartbeat_timeout_seconds=2 * timeout + 5,
        initialization_timeout=max(60, 4 * timeout),
        # Processes that finish training wait here while process 0 writes the report.
        shutdown_timeout_seconds=3600)
  except ValueError as e:
    if "should be defined" in str(e) or "must be defined" in str(e):
      raise DistributedError(
          "--distributed found no cluster to join (no SLURM, Open MPI or TPU VM environment): give "
          "--coordinator HOST:PORT (process 0's address), --num-processes N and --process-id I on every "
          "process") from None
    raise DistributedError(f"--distributed: {e}") from None
  except RuntimeError as e:
    raise DistributedError(f"--distributed: {' '.join(str(e).split())}") from None
  index, count = jax.process_index(), jax.process_count()
  watchdog = None
  if count > 1:
    watchdog = Watchdog(index, count, peer_timeout, on_failure or _exit_on_failure)
    watchdog.start()
  return Peers(index, count, watchdog)


def _exit_on_failure(message: str) -> None:
  print(f"jaxlstm: error: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)


class Watchdog:
  """Heartbeats through the coordination service's key-value store; a silent peer is a dead one.

  Every `interval` seconds this process overwrites its own counter under
  `jaxlstm/alive/<id>` and reads everyone's; a peer whose counter has not moved
  for `timeout` seconds (and that has not said it finished) is reported through
  `on_failure`, as is losing the store itself (process 0 gone).
  """

  def __init__(self, index: int, count: int, timeout: float, on_failure: Callable[[str], None]):
    from jax._src import distributed  # the client jax.distributed.initialize made (no public handle)
    self.client = distributed.global_state.client
    self.index, self.count, self.timeout, self.on_failure = index, count, float(timeout), on_failure
    self.interval = min(1.0, self.timeout / 5)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="jaxlstm-watchdog", daemon=True)

  def start(self) -> None:
    self._thread.start()

  def finish(self) -> None:
    """Say this process is done (peers stop watching it), then stop beating."""
    self._stop.set()
    self._thread.join()
    try:
      self.client.key_value_set(f"{_FINISHED}{self.index}", "1", allow_overwrite=True)
    except Exception:  # the service is gone: nobody is left to tell
      pass

  def _run(self) -> None:
    started = time.monotonic()
    seen: dict[str, tuple[str, float]] = {}
    beat = 0
    while not self._stop.is_set():
      beat += 1
      try:
        self.client.key_value_set(f"{_ALIVE}{self.index}", str(beat), allow_overwrite=True)
        alive = dict(self.client.key_value_dir_get(_ALIVE))
        finished = {key.rsplit("/", 1)[-1] for key, _ in self.client.key_value_dir_get(_FINISHED)}
      except Exception as e:
        if self._stop.is_set():
          return
        self.on_failure(f"lost contact with process 0, which coordinates the run ({type(e).__name__}); "
                        "this process stops too: rerun the same command on every process to resume")
        return
      now = time.monotonic()
      for peer in range(self.count):
        if peer == self.index or str(peer) in finished:
          continue
        key = f"{_ALIVE}{peer}"
        if key in alive and seen.get(key, (None,))[0] != alive[key]:
          seen[key] = (alive[key], now)
        last = seen.get(key, (None, started))[1]
        if now - last > self.timeout:
          self.on_failure(f"process {peer} stopped responding (no heartbeat for {now - last:.0f} s): it died "
                          "or hangs; this process stops too: rerun the same command on every process to "
                          "resume from what process 0 committed")
          return
      self._stop.wait(self.interval)
