"""Members laid out over devices (issue 12): results do not depend on the device count.

Several devices on a CPU are XLA:CPU host devices, which must be asked for before
jax starts, so the device counts run in subprocesses (`--xla_force_host_platform_device_count`).
Each trains the default study (3 widths zero-padded into one program; also split by memory
into striped calls) and a shuffled, dropout config whose 7 members divide neither 2 nor 3
devices; the initial parameters come out of the same jitted entry run for zero epochs.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxlstm import devices, sweep

SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import jax, numpy as np
    import jaxlstm
    from jaxlstm import devices
    from jaxlstm.data import resolve
    from jaxlstm.ensemble import group_program, plan, run_group
    from jaxlstm.experiments import cells

    n, path = int(sys.argv[1]), sys.argv[2]
    assert jax.device_count() == n, jax.devices()
    mesh = devices.make_mesh()
    out = {}
    study = jaxlstm.expand_grid(cells.get_config().override({"train.epochs": 40}), cells.get_grid())
    (group,) = plan(study, 5)  # 15 members: padded to 16 on 2 devices
    ensembles, info = run_group(group, seed=3)
    assert info.member_chunks == 1 and info.compiles == 1
    for i, ens in enumerate(ensembles):
      out[f"cells_val_loss_{i}"] = ens.history["val_loss"]
      out[f"cells_final_{i}"] = ens.final("val_loss")
    # Split by memory: one repeat of each width per call (striped), padded to the devices.
    striped, info = run_group(group, seed=3, max_members_per_call=3)
    assert info.member_chunks == 5 and info.compiles == 1, info
    for i, ens in enumerate(striped):
      out[f"striped_final_{i}"] = ens.final("val_loss")
    # The draws: the same entry, run for zero epochs, returns the initial states.
    program = group_program(group, resolve(study[0]), seed=3, mesh=mesh)
    program = dataclasses.replace(program, calls=dataclasses.replace(program.calls, epoch_chunk=0))
    layout = program.calls.layouts[0]
    part = jax.tree.map(lambda a: a[program.calls.member_index(0)], program.members)
    run, _ = program.entry(layout, part)
    states, history = run(devices.shard(program.blank_states(part), mesh), devices.shard(part, mesh),
                          devices.replicate(program.data, mesh), np.bool_(True))
    spread = devices.member_sharding(mesh)
    assert all(leaf.sharding == spread for leaf in jax.tree.leaves((states, history))), states.epoch.sharding
    for name, leaf in jax.tree_util.tree_flatten_with_path(devices.gather(states.params))[0]:
      out["init" + jax.tree_util.keystr(name)] = leaf[:group.members]
    noisy = cells.get_config().override({"train.epochs": 6, "train.shuffle": True, "train.batch_size": 2,
                                         "model.dropout": 0.3, "model.cells": 4})
    ens = jaxlstm.fit(noisy, repeats=7, seed=1)
    out["noisy_loss"] = ens.history["loss"]
    out["noisy_val_loss"] = ens.history["val_loss"]
    np.savez(path, **out)
    print("ok", n, mesh.size)
""")


def run_on(n: int, path) -> dict[str, np.ndarray]:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
  try:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(path)], env=env, capture_output=True,
                          text=True, timeout=300)
  except subprocess.TimeoutExpired:
    pytest.fail(f"{n} host devices: no result in 300 s (a hang?)")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[-3:] == ["ok", str(n), str(n)], proc.stdout
  with np.load(path) as npz:
    return {k: npz[k] for k in npz.files}


@pytest.mark.timeout(900)
def test_one_two_three_host_devices_give_the_same_draws_and_scores(tmp_path):
  results = {n: run_on(n, tmp_path / f"{n}.npz") for n in (1, 2, 3)}
  one = results[1]
  draws = [k for k in one if k.startswith("init")]
  assert draws and one[draws[0]].shape[0] == 15
  for n in (2, 3):
    other = results[n]
    assert sorted(other) == sorted(one)
    for key in draws:  # every member's random draws: bit for bit
      np.testing.assert_array_equal(other[key], one[key], err_msg=f"{key} on {n} devices")
    for key in one:
      if not key.startswith("init"):  # losses: to float32 rounding (the vectorised width differs)
        np.testing.assert_allclose(other[key], one[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} on {n} devices")
  for i in range(3):  # a striped split trains the same members as one call
    np.testing.assert_allclose(one[f"striped_final_{i}"], one[f"cells_final_{i}"], rtol=1e-5, atol=1e-6)
  # The repeats really differ (so equality above is not trivially true).
  assert len(np.unique(np.round(one["cells_final_2"], 6))) == 5
  assert len(np.unique(np.round(one["noisy_loss"][:, -1], 6))) == 7


def test_calls_are_padded_to_a_multiple_of_the_devices_and_the_budget_is_per_device():
  import jaxlstm
  from jaxlstm.data import resolve
  from jaxlstm.ensemble import estimate_member_bytes, plan, plan_calls
  from jaxlstm.train import make_train
  cfg = jaxlstm.Config().override({"train.epochs": 3})
  (group,) = plan([cfg], 7)
  dataset = resolve(cfg)
  train = make_train(cfg, dataset)
  one = estimate_member_bytes(train, cfg, dataset)
  for n, per_call in ((1, 7), (2, 8), (3, 9), (8, 8)):
    calls = plan_calls(group, train, dataset, devices=n)
    assert (calls.calls, calls.members_per_call) == (1, per_call)
    assert list(calls.member_index(0)) == list(range(7)) + [6] * (per_call - 7)  # padding repeats the last
  # A budget of 2 members per device: 2 devices take 4 members per call, 3 take 6.
  assert plan_calls(group, train, dataset, devices=2, memory_budget=2 * one).members_per_call == 4
  calls = plan_calls(group, train, dataset, devices=3, memory_budget=2 * one)
  assert (calls.calls, calls.members_per_call) == (2, 6)
  # Host devices share one memory: the budget holds 2 members in all, padded to the 3 devices.
  calls = plan_calls(group, train, dataset, devices=3, memories=1, memory_budget=2 * one)
  assert (calls.calls, calls.members_per_call) == (3, 3)
  assert devices.memories(devices.make_mesh()) == 1  # CPU


def test_a_striped_padded_group_is_padded_to_the_devices_and_keeps_one_layout():
  import jaxlstm
  from jaxlstm.data import resolve
  from jaxlstm.ensemble import estimate_member_bytes, plan, plan_calls
  from jaxlstm.train import make_train
  configs = jaxlstm.expand_grid(jaxlstm.Config().override({"train.epochs": 3}), {"model.cells": [1, 3, 5]})
  (group,) = plan(configs, 4, pad_cells=True)
  dataset = resolve(configs[0])
  train = make_train(group.configs[0], dataset, widths=group.widths)
  one = estimate_member_bytes(train, group.configs[0], dataset)
  calls = plan_calls(group, train, dataset, devices=2, memories=1, memory_budget=3 * one)
  # One repeat of each of the 3 configs per call (the budget), padded to 4 for the 2 devices.
  assert (calls.stripe, calls.calls, calls.members_per_call) == (1, 4, 4)
  assert len(set(calls.layouts)) == 1 and sum(n for _, n in calls.layouts[0]) == 4
  assert [w.units for w, _ in calls.layouts[0]] == [(1,), (3,), (5,)]  # the last config's width pads
  assert list(calls.member_index(1)) == [1, 5, 9, 9]
  lanes = calls.first_lanes()
  assert len(lanes) == group.members
  order = np.concatenate([calls.member_index(c) for c in range(calls.calls)])
  assert list(order[lanes]) == list(range(group.members))


def test_mesh_requests_are_checked():
  mesh = devices.make_mesh()
  assert mesh.axis_names == (devices.MEMBERS,) and mesh.size >= 1
  assert devices.make_mesh(1).size == 1
  with pytest.raises(devices.DeviceError, match=f"--devices {mesh.size + 1}: only {mesh.size} cpu device"):
    devices.make_mesh(mesh.size + 1)
  with pytest.raises(devices.DeviceError, match="expected an integer >= 1"):
    devices.make_mesh(0)
  with pytest.raises(ValueError, match="not both"):
    devices.resolve_mesh(mesh, 1)
  # jax runs in this process already: a request for more CPU devices cannot be met, a default can.
  with pytest.raises(devices.DeviceError, match="jax already started with"):
    devices.request_host_devices(mesh.size + 1)
  devices.request_host_devices(mesh.size + 1, strict=False)


def test_devices_flag_bad_values_exit_2_with_one_line(tmp_path, capsys):
  import jax
  out = tmp_path / "run"
  n = len(jax.devices("cpu"))
  for args, message in ((["--devices", "0"], "argument --devices: expected a positive integer, got '0'"),
                        (["--devices", str(n + 1)], f"--devices {n + 1}: jax already started with {n} CPU device"),
                        (["--coordinator", "127.0.0.1:1234"], "--coordinator needs --distributed"),
                        (["--distributed", "--coordinator", "nohost"], "expected HOST:PORT"),
                        (["--distributed", "--num-processes", "2", "--process-id", "2"], "out of range")):
    assert sweep.main(["--repeats", "2", "--epochs", "2", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
  assert not out.exists()


@pytest.mark.timeout(300)
def test_more_host_devices_than_cores_and_no_coordinator_are_refused_in_a_real_process(tmp_path):
  """Fresh processes (jax not started yet): what the command line itself refuses."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "PMI_", "JAX_COORDINATOR", "TPU_"))}
  env["JAX_PLATFORMS"] = "cpu"
  out = tmp_path / "run"
  too_many = devices.usable_cores() + 1
  for args, message in (([f"--devices", str(too_many)], f"--devices {too_many}: this machine gives the process"),
                        (["--distributed"], "--distributed found no cluster to join")):
    proc = subprocess.run([sys.executable, "-m", "jaxlstm.sweep", "--repeats", "2", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
  assert not out.exists()


def test_fit_takes_a_mesh_or_a_device_count():
  import jax

  import jaxlstm
  cfg = jaxlstm.Config().override({"train.epochs": 3})
  default = jaxlstm.fit(cfg, repeats=3)
  for kwargs in ({"mesh": devices.make_mesh(1)}, {"devices": 1}, {"devices": jax.devices()[:1]}):
    ens = jaxlstm.fit(cfg, repeats=3, **kwargs)
    np.testing.assert_array_equal(ens.history["loss"], default.history["loss"])
  with pytest.raises(ValueError, match="expected a 1-D mesh with axis 'members'"):
    jaxlstm.fit(cfg, repeats=3, mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",)))
