"""Regression guard for the XLA:CPU LAPACK deadlock (DESIGN §3, reference/hang.md).

jaxlib 0.10.x splits a batched QR over the 2-thread intra-op pool and blocks the
calling pool thread; two such QRs at once (the orthogonal init of two stacked
layers, vmapped over >= 5 members) deadlock at 0% CPU. The engine's
orthogonal init uses no QR, and members are initialised with `lax.map`. This runs the hazardous shape
(2 layers, 30 members, repeated calls) in a subprocess on the default 2-thread
pool and fails on a timeout instead of hanging CI. Our orthogonal initializer is
QR-free (jaxlstm.initializers), so the programs hold no LAPACK call at all.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    os.environ.pop("PJRT_NPROC", None)
    import jax
    from jaxlstm import Config
    from jaxlstm.data import resolve
    from jaxlstm.ensemble import init_members, plan, members_of
    from jaxlstm.train import make_train
    cfg = Config().override({"model.cells": 20, "model.layers": 2, "train.epochs": 1})
    (group,) = plan([cfg], 30)
    train = make_train(cfg, resolve(cfg))
    members = members_of(group, 0)
    init = jax.jit(lambda m: init_members(train, m, ((20, 30),)))
    for call in range(40):
      members = members._replace(keys=jax.tree.map(jax.vmap(lambda k: jax.random.fold_in(k, call)), members.keys))
      jax.block_until_ready(init(members))
    print("ok")
""")


@pytest.mark.timeout(120)
def test_two_layer_thirty_member_init_does_not_deadlock():
  env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
  try:
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=90)
  except subprocess.TimeoutExpired:
    pytest.fail("2-layer, 30-member init hung for 90 s: a batched LAPACK call is back in the "
                "init path (see reference/hang.md)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith("ok")


def test_ensemble_program_has_no_lapack_call_and_matches_keras_orthogonal():
  """Structural check: the orthogonal init is QR-free, so no LAPACK call can be batched."""
  import jax
  import numpy as np

  import jaxlstm
  from jaxlstm import Config
  from jaxlstm.ensemble import group_program, plan
  from jaxlstm.initializers import orthogonal

  cfg = Config().override({"model.cells": 20, "model.layers": 2, "train.epochs": 1})
  (group,) = plan([cfg], 30)
  program = group_program(group, jaxlstm.problems.linear())
  run, _ = program.entry(((20, 30),), program.members)
  targets = re.findall(r'custom_call_target="([^"]+)"', run.as_text())
  assert not [t for t in targets if "lapack" in t.lower()], targets
  # Same draw as the QR-based Keras/jax orthogonal initializer, to float32 rounding.
  for shape in [(20, 80), (80, 20), (7, 7)]:
    key = jax.random.key(5)
    ours = np.asarray(orthogonal(key, shape))
    reference = np.asarray(jax.nn.initializers.orthogonal()(key, shape))
    np.testing.assert_allclose(ours, reference, atol=1e-5)
