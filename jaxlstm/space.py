"""Search spaces: named dimensions (uniform, log-uniform, int, choice) that draw configs.

A `Space` is an ordered tuple of `Dimension`s, each named by a dotted config field.
Three forms build one, with the same rules and the same error messages:

* **Text**, as on the command line (`--space KEY=SPEC`, repeatable):

      uniform:LOW:HIGH       float in [LOW, HIGH)
      loguniform:LOW:HIGH    float whose logarithm is uniform; 0 < LOW
      int:LOW:HIGH           integer in [LOW, HIGH], both ends included
      int:LOW:HIGH:log       the same, log-spaced; 1 <= LOW
      choice:V1,V2,...       one of the values (split on the first ':' only)

  e.g. `optim.learning_rate=loguniform:1e-4:1e-1`, `model.cells=int:8:256:log`,
  `model.cell=choice:lstm,gru`, `model.dropout=uniform:0:0.5`.
* **A TOML `[space]` table**: each value is either the text above
  (`"optim.learning_rate" = "loguniform:1e-4:1e-1"`), an inline table
  (`{type = "loguniform", low = 1e-4, high = 0.1}`, `{type = "int", low = 8,
  high = 256, log = true}`, `{type = "choice", values = ["lstm", "gru"]}`), or a
  list, which is shorthand for a choice (`"model.cells" = [8, 16, 32]`). Keys may
  be nested (`[space.optim] learning_rate = "..."`): a table with a `type` key is a
  dimension, any other table is a level of the dotted name.
* **Python**, for experiment modules: `get_space()` returns `{dotted name:
  Dimension or text or table}`, e.g. `{"optim.learning_rate": loguniform(1e-4, 0.1)}`.

Choice values given as text are typed by their field with `config.parse_value`,
exactly as `--grid` values are (`choice:8,16` on `model.cells` gives ints; a
`data.options.<x>` value is JSON if it parses, else a string). Values given natively
(TOML, Python) are kept as given. Every point of a numeric range must be a legal
value of its field; `Space.check(base)` proves that for the bounds and every choice
against the study's base config.

This module never imports jax; optuna is imported only inside `to_optuna`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlstm.config import Config, ConfigError, parse_value

KINDS = ("uniform", "loguniform", "int", "choice")
_TABLE_KEYS = ("type", "low", "high", "log", "values")
# Types optuna's CategoricalDistribution stores as they are; anything else
# (a tuple-valued field such as train.metrics) goes in by its text label.
_OPTUNA_PRIMITIVES = (type(None), bool, int, float, str)
SEARCH_EXTRA = 'pip install -e ".[search]"'


def require_optuna():
  """Import optuna, or fail with the one line that says how to install it.

  Raises:
    ImportError: naming `pip install -e ".[search]"`.
  """
  try:
    import optuna
  except ImportError:
    raise ImportError(f"search needs optuna, an optional extra: {SEARCH_EXTRA}") from None
  return optuna


def _format_value(value: Any) -> str:
  """Text of one choice value, in the form `config.parse_value` reads back."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return "/".join(_format_value(v) for v in value)
  if value is None:
    return "none"
  return str(value)


def _jsonable(value: Any) -> Any:
  return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def point_key(point: Mapping[str, Any]) -> str:
  """Canonical text of a point `{dotted field: value}`: equal points, equal keys (and configs)."""
  return json.dumps({k: _jsonable(v) for k, v in point.items()}, sort_keys=True)


def _frozen(value: Any) -> Any:
  # TOML and JSON give lists; a choice value must be hashable and compare by value.
  return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _is_real(value: Any) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and math.isfinite(value))


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched field: its kind, range or values, and (inside a `Space`) its name.

  Build one with `uniform`, `loguniform`, `integer`, `choice` or `parse_dimension`.

  Attributes:
    kind: one of KINDS.
    low, high: range of "uniform" / "loguniform" (floats) and "int" (ints); None for "choice".
    log: log-spaced; always True for "loguniform", optional for "int".
    choices: the values of a "choice", in order.
    name: the dotted config field; "" until the dimension enters a `Space`.
  """
  kind: str
  low: float | int | None = None
  high: float | int | None = None
  log: bool = False
  choices: tuple = ()
  name: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      hint = difflib.get_close_matches(str(self.kind), KINDS, n=1)
      extra = f" Did you mean {hint[0]!r}?" if hint else ""
      self._fail(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}.{extra}")
    if self.kind == "choice":
      self._check_choice()
    else:
      self._check_range()

  def _where(self) -> str:
    return f"space {self.name} = {self.text!r}" if self.name else f"search dimension {self.text!r}"

  def _fail(self, message: str):
    raise ConfigError(f"{self._where()}: {message}")

  def _check_choice(self):
    if self.low is not None or self.high is not None or self.log:
      self._fail("a choice takes values only (no low, high or log).")
    if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
      self._fail(f"choices must be a list of values, got {self.choices!r}.")
    choices = tuple(_frozen(v) for v in self.choices)
    object.__setattr__(self, "choices", choices)
    if not choices:
      self._fail("a choice needs at least one value, e.g. choice:lstm,gru.")
    labels = [_format_value(v) for v in choices]
    for i, label in enumerate(labels):
      if label in labels[:i]:
        self._fail(f"the choice lists {label!r} twice; give each value once.")

  def _check_range(self):
    if self.choices:
      self._fail(f"a {self.kind} dimension takes low and high, not values.")
    for end in ("low", "high"):
      if not _is_real(getattr(self, end)):
        self._fail(f"{end} must be a finite number, got {getattr(self, end)!r}.")
    low, high = self.low, self.high
    if self.kind == "int":
      for end, value in (("low", low), ("high", high)):
        if float(value) != math.floor(value):
          self._fail(f"int bounds must be integers, got {end} = {value!r}; "
                     f"use int:{math.ceil(low)}:{math.floor(high)} or uniform:{low}:{high}.")
      low, high = int(low), int(high)
    else:
      low, high = float(low), float(high)
    object.__setattr__(self, "low", low)
    object.__setattr__(self, "high", high)
    if self.kind == "uniform" and self.log:
      self._fail(f"a log-spaced float range is loguniform:{low}:{high}.")
    if self.kind == "loguniform":
      object.__setattr__(self, "log", True)
    if not isinstance(self.log, bool):
      self._fail(f"log must be true or false, got {self.log!r}.")
    if low >= high:
      self._fail(f"the range is empty (low {low} >= high {high}); give low < high "
                 "(a fixed value goes in --set, not the space).")
    if self.log and low <= 0:
      minimum = "1 (an int range with log)" if self.kind == "int" else "a positive number"
      self._fail(f"a log-spaced range needs low > 0, got {low}; start it at {minimum}.")

  @property
  def text(self) -> str:
    """The command-line form, e.g. 'loguniform:0.0001:0.1', 'int:8:256:log', 'choice:lstm,gru'."""
    if self.kind == "choice":
      return "choice:" + ",".join(_format_value(v) for v in self.choices)
    return f"{self.kind}:{self.low}:{self.high}" + (":log" if self.kind == "int" and self.log else "")

  def __str__(self) -> str:
    return self.text

  @property
  def size(self) -> float:
    """Number of distinct values: `inf` for a float range."""
    if self.kind == "choice":
      return len(self.choices)
    if self.kind == "int":
      return self.high - self.low + 1
    return math.inf

  def spec(self) -> dict[str, Any]:
    """JSON-able description (what a results folder records)."""
    return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high,
            "log": self.log, "choices": [_jsonable(v) for v in self.choices]}

  def value(self, u: float) -> Any:
    """The value at quantile `u` in [0, 1) of this dimension's sampling distribution.

    Floats are uniform (or log-uniform) on [low, high). An int range is uniform
    on the integers low..high; with `log`, floor(x) of x log-uniform on
    [low, high + 1), so P(k) ∝ log((k + 1) / k) and every integer can come up.
    """
    if self.kind == "choice":
      return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
    if self.kind == "int":
      if self.log:
        x = math.exp(math.log(self.low) + u * (math.log(self.high + 1) - math.log(self.low)))
      else:
        x = self.low + u * (self.high - self.low + 1)
      return min(max(int(math.floor(x)), self.low), self.high)
    if self.log:
      x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
    else:
      x = self.low + u * (self.high - self.low)
    return min(max(float(x), self.low), self.high)

  def grid(self, points: int | None) -> list:
    """Grid values: every choice; `points` values evenly (log-)spaced over a range, both ends in.

    An int range with at most `points` integers gives all of them.
    """
    if self.kind == "choice":
      return list(self.choices)
    if self.kind == "int" and points is not None and self.size <= points:
      return list(range(self.low, self.high + 1))
    if points is None or points < 2:
      raise ConfigError(f"{self._where()}: grid search over a range needs grid_points >= 2 "
                        f"values per range dimension, got {points!r} (e.g. --grid-points 5).")
    spaced = np.geomspace if self.log else np.linspace
    values = spaced(self.low, self.high, points)
    if self.kind == "int":
      return sorted({int(round(v)) for v in values})
    return [float(v) for v in values]

  # Optuna ------------------------------------------------------------------

  def _label(self, value: Any) -> Any:
    """The value as optuna stores it (a choice outside optuna's primitive types goes by its text)."""
    if self.kind == "choice" and not isinstance(value, _OPTUNA_PRIMITIVES):
      return _format_value(value)
    return value

  def to_optuna(self):
    """The optuna distribution: FloatDistribution, IntDistribution or CategoricalDistribution."""
    distributions = require_optuna().distributions
    if self.kind == "choice":
      return distributions.CategoricalDistribution([self._label(v) for v in self.choices])
    if self.kind == "int":
      return distributions.IntDistribution(self.low, self.high, log=self.log)
    return distributions.FloatDistribution(self.low, self.high, log=self.log)

  def from_optuna(self, value: Any) -> Any:
    """Inverse of `_label`: optuna's stored value -> the typed field value."""
    if self.kind == "choice":
      for choice in self.choices:
        if self._label(choice) == value:
          return choice
      raise ConfigError(f"{self._where()}: optuna proposed {value!r}, which is not one of the "
                        "choices; the study was made with another space (use a new folder).")
    return int(value) if self.kind == "int" else float(value)


def uniform(low: float, high: float) -> Dimension:
  """A float uniform on [low, high)."""
  return Dimension("uniform", low, high)


def loguniform(low: float, high: float) -> Dimension:
  """A float whose log is uniform on [log low, log high); 0 < low < high."""
  return Dimension("loguniform", low, high, log=True)


def integer(low: int, high: int, *, log: bool = False) -> Dimension:
  """An integer in [low, high], both included; `log` spaces it logarithmically (low >= 1)."""
  return Dimension("int", low, high, log=log)


def choice(values: Sequence[Any]) -> Dimension:
  """One of `values`, each equally likely."""
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ConfigError(f"choice() takes a list of values, got {values!r}; e.g. choice(['lstm', 'gru']).")
  return Dimension("choice", choices=tuple(values))


def _number(name: str, text: str, what: str, spec: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ConfigError(f"space {name} = {spec!r}: {what} {text!r} is not a number.") from None


def parse_dimension(name: str, text: str) -> Dimension:
  """Read the text form (`loguniform:1e-4:1e-1`, `int:8:256:log`, `choice:lstm,gru`) of field `name`.

  The field is checked and choice values typed (`check_field`).

  Raises:
    ConfigError: one line naming the field, the text and the fix.
  """
  _check_known_field(name)
  spec = text.strip()
  kind, sep, rest = spec.partition(":")
  kind = kind.strip().lower()
  if not sep:
    raise ConfigError(f"space {name} = {text!r}: expected KIND:ARGS with KIND one of "
                      f"{', '.join(KINDS)}, e.g. {name}=uniform:0:0.5 or {name}=choice:a,b.")
  if kind not in KINDS:
    hint = difflib.get_close_matches(kind.replace("-", "").replace("_", ""), KINDS, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"space {name} = {text!r}: unknown kind {kind!r}; expected one of "
                      f"{', '.join(KINDS)}.{extra}")
  if kind == "choice":
    parts = [p.strip() for p in rest.split(",")]
    if not rest.strip() or any(not p for p in parts):
      raise ConfigError(f"space {name} = {text!r}: a choice needs comma-separated values, "
                        f"e.g. {name}=choice:a,b (no empty value).")
    return check_field(Dimension("choice", choices=tuple(parse_value(name, p) for p in parts), name=name))
  parts = [p.strip() for p in rest.split(":")]
  log = False
  if kind == "int" and len(parts) == 3:
    if parts[2].lower() != "log":
      raise ConfigError(f"space {name} = {text!r}: the only option after int:LOW:HIGH is ':log', "
                        f"got {parts[2]!r}.")
    parts, log = parts[:2], True
  if len(parts) != 2:
    form = "int:LOW:HIGH or int:LOW:HIGH:log" if kind == "int" else f"{kind}:LOW:HIGH"
    raise ConfigError(f"space {name} = {text!r}: expected {form}.")
  low, high = (_number(name, p, end, text) for p, end in zip(parts, ("low", "high")))
  if kind == "int":  # 1e3 is an integer bound; 1.5 is refused by Dimension
    low, high = (int(v) if v.is_integer() else v for v in (low, high))
  return check_field(Dimension(kind, low, high, log=log, name=name))


def parse_space_arg(text: str) -> tuple[str, Dimension]:
  """`--space KEY=SPEC` -> (KEY, Dimension).

  Raises:
    ConfigError: on a missing '=', an unknown field or a bad SPEC.
  """
  name, sep, spec = text.partition("=")
  name = name.strip()
  if not sep or not name:
    raise ConfigError(f"--space {text!r}: expected KEY=SPEC, e.g. --space optim.learning_rate=loguniform:1e-4:1e-1.")
  return name, parse_dimension(name, spec)


def parse_space_args(texts: Sequence[str]) -> dict[str, Dimension]:
  """All `--space` arguments, in order; a field given twice is refused.

  Raises:
    ConfigError: as `parse_space_arg`, or naming a repeated field.
  """
  out: dict[str, Dimension] = {}
  for text in texts:
    name, dim = parse_space_arg(text)
    if name in out:
      raise ConfigError(f"--space {name} is given twice ({out[name]} and {dim}); keep one.")
    out[name] = dim
  return out


def _check_known_field(name: str) -> None:
  """Raise ConfigError (with "did you mean") unless `name` is a config field or a problem option."""
  if name.startswith("data.options.") and len(name) > len("data.options."):
    return  # free-form: the problem checks its options when it makes the data
  try:
    Config().get(name)
  except ConfigError as e:
    raise ConfigError(f"space: {e}") from None


def _probe(name: str, text: str) -> Any:
  try:
    return parse_value(name, text)
  except ConfigError:
    return None


def check_field(dim: Dimension) -> Dimension:
  """Check that `dim.name` is a config field whose type fits `dim.kind`.

  A float range needs a float field (or a problem option), an int range a
  numeric field; `model.cells=uniform:1:10` is refused with the int form.

  Raises:
    ConfigError: naming the field, the dimension and the fix.
  """
  _check_known_field(dim.name)
  where = f"space {dim.name} = {dim.text!r}"
  if dim.kind == "choice":
    return dim
  as_float, as_int = _probe(dim.name, "0.5"), _probe(dim.name, "3")
  numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if isinstance(as_int, tuple) and len(as_int) == 1 and numeric(as_int[0]):
    # A list of layer widths (model.units): an int range searches the width of one layer.
    if dim.kind == "int":
      return dim
    raise ConfigError(f"{where}: {dim.name} is a list of layer widths; search one layer's width with "
                      f"int:{math.ceil(dim.low)}:{math.floor(dim.high)}" + (":log" if dim.log else "")
                      + ", or whole lists with choice:64/128,128 ('/' between a list's layers).")
  if dim.kind != "int" and not (numeric(as_float) and isinstance(as_float, float)):
    if numeric(as_int):
      raise ConfigError(f"{where}: {dim.name} takes integers; use "
                        f"int:{math.ceil(dim.low)}:{math.floor(dim.high)}" + (":log" if dim.log else "") + ".")
    raise ConfigError(f"{where}: {dim.name} is not a number; search it with choice:V1,V2,...")
  if dim.kind == "int" and not numeric(as_int):
    raise ConfigError(f"{where}: {dim.name} is not a number; search it with choice:V1,V2,...")
  return dim


def _dimension_from_table(name: str, table: Mapping[str, Any]) -> Dimension:
  for key in table:
    if key not in _TABLE_KEYS:
      hint = difflib.get_close_matches(str(key), _TABLE_KEYS, n=1)
      extra = f" Did you mean {hint[0]!r}?" if hint else ""
      raise ConfigError(f"space {name} = {dict(table)!r}: unknown key {key!r}; expected "
                        f"{', '.join(_TABLE_KEYS)}.{extra}")
  kind = str(table.get("type", "")).strip().lower()
  if kind not in KINDS:
    hint = difflib.get_close_matches(kind, KINDS, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"space {name} = {dict(table)!r}: type must be one of {', '.join(KINDS)}, "
                      f"got {table.get('type')!r}.{extra}")
  if kind == "choice":
    values = table.get("values")
    if not isinstance(values, (list, tuple)):
      raise ConfigError(f"space {name} = {dict(table)!r}: a choice needs values = [...].")
    return _choice_of(name, values)
  for end in ("low", "high"):
    if end not in table:
      raise ConfigError(f"space {name} = {dict(table)!r}: a {kind} range needs low and high.")
  return check_field(Dimension(kind, table["low"], table["high"], log=table.get("log", kind == "loguniform"),
                               name=name))


def _choice_of(name: str, values: Sequence[Any]) -> Dimension:
  typed = tuple(parse_value(name, v) if isinstance(v, str) else v for v in values)
  return check_field(Dimension("choice", choices=typed, name=name))


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  # A table with a "type" key is a dimension; any other table is a level of the dotted name.
  out = {}
  for key, value in table.items():
    if isinstance(value, Mapping) and "type" not in value:
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def as_dimension(name: str, value: Any) -> Dimension:
  """One entry of any form (Dimension, text, table, list) -> a named, checked Dimension.

  Raises:
    ConfigError: naming the field and what is wrong.
  """
  _check_known_field(name)
  if isinstance(value, Dimension):
    return check_field(dataclasses.replace(value, name=name))  # re-validates, naming the field
  if isinstance(value, str):
    return parse_dimension(name, value)
  if isinstance(value, Mapping):
    return _dimension_from_table(name, value)
  if isinstance(value, (list, tuple)):
    return _choice_of(name, value)
  raise ConfigError(f"space {name} = {value!r}: expected a text such as 'uniform:0:0.5', a table "
                    "{type = ..., low = ..., high = ...}, a list of choices or a Dimension.")


@dataclasses.dataclass(frozen=True)
class Space:
  """An ordered set of named dimensions.

  Attributes:
    dimensions: the dimensions, in the order given; names are distinct dotted fields.
  """
  dimensions: tuple[Dimension, ...]

  def __post_init__(self):
    dims = tuple(self.dimensions)
    object.__setattr__(self, "dimensions", dims)
    if not dims:
      raise ConfigError("the search space is empty; give at least one --space KEY=SPEC.")
    names = []
    for dim in dims:
      if not isinstance(dim, Dimension) or not dim.name:
        raise ConfigError(f"Space takes named Dimensions (use Space.from_mapping), got {dim!r}.")
      if dim.name in names:
        raise ConfigError(f"space {dim.name} is given twice; keep one.")
      names.append(dim.name)

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any]) -> Space:
    """Build from `{dotted name: Dimension | text | table | list}` (a `[space]` table or `get_space()`).

    Raises:
      ConfigError: on any bad entry, naming its field.
    """
    if not isinstance(mapping, Mapping):
      raise ConfigError(f"a search space is a table of dotted field -> dimension, got {type(mapping).__name__}.")
    return cls(tuple(as_dimension(name, value) for name, value in _flatten(mapping).items()))

  @classmethod
  def from_spec(cls, spec: Mapping[str, Any]) -> Space:
    """Inverse of `spec()` (e.g. to show the space a folder was searched with)."""
    return cls(tuple(Dimension(d["kind"], d["low"], d["high"], log=d["log"],
                               choices=tuple(_frozen(c) for c in d["choices"]), name=d["name"])
                     for d in spec["dimensions"]))

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(d.name for d in self.dimensions)

  @property
  def size(self) -> float:
    """Number of distinct points: `inf` once any dimension is a float range."""
    return math.prod(d.size for d in self.dimensions)

  def spec(self) -> dict[str, Any]:
    """JSON-able description; equal specs mean the same space (a resumed folder checks it)."""
    return {"dimensions": [d.spec() for d in self.dimensions]}

  def difference(self, spec: Mapping[str, Any]) -> str | None:
    """None if `spec` describes this space, else one phrase saying what differs.

    Args:
      spec: a `spec()` recorded earlier (e.g. in a results folder).
    """
    old = {d["name"]: d for d in spec.get("dimensions", [])}
    new = {d.name: d.spec() for d in self.dimensions}
    text = lambda d: str(Space.from_spec({"dimensions": [d]}).dimensions[0])
    for name in new.keys() - old.keys():
      return f"{name} is searched now but was not before"
    for name in old.keys() - new.keys():
      return f"{name} was searched before ({text(old[name])}) but is not now"
    for name, d in new.items():
      if json.dumps(d, sort_keys=True) != json.dumps(_jsonable(old[name]), sort_keys=True):
        return f"{name} was {text(old[name])}, now {text(d)}"
    if list(old) != list(new):
      return f"the dimensions were in the order {list(old)}, now {list(new)}"
    return None

  def sample(self, n: int, rng: np.random.Generator, *, unique: bool = True) -> list[dict[str, Any]]:
    """Draw `n` points, each a dict of dotted field -> typed value, in space order.

    Point i uses the generator's doubles i·d … i·d + d − 1 (d dimensions), so the
    first k of `sample(n)` equal `sample(k)` from an equal generator: `--random 20`
    keeps the 10 configs `--random 10` trained. With `unique`, a repeated point is
    skipped and the next draw taken instead (a repeated config would train twice).

    Args:
      n: number of points.
      rng: the generator all draws come from (e.g. `np.random.default_rng(seed)`).
      unique: skip points already drawn.

    Raises:
      ConfigError: when `unique` and the space holds fewer than `n` distinct points.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
      raise ConfigError(f"sample(n={n!r}): n must be an integer >= 0.")
    if not isinstance(rng, np.random.Generator):
      raise TypeError(f"rng must be a np.random.Generator, got {rng!r}; pass np.random.default_rng(seed).")
    if unique and n > self.size:
      raise ConfigError(f"asked for {n} distinct configs but the space {self.describe()} holds "
                        f"only {int(self.size)}; draw fewer or widen the space.")
    points, seen = [], set()
    while len(points) < n:
      # Blocks of rows read the same stream as one big block (PCG64 doubles are not buffered).
      for row in rng.random((n - len(points), len(self.dimensions))):
        point = {d.name: d.value(float(u)) for d, u in zip(self.dimensions, row)}
        key = point_key(point)
        if unique and key in seen:
          continue
        seen.add(key)
        points.append(point)
    return points

  def grid(self, points: int | None = None) -> dict[str, list]:
    """Grid values per dimension (see `Dimension.grid`), for a grid sampler.

    Raises:
      ConfigError: when a range needs `points` and none (or < 2) is given.
    """
    return {d.name: d.grid(points) for d in self.dimensions}

  def describe(self) -> str:
    """One line: 'optim.learning_rate=loguniform:0.0001:0.1 model.cell=choice:lstm,gru'."""
    return " ".join(f"{d.name}={d.text}" for d in self.dimensions)

  def check(self, base: Config) -> None:
    """Prove every bound and every choice makes a valid config from `base`.

    Interior points of a range are valid when both ends are (every field's legal
    values are an interval). Combinations of dimensions are not tried.

    Raises:
      ConfigError: "space optim.momentum = 'uniform:0:1': 1.0 is not allowed ...".
    """
    for d in self.dimensions:
      values = list(d.choices) if d.kind == "choice" else [d.low, d.high]
      for value in values:
        if d.name.startswith("data.options.") and isinstance(value, str):
          value = json.dumps(value)  # override parses option text as JSON: keep strings strings
        try:
          base.override({d.name: value})
        except ConfigError as e:
          raise ConfigError(f"space {d.name} = {d.text!r} reaches {_format_value(value)}, which this "
                            f"study's config refuses; narrow the space. ({e})") from None

  def to_optuna(self) -> dict[str, Any]:
    """`{name: optuna distribution}` in space order (imports optuna).

    Raises:
      ImportError: when optuna is missing, naming `pip install -e ".[search]"`.
    """
    return {d.name: d.to_optuna() for d in self.dimensions}

  def grid_labels(self, points: int | None = None) -> dict[str, list]:
    """`grid(points)` in optuna's stored form, for `optuna.samplers.GridSampler`."""
    return {d.name: [d._label(v) for v in d.grid(points)] for d in self.dimensions}

  def from_optuna_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
    """An optuna trial's `params` -> `{dotted field: typed value}` in space order.

    Raises:
      ConfigError: when a dimension is missing from `params` or a choice is unknown.
    """
    missing = [d.name for d in self.dimensions if d.name not in params]
    if missing:
      raise ConfigError(f"the trial has no value for {', '.join(missing)}; it was made with another "
                        "space (use a new folder).")
    return {d.name: d.from_optuna(params[d.name]) for d in self.dimensions}
