"""Same bits? A digest of every history and parameter of a set of config families.

An engine change that claims to keep the numbers (a cheaper form of the same
arithmetic, a layout that keeps every sum's order) has to show it on more than
the default study. This trains a few repeats of each family for a few epochs and
prints one digest per family (every history array and every parameter, bytes and
shapes); run it on two revisions and compare:

  python benchmarks/digests.py --out /tmp/new.json                  # the working tree
  git worktree add --detach /tmp/old HEAD~1
  PYTHONPATH=/tmp/old python benchmarks/digests.py --out /tmp/old.json
  python benchmarks/digests.py --compare /tmp/old.json /tmp/new.json

Digests are per kind of CPU: another host may differ in the last bits
(README, "Machines"), so compare runs on one machine; and per number of host
devices (members split over them run at other shapes: README, "Devices"), so
compare runs under the same `XLA_FLAGS`. `--only a,b` picks families.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAXLSTM_NO_CACHE", "1")  # compile what the revision under test builds
sys.path.insert(0, str(Path(__file__).resolve().parent))
import workers  # W2's config

SINE = {"data.problem": "damped_sine", "data.options": {"n_train": 48, "n_val": 16, "length": 12}}
ECHO = {"data.problem": "echo", "data.options": {"n_train": 48, "n_val": 16}}

# name -> overrides of the default config (the default study's model: one step of Keras' zero state).
FAMILIES: dict[str, dict] = {
    "default": {},
    "cells1": {"model.cells": 1},
    "gru": {"model.cell": "gru"},
    "dropout": {"model.dropout": 0.2, "model.recurrent_dropout": 0.2},
    "layer_norm": {"model.layer_norm": True},
    "relu_hard_sigmoid": {"model.activation": "relu", "model.recurrent_activation": "hard_sigmoid"},
    "stacked_rmsprop": {"model.layers": 2, "optim.name": "rmsprop", "optim.momentum": 0.5},
    "bidirectional": {"model.architecture": "bidirectional"},
    "sgd_clip": {"optim.name": "sgd", "optim.momentum": 0.9, "optim.nesterov": True, "optim.clipvalue": 0.5},
    "adagrad_l1l2": {"optim.name": "adagrad", "model.kernel_l1": 0.01, "model.recurrent_l2": 0.01},
    "adam_wd_clipnorm": {"optim.weight_decay": 0.01, "optim.global_clipnorm": 1.0},
    "mae_batch1_es": {"train.loss": "mae", "train.batch_size": 1,
                      "train.early_stopping": {"patience": 2, "restore_best_weights": True}},
    "kfold": {"data.cv": "kfold", "data.folds": 3},
    "sine_stacked": {**SINE, "model.layers": 2, "model.cells": 8, "train.loss": "mae"},
    "sine_gru_dropout": {**SINE, "model.cell": "gru", "model.dropout": 0.1, "model.recurrent_dropout": 0.1},
    "sine_layer_norm": {**SINE, "model.layer_norm": True},
    "sine_gru_layer_norm": {**SINE, "model.cell": "gru", "model.layer_norm": True},
    "sine_tbptt": {**SINE, "model.tbptt": 4},
    "sine_fused": {**SINE, "model.kernel": "fused", "model.layers": 2, "model.cells": 8},
    "sine_bidirectional": {**SINE, "model.architecture": "bidirectional", "model.cells": 6},
    "echo": ECHO,
    # W2 itself (benchmarks/workers.py) at its 30 members, for 2 epochs: the shapes the time loop
    # is tuned on (XLA:CPU's elementwise code may round differently at another shape).
    "w2": dict(workers.W2_OVERRIDES),
}
EPOCHS, REPEATS = 6, 3
SIZES = {"w2": (2, 30)}  # family -> (epochs, repeats) where not (EPOCHS, REPEATS)


def digest(ensemble) -> str:
  """sha256 over every history array and every parameter leaf (names, shapes, bytes)."""
  import jax
  import numpy as np
  h = hashlib.sha256()
  for name in sorted(ensemble.history):
    value = np.asarray(ensemble.history[name])
    h.update(f"{name}{value.shape}{value.dtype}".encode() + value.tobytes())
  for path, leaf in jax.tree_util.tree_flatten_with_path(ensemble.params)[0]:
    value = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}{value.shape}{value.dtype}".encode() + value.tobytes())
  return h.hexdigest()[:16]


def run(names: list[str]) -> dict[str, str]:
  import jaxlstm
  out = {}
  for name in names:
    epochs, repeats = SIZES.get(name, (EPOCHS, REPEATS))
    overrides = {**FAMILIES[name], "train.epochs": epochs}
    start = time.perf_counter()
    ensemble = jaxlstm.fit(jaxlstm.Config().override(overrides), repeats=repeats)
    out[name] = digest(ensemble)
    print(f"{name:20s} {out[name]}  ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--only", help="comma-separated family names (default: all)")
  p.add_argument("--out", help="write the digests here as JSON")
  p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two saved runs; exit 1 if any differs")
  args = p.parse_args(argv)
  if args.compare:
    old, new = (json.loads(Path(path).read_text()) for path in args.compare)
    differ = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    for name in sorted(old.keys() | new.keys()):
      state = "missing" if name not in old or name not in new else "DIFFERS" if name in differ else "same"
      print(f"{name:20s} {state}")
    return 1 if differ else 0
  names = args.only.split(",") if args.only else list(FAMILIES)
  unknown = [n for n in names if n not in FAMILIES]
  if unknown:
    p.error(f"--only: unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
  digests = run(names)
  if args.out:
    Path(args.out).write_text(json.dumps(digests, indent=1))
  print(json.dumps(digests, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
