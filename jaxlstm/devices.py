"""Devices: the mesh a group's members are laid out on, and member arrays onto it and back.

Every compiled call lays its members along the one axis (`members`) of a 1-D
`jax.sharding.Mesh`: member inputs, training states and histories carry
`NamedSharding(mesh, P("members"))`, the data is replicated, and each device trains
its own slice of the members (`jax.shard_map` inside the one jitted entry of
`jaxlstm.ensemble`; no collective runs inside it). Under `jax.distributed` the mesh
spans every process's devices and results are gathered back with
`multihost_utils.process_allgather`.

On CPU, N devices are N XLA:CPU host devices of one process
(`--xla_force_host_platform_device_count`), which must be asked for before jax
starts its backends: `request_host_devices`.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

MEMBERS = "members"
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


class DeviceError(ValueError):
  """A device request that cannot be met (too many devices, jax started with fewer)."""


def _jax_started() -> bool:
  """Whether jax's backends already run (their device count is then fixed)."""
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge  # no public way to ask without starting them
  return xla_bridge.backends_are_initialized()


def request_host_devices(count: int, *, strict: bool = True) -> None:
  """Ask for `count` XLA:CPU devices in this process (harmless when the backend is a GPU/TPU).

  Before jax is imported this sets `XLA_FLAGS` (replacing any host device count in
  it), so jax and any subprocess see it; after the import but before jax starts its
  backends it also sets `jax_num_cpu_devices`.

  Args:
    count: CPU devices wanted (>= 1).
    strict: raise when jax already runs with fewer CPU devices; with False (a
      default, not a request), keep what jax has or `XLA_FLAGS` already asks for.

  Raises:
    DeviceError: (strict) jax already runs with fewer than `count` CPU devices.
  """
  if not strict and (count == 1 or host_devices_requested() is not None):
    return
  if _jax_started():
    import jax
    have = len(jax.devices("cpu"))
    if strict and have < count:
      raise DeviceError(
          f"--devices {count}: jax already started with {have} CPU device{'s' * (have != 1)} in this "
          f"process; set XLA_FLAGS={HOST_DEVICES_FLAG}={count} before jax starts (the command line does "
          "this itself when jax is not imported yet)")
    return
  os.environ["XLA_FLAGS"] = f"{other_xla_flags()} {HOST_DEVICES_FLAG}={count}".strip()
  if "jax" in sys.modules:
    import jax
    jax.config.update("jax_num_cpu_devices", count)


def other_xla_flags() -> str:
  """`XLA_FLAGS` without its host device count."""
  return re.sub(rf"\s*{HOST_DEVICES_FLAG}=\S*", "", os.environ.get("XLA_FLAGS", "")).strip()


def host_devices_requested() -> int | None:
  """The CPU device count set in `XLA_FLAGS`, None when it sets none."""
  found = re.findall(rf"{HOST_DEVICES_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
  return int(found[-1]) if found else None


def make_mesh(devices: int | Sequence[Any] | None = None):
  """A 1-D mesh with axis `members` over devices of the default backend.

  Args:
    devices: how many devices per process (the first N of each process's devices
      of the default backend; with one process, of `jax.devices()`), or the
      devices themselves; default all of them (under `jax.distributed`, every
      process's).

  Raises:
    DeviceError: more devices than a process has, or fewer than one.
  """
  import jax
  from jax.sharding import Mesh
  if devices is None:
    chosen = jax.devices()
  elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
    local = jax.local_devices()
    if devices < 1:
      raise DeviceError(f"devices = {devices} is not allowed: expected an integer >= 1.")
    if devices > len(local):
      platform = local[0].platform
      hint = (f"; on CPU, ask for host devices before jax starts (XLA_FLAGS={HOST_DEVICES_FLAG}={devices}, "
              "which --devices sets on the command line)" if platform == "cpu" else "")
      where = " in this process" if jax.process_count() > 1 else ""
      raise DeviceError(f"--devices {devices}: only {len(local)} {platform} device"
                        f"{'s' * (len(local) != 1)} available{where}{hint}")
    by_process: dict[int, list] = {}
    for d in jax.devices():
      by_process.setdefault(d.process_index, []).append(d)
    chosen = [d for p in sorted(by_process) for d in by_process[p][:devices]]
  else:
    chosen = list(devices)
    if not chosen:
      raise DeviceError("devices = [] is not allowed: give at least one device.")
  return Mesh(np.array(chosen), (MEMBERS,))


def usable_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


# Vector extensions XLA:CPU compiles for when the host has them; numbers can differ by them.
CPU_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
                  "avx512_bf16", "amx_tile", "asimd", "sve", "sve2")


def cpuinfo_lines() -> dict[str, str]:
  """/proc/cpuinfo's lines by field name (the last processor's; empty off Linux)."""
  lines: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      lines = {line.split(":", 1)[0].strip(): line for line in f if ":" in line}
  except OSError:
    pass
  return lines


def host_cpu() -> dict[str, Any]:
  """The host CPU a run compiles for: model, architecture and vector extensions (the manifest records it).

  The same command gives the same numbers on the same kind of CPU; across kinds the
  last float32 bits can differ (README, "The engine's contract").
  """
  import platform
  lines = cpuinfo_lines()
  model = (lines.get("model name", "").split(":", 1)[-1].strip() or platform.processor()
           or platform.machine() or "unknown")
  flags = set((lines.get("flags") or lines.get("Features") or ":").split(":", 1)[1].split())
  return {"model": model, "machine": platform.machine(),
          "extensions": [name for name in CPU_EXTENSIONS if name in flags]}


def cpu_words(cpu: dict[str, Any] | None) -> str:
  """A recorded `host_cpu()` in a few words: "AMD EPYC (x86_64; avx2, fma, avx512f)"."""
  if not cpu:
    return "not recorded"
  extensions = ", ".join(cpu.get("extensions") or []) or "no vector extensions recorded"
  return f"{cpu.get('model', 'unknown')} ({cpu.get('machine', '?')}; {extensions})"


def check_host_devices(mesh, requested: int | None) -> None:
  """Refuse a request for more CPU host devices than cores (they could only take turns on them).

  Raises:
    DeviceError: `requested` CPU devices on fewer usable cores.
  """
  if mesh.devices.flat[0].platform == "cpu":
    _check_cores(requested)


def check_host_request(requested: int | None) -> None:
  """`check_host_devices` before jax starts, where jax can only run on CPU (no accelerator plugin installed,
  or JAX_PLATFORMS=cpu): bad input is refused before the plan line and anything slow."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    cpu_only = platforms.split(",")[0].strip() == "cpu"
  else:
    import importlib.util
    cpu_only = not any(importlib.util.find_spec(name) for name in _ACCELERATOR_MODULES)
  if cpu_only:
    _check_cores(requested)


_ACCELERATOR_MODULES = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")


def _check_cores(requested: int | None) -> None:
  cores = usable_cores()
  if requested and requested > cores:
    raise DeviceError(
        f"--devices {requested}: this machine gives the process {cores} CPU core{'s' * (cores != 1)}, and each "
        f"CPU device is a host device that needs a core of its own; use --devices {cores} or fewer "
        f"(XLA_FLAGS={HOST_DEVICES_FLAG}={requested} without --devices forces it)")


def resolve_mesh(mesh=None, devices: int | Sequence[Any] | None = None):
  """`mesh` if given, else `make_mesh(devices)` (both given is an error)."""
  if mesh is not None and devices is not None:
    raise ValueError("give mesh= or devices=, not both.")
  if mesh is not None:
    if tuple(mesh.axis_names) != (MEMBERS,):
      raise ValueError(f"expected a 1-D mesh with axis {MEMBERS!r}, got axes {tuple(mesh.axis_names)}; "
                       f"make one with jaxlstm.devices.make_mesh(...).")
    return mesh
  return make_mesh(devices)


def memories(mesh) -> int:
  """How many separate memories a mesh's devices have: the memory budget applies to each.

  One per device on GPUs and TPUs; on CPU the host devices of a process share its
  memory, so one per process.
  """
  devices = list(mesh.devices.flat)
  if devices[0].platform == "cpu":
    return len({d.process_index for d in devices})
  return len(devices)


def member_sharding(mesh):
  """Leading (member) axis split over the mesh."""
  from jax.sharding import NamedSharding, PartitionSpec
  return NamedSharding(mesh, PartitionSpec(MEMBERS))


def replicated(mesh):
  """A full copy on every device."""
  from jax.sharding import NamedSharding, PartitionSpec
  return NamedSharding(mesh, PartitionSpec())


def shard(tree: Any, mesh) -> Any:
  """Lay out host (or single-device) arrays with a leading member axis over `mesh`.

  Every process holds the same values (they derive from the seed); each puts its
  own devices' slices, so this works across processes too.
  """
  import jax
  sharding = member_sharding(mesh)

  def put(x):
    if x.shape[0] % mesh.size:
      raise ValueError(f"{x.shape[0]} members do not divide over {mesh.size} devices.")
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      # Keys travel as their uint32 data: slicing a key array is a jax op (one
      # more program to build, ~0.05-0.1 s); slicing its data on the host is not.
      data = np.asarray(jax.random.key_data(x))
      return jax.random.wrap_key_data(put(data), impl=jax.random.key_impl(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def replicate(tree: Any, mesh) -> Any:
  """A copy of host arrays on every device of `mesh` (the same values on every process)."""
  import jax
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x)[index]),
                      tree)


def gather(tree: Any) -> Any:
  """Host numpy copies of (possibly sharded, possibly multi-process) arrays.

  Across processes this is a collective: every process must call it with the same
  tree, and every process gets the whole arrays.
  """
  import jax
  leaves, treedef = jax.tree.flatten(tree)
  remote = [i for i, leaf in enumerate(leaves)
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable]
  if remote:
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather([leaves[i] for i in remote], tiled=True)
    for i, value in zip(remote, gathered):
      leaves[i] = np.asarray(value)
  return jax.tree.unflatten(treedef, [leaf if isinstance(leaf, np.ndarray) else np.asarray(jax.device_get(leaf))
                                      for leaf in leaves])


def describe(mesh) -> dict[str, Any]:
  """What the manifest records about the devices a run used."""
  import jax
  devices = list(mesh.devices.flat)
  return {"platform": devices[0].platform, "kind": devices[0].device_kind, "devices": len(devices),
          "processes": jax.process_count()}
