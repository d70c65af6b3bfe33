"""Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt raised in whatever code runs next on
the main thread. When that code is a garbage-collector callback or a `__del__`
(jax registers one, `_xla_gc_callback`), Python prints "Exception ignored in ..."
and drops the exception: the run went on to the end and exited 0 (seen in 3 of 20
runs of tests/test_reliability.py's SIGINT test). So the command lines remember
the request (`install`) and the runner asks again between calls (`check`); a
dropped interrupt is then raised at the next check, and its "Exception ignored"
report is left out.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

_requested = threading.Event()


def _on_sigint(signum, frame):
  _requested.set()
  raise KeyboardInterrupt


def _unraisable(previous):
  def hook(report):
    if isinstance(report.exc_value, KeyboardInterrupt) and _requested.is_set():
      return  # raised again at the next `check`
    previous(report)
  return hook


@contextlib.contextmanager
def install() -> Iterator[None]:
  """Within: Ctrl-C raises KeyboardInterrupt and is remembered (main thread only; else nothing)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _requested.clear()
  previous_handler, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
  signal.signal(signal.SIGINT, _on_sigint)
  sys.unraisablehook = _unraisable(previous_hook)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous_handler)
    sys.unraisablehook = previous_hook
    _requested.clear()


def check() -> None:
  """Raise KeyboardInterrupt if Ctrl-C came (within `install`) and its exception may have been dropped."""
  if _requested.is_set():
    raise KeyboardInterrupt
