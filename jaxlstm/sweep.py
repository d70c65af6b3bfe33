"""Command line: run a study (a grid of configs x repeats) into a results folder.

  python -m jaxlstm.sweep --repeats 30           # the default study (jaxlstm.experiments.cells)
  python -m jaxlstm.sweep --grid model.cells=1,5,10 --grid optim.learning_rate=1e-3,1e-2
  python -m jaxlstm.sweep --experiment cells --set train.epochs=100 --out runs/short
  python -m jaxlstm.sweep --config study.toml --random 20 --dry-run
  python -m jaxlstm.sweep --repeats 1000 --devices 2      # members over 2 devices
  srun python -m jaxlstm.sweep --repeats 1000 --distributed   # one process per task

This module parses arguments and reports errors; `jaxlstm.study` builds the study,
`jaxlstm.runner` plans it and runs it into a folder. Devices (`--devices`) are set
up here, before jax starts: the engine is imported only after that.

Exit status: 0 done; 2 bad input (one line on stderr, nothing written);
130 interrupted (rerun the same command to continue); 1 a distributed run lost
a process (rerun the same command on every process to resume).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from jaxlstm.study import DEFAULT_EXPERIMENT, UsageError

PROG = "jaxlstm.sweep"
DEFAULT_REPEATS = 30
# Without --devices, the command line asks for one XLA:CPU host device per core, at most this
# many: on the 2-core CPU, 2 host devices train 1.3-2.5x faster than 1 (benchmarks/RESULTS.md,
# "Devices"); more cores are not measured.
MAX_DEFAULT_CPU_DEVICES = 8
# Set once this process has joined a distributed run (see `_exit`).
_joined_peers = False


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse prints usage + message and exits; we want one line
    raise UsageError(message)


def _int_at_least(minimum: int, what: str):
  """An argparse type: an integer >= minimum, with a message naming what is expected."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value < minimum:
      raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
  return parse


_positive_int = _int_at_least(1, "a positive integer")
MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
  """An argparse type: a seed in [0, 2**32 - 1] (the range a PRNG key's seed word holds)."""
  value = _int_at_least(0, "a non-negative integer")(text)
  if value > MAX_SEED:
    raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED} (2**32 - 1), got {text!r}")
  return value


def _seconds(text: str) -> float:
  """An argparse type: a positive number of seconds."""
  try:
    value = float(text)
  except ValueError:
    value = -1.0
  if not value > 0:
    raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
  return value


def _memory(text: str) -> int:
  """An argparse type: a size in bytes from '8G', '512M', '2.5GiB', '1000000'."""
  from jaxlstm.config import parse_size
  try:
    return parse_size(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
  """Spaces, --search (Optuna) and --race."""
  search = parser.add_argument_group("search spaces, searches and races")
  search.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                      help="search a dotted field (repeatable): uniform:LOW:HIGH, loguniform:LOW:HIGH, "
                      "int:LOW:HIGH[:log] or choice:V1,V2,...; with --random N or --search")
  search.add_argument("--search", choices=("tpe", "random", "grid"),
                      help="search the space with Optuna (needs pip install -e \".[search]\"): "
                      "--trials trials, --batch at a time, each scored over its repeats by --objective")
  search.add_argument("--trials", type=_positive_int, default=32, help="with --search: trials (default 32)")
  search.add_argument("--batch", type=_positive_int, default=8,
                      help="with --search: trials trained together, one compiled call per static-shape "
                      "group (default 8)")
  search.add_argument("--objective", choices=("mean", "median", "iqm", "ucb"), default="mean",
                      help="with --search: what a trial's repeats tell Optuna (default mean; ucb: the bad "
                      "end of the 95%% interval of the mean)")
  search.add_argument("--grid-points", type=_int_at_least(2, "an integer >= 2"), metavar="N",
                      help="with --search grid: values per range dimension")
  search.add_argument("--race", action="store_true",
                      help="race the configs (a grid, a random draw or each --search batch) over repeats: "
                      "--race-initial repeats first, configs a Holm-corrected test shows worse are "
                      "eliminated, survivors grow to --repeats")
  search.add_argument("--race-initial", type=_int_at_least(2, "an integer >= 2"), default=5, metavar="N",
                      help="with --race: repeats of the first round (default 5)")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog=PROG, description="Train every config of a grid x repeats, one compiled call per "
      "static-shape group, into a resumable results folder.",
      epilog="Rerun the same command to resume an interrupted sweep.")
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--experiment", metavar="NAME|FILE.py",
                      help=f"a study of jaxlstm.experiments (default: {DEFAULT_EXPERIMENT}), or the path "
                      "of your own study file")
  source.add_argument("--config", metavar="FILE",
                      help="a TOML or JSON file: config sections plus an optional 'grid' table")
  source.add_argument("--data", metavar="CSV",
                      help="a time series CSV (header row; rows are time steps): windows of "
                      "data.options.n_in steps predict the next n_out, last 20%% validation, min-max scaled")
  parser.add_argument("--column", metavar="NAME[,NAME...]",
                      help="with --data: the series column(s) to use (default: every column)")
  parser.add_argument("--date-column", metavar="NAME", help="with --data: a date column to sort rows by")
  parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="grid values of a dotted field (repeatable); replaces the study's values for KEY")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                      help="fix a dotted field of the base config (repeatable); drops KEY from the grid")
  parser.add_argument("--random", type=_positive_int, metavar="N",
                      help="train N configs drawn at random (by --seed) from the grid instead of all")
  _add_search_arguments(parser)
  parser.add_argument("--epochs", type=_positive_int, help="shorthand for --set train.epochs=N")
  parser.add_argument("--metric", metavar="NAME",
                      help="the history metric scored in the summary, plots and report (default: the "
                      "experiment's METRIC, else val_loss), e.g. val_mae, val_accuracy")
  parser.add_argument("--score", choices=("final", "best", "restored"),
                      help="which value of the metric scores a repeat: final (last epoch, or the stop "
                      "epoch), best (its best epoch) or restored (the epoch whose weights early stopping "
                      "restored); default restored when early stopping restores weights, else final")
  parser.add_argument("--paired", action="store_true",
                      help="common random numbers: repeat i of every config draws the same keys "
                      "(shorthand for --set train.paired=true), so comparisons are paired")
  parser.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                      help=f"repeats (training runs) per config (default {DEFAULT_REPEATS})")
  parser.add_argument("--seed", type=_seed, default=0, help="the run's seed (default 0)")
  parser.add_argument("--out", metavar="DIR", help="results folder (default runs/<experiment>-<study hash>)")
  parser.add_argument("--overwrite", action="store_true", help="replace a results folder holding another study")
  parser.add_argument("--list-experiments", action="store_true", help="list the experiments and exit")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the plan (configs, groups, compiles, memory) without training or writing")
  parser.add_argument("--max-memory", type=_memory, metavar="SIZE",
                      help="refuse a plan whose estimated peak memory exceeds SIZE (e.g. 8G, 500M; "
                      "default: the memory available now)")
  parser.add_argument("--plots", choices=("background", "wait"), default=None,
                      help="draw the report's PNGs in a detached process after the command returns "
                      "(background, the default; $JAXLSTM_PLOTS) or before it returns (wait)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
  parser.add_argument("--no-cache", action="store_true",
                      help="use neither the program store nor the persistent compilation cache")
  scale = parser.add_argument_group("devices and processes")
  scale.add_argument("--devices", type=_positive_int, metavar="N",
                     help="lay each call's members over N devices (per process) of the default backend; on CPU, "
                     "N host devices of this process (default: every GPU/TPU; on CPU one host device per "
                     f"core, at most {MAX_DEFAULT_CPU_DEVICES})")
  scale.add_argument("--distributed", action="store_true",
                     help="run as one of several processes (jax.distributed): every process runs the same "
                     "command, process 0 writes the results folder; coordinator, process count and id come "
                     "from the flags below or from SLURM / Open MPI / a TPU VM")
  scale.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed: process 0's address")
  scale.add_argument("--num-processes", type=_positive_int, metavar="N", help="with --distributed: processes")
  scale.add_argument("--process-id", type=_int_at_least(0, "a non-negative integer"), metavar="I",
                     help="with --distributed: this process's id, 0 to N-1")
  scale.add_argument("--peer-timeout", type=_seconds, metavar="SECONDS",
                     help="with --distributed: a process that hears nothing from another for this long exits "
                     "with an error (default 60)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Run the CLI; returns the exit status (0 done, 2 bad input, 130 interrupted)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  stdout, stderr = sys.stdout, sys.stderr

  def fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=stderr)
    return 2

  try:
    args = build_parser().parse_args(argv)
    _check_scale_flags(args)
    if not args.no_cache:
      from jaxlstm.config import program_store_limit
      program_store_limit()  # JAXLSTM_STORE_LIMIT, said now rather than once something has compiled
    # Before jax starts (the engine is imported below this point): host devices,
    # then the distributed runtime.
    from jaxlstm import devices
    devices.check_host_request(args.devices)
    devices.request_host_devices(args.devices or default_cpu_devices(), strict=args.devices is not None)
  except (UsageError, ValueError) as e:  # devices.DeviceError is a ValueError
    return fail(str(e))
  except SystemExit as e:  # --help
    return int(e.code or 0)

  from jaxlstm import interrupts
  try:
    # Ctrl-C always becomes a KeyboardInterrupt here (a library may have changed the
    # handler), and one that Python dropped is raised again between calls: every stage
    # below turns it into exit status 130.
    with interrupts.install():
      if not args.distributed:
        return _run(args, argv, fail, stdout, stderr, None)
      return _run_distributed(args, argv, fail, stdout, stderr)
  except KeyboardInterrupt:
    print(f"{PROG}: interrupted", file=stderr, flush=True)
    return 130


def _check_scale_flags(args: argparse.Namespace) -> None:
  given = [flag for flag, value in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                                    ("--process-id", args.process_id), ("--peer-timeout", args.peer_timeout))
           if value is not None]
  if given and not args.distributed:
    raise UsageError(f"{given[0]} needs --distributed")
  if args.coordinator is not None and not re.fullmatch(r"\S+:\d+", args.coordinator):
    raise UsageError(f"--coordinator: expected HOST:PORT (process 0's address), got {args.coordinator!r}")
  if args.num_processes is not None and args.process_id is not None and args.process_id >= args.num_processes:
    raise UsageError(f"--process-id {args.process_id} is out of range for --num-processes {args.num_processes} "
                     f"(expected 0 to {args.num_processes - 1})")


def default_cpu_devices() -> int:
  """Host devices the command line asks for on CPU when --devices is not given: one per core, at most 8.

  (A request, not a demand: jax already running, or XLA_FLAGS naming a count, wins.)
  """
  from jaxlstm import devices
  return max(1, min(devices.usable_cores(), MAX_DEFAULT_CPU_DEVICES))


def _run_distributed(args: argparse.Namespace, argv: list[str], fail, stdout, stderr) -> int:
  """`_run` as one process of several: join, run, and leave together (or alone, at once, on a failure)."""
  from jaxlstm import distributed

  def lost(message: str) -> None:  # a peer died: say so, and go without jax's exit barrier
    print(f"{PROG}: error: {message}", file=stderr, flush=True)
    stdout.flush()
    os._exit(1)

  global _joined_peers
  try:
    peers = distributed.start(args.coordinator, args.num_processes, args.process_id,
                              peer_timeout=args.peer_timeout or distributed.DEFAULT_PEER_TIMEOUT, on_failure=lost)
  except distributed.DistributedError as e:
    return fail(str(e))
  _joined_peers = True
  stdout = _own_stdout(stdout)
  try:
    status = _run(args, argv, fail, stdout if peers.lead else io.StringIO(), stderr, peers)
  except KeyboardInterrupt:
    print(f"{PROG}: process {peers.index} interrupted; rerun the same command on every process to resume",
          file=stderr, flush=True)
    _exit(130)
  except Exception as e:  # a collective whose peer died (gloo), or a local failure: the others must notice
    text = " ".join(str(e).split())
    if "Gloo" in text or "Connection closed by peer" in text or "Connection reset" in text:
      lost(f"process {peers.index} lost a peer during a collective (another process died or was stopped: "
           f"{text[:160]}); rerun the same command on every process to resume from what process 0 committed")
    lost(f"process {peers.index} stopped: {type(e).__name__}: {text[:300]}; rerun the same command on every "
         "process to resume from what process 0 committed")
  peers.finish()
  return status


def _own_stdout(stdout):
  """Keep stdout for the summary: gloo prints "[Gloo] Rank 0 is connected to ..." to file descriptor 1.

  Our output goes to a copy of descriptor 1 and descriptor 1 itself to /dev/null
  (only when `stdout` is descriptor 1): a distributed run's stdout is the summary
  and its stderr our log lines, as in a single process.
  """
  try:
    if stdout.fileno() != 1:
      return stdout
  except (AttributeError, OSError, ValueError):
    return stdout
  stdout.flush()
  ours = os.fdopen(os.dup(1), "w", buffering=1, encoding=getattr(stdout, "encoding", None) or "utf-8")
  null = os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 1)
  os.close(null)
  sys.stdout = ours
  return ours


def _run(args: argparse.Namespace, argv: list[str], fail, stdout, stderr, peers) -> int:
  """Plan, check and run the study; with `peers`, every process agrees on the plan before anything is written."""
  workers = []  # the report worker, let go however this ends (it writes nothing unless told)
  try:
    return _plan_and_run(args, argv, fail, stdout, stderr, peers, workers)
  finally:
    for worker in workers:
      worker.cancel()


def _plan_and_run(args: argparse.Namespace, argv: list[str], fail, stdout, stderr, peers, workers: list) -> int:
  from jaxlstm import study as study_lib
  from jaxlstm.config import ConfigError
  from jaxlstm.devices import DeviceError
  problem = plan = worker = None
  try:
    if args.list_experiments:
      study_lib.list_experiments(stdout)
      return 0
    study = study_lib.make_study(args)
    out = Path(args.out) if args.out else study.default_out()
    if args.search:
      return _search(study, args, argv, out, fail, stdout, stderr)
    if args.race and not args.dry_run:  # a dry run of a race prints the plan of a plain run
      from jaxlstm import race_run
      return race_run.run(study, args, argv, out, fail=fail, stdout=stdout, stderr=stderr)
    # What can be checked without jax is checked before the plan line, so that bad
    # input still gets one line: the data (numpy) and whether --out may be used.
    from jaxlstm import data as data_lib
    from jaxlstm import store
    datasets = data_lib.resolve_all(study.configs)
    if not args.dry_run:
      fingerprints = {c.config_id: datasets[data_lib.data_key(c)].fingerprint for c in study.configs}
      store.check_folder(out, dict(study.spec(), data=fingerprints), overwrite=args.overwrite)
      if not args.quiet and (peers is None or peers.lead):
        # The plan in a line before jax is imported (~1 s) and anything compiles.
        folds = [data_lib.fold_count(c) for c in study.configs]
        per_repeat = f" x {max(folds)} folds" if max(folds) > 1 else ""
        print(f"{PROG}: study {study.name}: {len(study.configs)} config(s) x {study.repeats} repeats{per_repeat} = "
              f"{sum(folds) * study.repeats} members, seed {study.seed} -> {out}", file=stderr, flush=True)
      worker = _start_worker(args, out, peers)
      if worker is not None:
        workers.append(worker)
      if worker is None:  # a worker imports all of these itself, on the other core
        _prefetch(PREFETCH)
    from jaxlstm import devices, runner
    mesh = devices.make_mesh(args.devices)
    devices.check_host_devices(mesh, args.devices)
    plan = runner.plan_study(study, datasets=datasets, devices=mesh.size, memories=devices.memories(mesh))
    if args.dry_run:
      runner.describe_plan(plan, stdout)
      print(f"devices: {runner.environment(argv, mesh)['device']}", file=stdout)
    runner.check_memory(plan, args.max_memory)
  except (UsageError, ConfigError, ValueError, DeviceError) as e:
    problem = str(e)
  if peers is not None:  # the same decision on every process, before anything is written
    problem = peers.agree(None if problem else runner.fingerprint(plan, mesh), problem)
  if problem:
    return fail(problem)
  if args.dry_run:
    print(f"dry run: nothing trained, nothing written (results would go to {out})", file=stdout)
    return 0
  try:
    return runner.run_study(plan, out, argv, overwrite=args.overwrite, quiet=args.quiet,
                            cache=not args.no_cache, stdout=stdout, stderr=stderr, plots=args.plots,
                            mesh=mesh, peers=peers, worker=worker)
  except (UsageError, ConfigError) as e:
    return fail(str(e))


def _search(study, args: argparse.Namespace, argv: list[str], out: Path, fail, stdout, stderr) -> int:
  """`--search`: check everything that needs no jax (exit 2 on bad input), then run the search."""
  from jaxlstm import search_run
  from jaxlstm.config import ConfigError
  try:
    if args.out is None:  # another sampler, objective or race: another default folder
      out = study.default_out(search=search_run.settings(args))
    search = search_run.prepare(study, args, out)
  except (UsageError, ConfigError, ValueError) as e:
    return fail(str(e))
  if args.dry_run:
    print(search_run.describe(search), file=stdout)
    print(f"dry run: nothing trained, nothing written (results would go to {out})", file=stdout)
    return 0
  return search_run.run(search, argv, fail=fail, stdout=stdout, stderr=stderr)


PREFETCH = ("pandas", "scipy.special")


def _start_worker(args: argparse.Namespace, out: Path, peers):
  """A report worker for `out` (`jaxlstm.render.Worker`), where the run draws its plots in the background.

  Started before jax is imported: its ~0.5 s of imports (pandas and what the tables
  need) then take the second core while this process imports jax and trains, instead
  of sharing the GIL with them. None for distributed runs, `--plots wait`, or when no process can start.
  """
  from jaxlstm import render
  if peers is not None or (args.plots or render.default_plots_mode()) != "background":
    return None
  return render.Worker.start(out)


def _prefetch(modules: Sequence[str]) -> None:
  """Import what the end of a run needs (the tables) on a thread, while jax compiles.

  XLA compiles with the GIL released, so on a second core these ~0.5-1 s of imports
  come off the critical path. Import errors are left for the real import to raise.
  """
  def run():
    import importlib
    for name in modules:
      try:
        importlib.import_module(name)
      except Exception:  # noqa: BLE001 - reported by the import that needs it
        return
  threading.Thread(target=run, name="jaxlstm-prefetch", daemon=True).start()


def _exit(status: int) -> None:
  """Leave the process with `status`, without the interpreter's teardown unless peers wait for it.

  Everything is on disk by then: every write is atomic and synchronous, the lock
  dies with the process, the plot renderer is a process of its own. The teardown
  (jax's client, its executables, every module) cost 0.6-0.9 s of the default
  study's 5-7 s; after Ctrl-C, an XLA computation cut short could also crash it
  (seen: SIGSEGV after the 130 was decided), turning 130 into a signal death. A
  process of a distributed run passes jax's shutdown barrier first (its peers
  wait there), except after Ctrl-C.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  if status == 130 or not _joined_peers:
    os._exit(status)
  # Through jax's shutdown barrier first, with the backend alive: the interpreter's teardown
  # destroys the backend (and its gloo collectives) before that barrier, and once aborted a
  # process there (SIGABRT, "terminate called without an active exception") after a peer left.
  import jax
  try:
    jax.distributed.shutdown()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
  _exit(main())
