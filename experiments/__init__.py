"""Studies for `python -m jaxlstm.sweep --experiment NAME` (installed as `jaxlstm.experiments`).

Each module here is one study. It defines:

  get_config() -> jaxlstm.Config      the base config
  get_grid() -> dict[str, list]       dotted field -> values (the Cartesian product runs)

and its docstring says what the study shows, the command that runs it and the
result to expect. The first docstring line is what `--list-experiments` prints.
`cells` is the default study.
"""
