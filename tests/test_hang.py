"""Regression guard for the XLA:CPU LAPACK deadlock (DESIGN §3, reference/hang.md).

jaxlib 0.10.x splits a batched QR over the 2-thread intra-op pool and blocks the
calling pool thread; two such QRs at once (the orthogonal init of two stacked
layers, vmapped over >= 5 members) deadlock at 0% CPU. The engine initialises
members with `lax.map`, so no QR is ever batched. This runs the hazardous shape
(2 layers, 30 members, repeated calls) in a subprocess on the default 2-thread
pool and fails on a timeout instead of hanging CI.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    os.environ.pop("PJRT_NPROC", None)
    import jax
    from jaxlstm import Config
    from jaxlstm.ensemble import plan, members_of
    from jaxlstm.train import Program, resolve_dataset
    cfg = Config().override({"model.cells": 20, "model.layers": 2, "train.epochs": 1})
    (group,) = plan([cfg], 30)
    program = Program(cfg, resolve_dataset(cfg))
    members = members_of(group, 0)
    init = jax.jit(lambda m: program.init_members(m, ((20, 30),)))
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


def test_ensemble_program_has_no_batched_lapack_call():
  """Structural check: every LAPACK custom call in the compiled ensemble program is unbatched."""
  import re

  import jax

  import jaxlstm
  from jaxlstm import Config
  from jaxlstm.ensemble import members_of, plan
  from jaxlstm.train import Program

  cfg = Config().override({"model.cells": 20, "model.layers": 2, "train.epochs": 1})
  (group,) = plan([cfg], 30)
  program = Program(cfg, jaxlstm.problems.linear())
  members = members_of(group, 0)
  text = program.make_start(((20, 30),), 1).lower(members, program.data()).as_text()
  calls = re.findall(r"custom_call @(lapack_\w+).*?num_batch_dims = \"(\d+)\"", text)
  assert calls, "expected the orthogonal init's QR in the program"
  assert all(batch == "0" for _, batch in calls), calls
  # The hazard itself: vmapping the init batches the QR over the 30 members.
  keys = jax.random.split(jax.random.key(0), 30)
  vmapped = jax.jit(jax.vmap(program.init_params)).lower(keys).as_text()
  assert re.search(r"lapack_sgeqrf_ffi.*?num_batch_dims = \"1\"", vmapped)
