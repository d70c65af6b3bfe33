"""Search spaces: forms, typed reproducible draws, distributions, validation, optuna mapping."""
import ast
import pathlib
import tomllib

import numpy as np
import pytest
from scipy import stats as sstats

from jaxlstm import space as S
from jaxlstm.config import Config, ConfigError

TEXT = {
    "optim.learning_rate": "loguniform:1e-4:1e-1",
    "model.cells": "int:8:256:log",
    "model.cell": "choice:lstm,gru",
    "model.dropout": "uniform:0:0.5",
}


@pytest.fixture
def space():
  return S.Space.from_mapping(TEXT)


def test_text_form_parses_kinds_bounds_and_log(space):
  lr, cells, cell, dropout = space.dimensions
  assert (lr.kind, lr.low, lr.high, lr.log) == ("loguniform", 1e-4, 0.1, True)
  assert (cells.kind, cells.low, cells.high, cells.log) == ("int", 8, 256, True)
  assert isinstance(cells.low, int) and isinstance(cells.high, int)
  assert (cell.kind, cell.choices) == ("choice", ("lstm", "gru"))
  assert (dropout.kind, dropout.low, dropout.high, dropout.log) == ("uniform", 0.0, 0.5, False)
  assert space.names == tuple(TEXT)
  assert S.parse_space_arg("model.cells=int:1:1e3") == (
      "model.cells", S.Dimension("int", 1, 1000, name="model.cells"))


def test_three_forms_give_one_space(space):
  toml = tomllib.loads("""
[space]
"optim.learning_rate" = {type = "loguniform", low = 1e-4, high = 0.1}
[space.model]
cells = {type = "int", low = 8, high = 256, log = true}
cell = ["lstm", "gru"]
dropout = "uniform:0:0.5"
""")
  python = {"optim.learning_rate": S.loguniform(1e-4, 0.1), "model.cells": S.integer(8, 256, log=True),
            "model.cell": S.choice(["lstm", "gru"]), "model.dropout": S.uniform(0, 0.5)}
  args = S.parse_space_args([f"{k}={v}" for k, v in TEXT.items()])
  for other in (S.Space.from_mapping(toml["space"]), S.Space.from_mapping(python),
                S.Space.from_mapping(args)):
    assert other.spec() == space.spec()
    assert other == space


def test_draws_are_reproducible_typed_and_inside_bounds(space):
  a = space.sample(200, np.random.default_rng(7))
  b = space.sample(200, np.random.default_rng(7))
  c = space.sample(200, np.random.default_rng(8))
  assert a == b
  assert a != c
  for point in a:
    assert list(point) == list(TEXT)
    assert type(point["optim.learning_rate"]) is float and 1e-4 <= point["optim.learning_rate"] <= 0.1
    assert type(point["model.cells"]) is int and 8 <= point["model.cells"] <= 256
    assert point["model.cell"] in ("lstm", "gru")
    assert type(point["model.dropout"]) is float and 0 <= point["model.dropout"] <= 0.5
    Config().override(point)  # every draw is a valid config


def test_more_draws_keep_the_first(space):
  # --random 20 after --random 10 must keep the 10 configs already trained.
  assert space.sample(20, np.random.default_rng(3))[:10] == space.sample(10, np.random.default_rng(3))
  small = S.Space.from_mapping({"model.cells": "int:1:3", "model.cell": "choice:lstm,gru"})
  assert small.sample(6, np.random.default_rng(0))[:4] == small.sample(4, np.random.default_rng(0))


def test_loguniform_is_loguniform():
  dim = S.Space.from_mapping({"optim.learning_rate": "loguniform:1e-4:1e-1"})
  draws = np.array([p["optim.learning_rate"] for p in dim.sample(10_000, np.random.default_rng(0))])
  # log10 of a log-uniform draw is uniform on [-4, -1].
  assert sstats.kstest(np.log10(draws), "uniform", args=(-4, 3)).pvalue > 0.01
  # The same test has teeth: plain uniform draws on the same range are rejected.
  flat = S.Space.from_mapping({"optim.learning_rate": "uniform:1e-4:1e-1"})
  flat_draws = np.array([p["optim.learning_rate"] for p in flat.sample(10_000, np.random.default_rng(0))])
  assert sstats.kstest(np.log10(flat_draws), "uniform", args=(-4, 3)).pvalue < 1e-6


def test_int_log_covers_the_range_with_log_weights():
  sp = S.Space.from_mapping({"model.cells": "int:1:100:log"})
  draws = np.array([p["model.cells"] for p in sp.sample(20_000, np.random.default_rng(1), unique=False)])
  assert set(draws) == set(range(1, 101))
  # P(k) = log((k + 1) / k) / log(101): small widths are as likely per decade as large ones.
  k = np.arange(1, 101)
  expected = np.log((k + 1) / k) / np.log(101) * draws.size
  observed = np.bincount(draws, minlength=101)[1:]
  assert sstats.chisquare(observed, expected).pvalue > 0.01
  assert abs(np.mean(draws <= 10) - np.log(11) / np.log(101)) < 0.02  # about half below 10


def test_int_uniform_and_choice_frequencies():
  sp = S.Space.from_mapping({"model.layers": "int:1:4", "model.cell": "choice:lstm,gru",
                             "optim.name": "choice:adam,sgd,rmsprop"})
  draws = sp.sample(9_000, np.random.default_rng(2), unique=False)
  for name, values in (("model.layers", [1, 2, 3, 4]), ("model.cell", ["lstm", "gru"]),
                       ("optim.name", ["adam", "sgd", "rmsprop"])):
    counts = [sum(p[name] == v for p in draws) for v in values]
    assert sum(counts) == 9_000
    assert sstats.chisquare(counts).pvalue > 0.01, (name, counts)


def test_choice_values_are_typed_by_their_field():
  sp = S.Space.from_mapping({
      "model.cells": "choice:8,16", "train.shuffle": "choice:true,false",
      "optim.global_clipnorm": "choice:none,1.0", "train.metrics": "choice:mae,mse/mae",
      "data.options.n_in": "choice:5,10", "data.options.column": "choice:price,volume",
  })
  dims = {d.name: d.choices for d in sp.dimensions}
  assert dims["model.cells"] == (8, 16) and all(type(v) is int for v in dims["model.cells"])
  assert dims["train.shuffle"] == (True, False)
  assert dims["optim.global_clipnorm"] == (None, 1.0)
  assert dims["train.metrics"] == (("mae",), ("mse", "mae"))
  assert dims["data.options.n_in"] == (5, 10)  # problem options read as --grid reads them
  assert dims["data.options.column"] == ("price", "volume")
  # TOML / Python values are kept as given.
  native = S.Space.from_mapping({"model.cells": [8, 16], "train.metrics": [["mae"], ["mse", "mae"]]})
  assert native.dimensions[0].choices == (8, 16)
  assert native.dimensions[1].choices == (("mae",), ("mse", "mae"))


@pytest.mark.parametrize("text, match", [
    ("model.dropout=uniform:0.5:0.1", r"space model\.dropout = .*range is empty \(low 0\.5 >= high 0\.1\)"),
    ("model.cells=int:8:8", r"space model\.cells = .*range is empty"),
    ("optim.learning_rate=loguniform:0:1e-1", r"space optim\.learning_rate = .*needs low > 0, got 0\.0"),
    ("model.cells=int:0:64:log", r"space model\.cells = .*needs low > 0, got 0; start it at 1"),
    ("model.cells=int:1.5:10", r"space model\.cells = .*int bounds must be integers, got low = 1\.5"),
    ("model.cell=choice:", r"space model\.cell = 'choice:': a choice needs comma-separated values"),
    ("model.cell=choice:lstm,,gru", r"space model\.cell = .*no empty value"),
    ("model.cell=choice:lstm,lstm", r"space model\.cell = .*lists 'lstm' twice"),
    ("model.cell=choise:lstm,gru", r"space model\.cell = .*unknown kind 'choise'.*Did you mean 'choice'\?"),
    ("optim.learning_rate=log-uniform:1e-4:1", r"space optim\.learning_rate = .*Did you mean 'loguniform'\?"),
    ("model.dropout=0.5", r"space model\.dropout = '0\.5': expected KIND:ARGS"),
    ("model.dropout=uniform:0", r"space model\.dropout = 'uniform:0': expected uniform:LOW:HIGH"),
    ("model.dropout=uniform:zero:1", r"space model\.dropout = .*low 'zero' is not a number"),
    ("model.cells=int:1:10:lgo", r"space model\.cells = .*only option after int:LOW:HIGH is ':log'"),
    ("model.cells=uniform:1:10", r"space model\.cells = .*model\.cells takes integers; use int:1:10"),
    ("model.cell=uniform:0:1", r"space model\.cell = .*not a number; search it with choice"),
    ("model.cells=choice:8,many", r"model\.cells = 'many' is not a valid int"),
    ("optim.learnig_rate=uniform:0:1", r"Unknown config field 'optim\.learnig_rate'\. Did you mean 'optim\.learning_rate'\?"),
    ("cells=int:1:10", r"Unknown config field 'cells'\. Did you mean 'model\.cells'\?"),
    ("=uniform:0:1", r"--space '=uniform:0:1': expected KEY=SPEC"),
])
def test_bad_text_raises_one_line_naming_the_field(text, match):
  with pytest.raises(ConfigError, match=match) as info:
    S.parse_space_arg(text)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("table, match", [
    ({"model.dropout": {"type": "uniform", "low": 0.5, "high": 0.1}}, r"space model\.dropout = .*range is empty"),
    ({"model.dropout": {"type": "unifrom", "low": 0, "high": 0.1}}, r"space model\.dropout = .*Did you mean 'uniform'\?"),
    ({"model.dropout": {"type": "uniform", "low": 0}}, r"space model\.dropout = .*needs low and high"),
    ({"model.dropout": {"type": "uniform", "lo": 0, "high": 1}}, r"space model\.dropout = .*unknown key 'lo'"),
    ({"model.cell": {"type": "choice", "values": []}}, r"space model\.cell = .*at least one value"),
    ({"model.cell": []}, r"space model\.cell = .*at least one value"),
    ({"model.dropout": {"type": "uniform", "low": 0, "high": 0.5, "log": True}}, r"space model\.dropout = .*loguniform"),
    ({"model.cells": {"type": "int", "low": 8, "high": "lots"}}, r"space model\.cells = .*high must be a finite number"),
    ({"model.cells": 5}, r"space model\.cells = 5: expected a text"),
    ({"model.cells": S.uniform(1, 5)}, r"space model\.cells = .*takes integers"),
    ({}, r"search space is empty"),
])
def test_bad_table_or_python_raises_naming_the_field(table, match):
  with pytest.raises(ConfigError, match=match):
    S.Space.from_mapping(table)


def test_bad_python_constructors_raise():
  with pytest.raises(ConfigError, match=r"search dimension 'int:1:5.5': int bounds"):
    S.integer(1, 5.5)
  with pytest.raises(ConfigError, match=r"choice\(\) takes a list"):
    S.choice("lstm")
  with pytest.raises(ConfigError, match=r"--space model\.cells is given twice"):
    S.parse_space_args(["model.cells=int:1:5", "model.cells=int:1:9"])


def test_check_against_the_base_config():
  S.Space.from_mapping(TEXT).check(Config())
  with pytest.raises(ConfigError, match=r"space model\.dropout = 'uniform:0.0:1.0' reaches 1.0.*narrow"):
    S.Space.from_mapping({"model.dropout": "uniform:0:1"}).check(Config())
  with pytest.raises(ConfigError, match=r"space model\.cell = 'choice:lstm,grux' reaches grux.*Did you mean 'gru'"):
    S.Space.from_mapping({"model.cell": "choice:lstm,grux"}).check(Config())


def test_spec_round_trips_and_names_the_difference(space):
  import json
  spec = json.loads(json.dumps(space.spec()))  # what a folder would store
  assert S.Space.from_spec(spec) == space
  assert space.difference(spec) is None
  wider = S.Space.from_mapping({**TEXT, "optim.learning_rate": "loguniform:1e-5:1e-1"})
  assert wider.difference(spec) == ("optim.learning_rate was loguniform:0.0001:0.1, "
                                    "now loguniform:1e-05:0.1")
  more = S.Space.from_mapping({**TEXT, "model.layers": "int:1:3"})
  assert more.difference(spec) == "model.layers is searched now but was not before"
  tuple_space = S.Space.from_mapping({"train.metrics": "choice:mae,mse/mae"})
  assert tuple_space.difference(json.loads(json.dumps(tuple_space.spec()))) is None


def test_to_optuna_and_back(space):
  optuna = pytest.importorskip("optuna")
  dists = space.to_optuna()
  assert list(dists) == list(TEXT)
  assert dists["optim.learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
  assert dists["model.cells"] == optuna.distributions.IntDistribution(8, 256, log=True)
  assert dists["model.cell"] == optuna.distributions.CategoricalDistribution(["lstm", "gru"])
  assert dists["model.dropout"] == optuna.distributions.FloatDistribution(0.0, 0.5, log=False)
  params = {"model.dropout": 0.25, "model.cell": "gru", "model.cells": 32.0, "optim.learning_rate": 0.01}
  typed = space.from_optuna_params(params)
  assert list(typed) == list(TEXT) and type(typed["model.cells"]) is int
  tuples = S.Space.from_mapping({"train.metrics": "choice:mae,mse/mae"})
  assert tuples.to_optuna()["train.metrics"].choices == ("mae", "mse/mae")
  assert tuples.from_optuna_params({"train.metrics": "mse/mae"}) == {"train.metrics": ("mse", "mae")}
  with pytest.raises(ConfigError, match=r"no value for model\.cell"):
    space.from_optuna_params({"optim.learning_rate": 0.01})


def test_grid_values():
  sp = S.Space.from_mapping({**TEXT, "model.layers": "int:1:3"})
  grid = sp.grid(4)
  assert grid["optim.learning_rate"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
  assert grid["model.cells"] == [8, 25, 81, 256]
  assert grid["model.cell"] == ["lstm", "gru"]
  assert grid["model.dropout"] == pytest.approx([0, 1 / 6, 1 / 3, 0.5])
  assert grid["model.layers"] == [1, 2, 3]
  with pytest.raises(ConfigError, match=r"space optim\.learning_rate = .*needs grid_points >= 2"):
    sp.grid(None)


def test_unique_draws_and_a_space_too_small():
  sp = S.Space.from_mapping({"model.layers": "int:1:2", "model.cell": "choice:lstm,gru"})
  points = sp.sample(4, np.random.default_rng(0))
  assert len({tuple(p.values()) for p in points}) == 4
  with pytest.raises(ConfigError, match=r"asked for 5 distinct configs but the space .* holds only 4"):
    sp.sample(5, np.random.default_rng(0))
  with pytest.raises(TypeError, match=r"np\.random\.Generator"):
    sp.sample(2, 0)


def test_missing_optuna_names_the_extra(monkeypatch, space):
  import sys
  monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
  with pytest.raises(ImportError, match=r'pip install -e "\.\[search\]"'):
    space.to_optuna()


@pytest.mark.parametrize("module", ["space", "racing", "search"])
def test_module_never_imports_jax_and_optuna_only_lazily(module):
  path = pathlib.Path(__file__).parents[1] / "jaxlstm" / f"{module}.py"
  tree = ast.parse(path.read_text())
  top_level = {id(n) for n in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
      for name in names:
        assert name.split(".")[0] not in ("jax", "flax", "optax", "orbax"), (module, name)
        if name.split(".")[0] == "optuna":
          assert id(node) not in top_level, f"{module} imports optuna at module level"


def test_an_int_range_over_the_layer_widths_searches_one_layer():
  # model.units holds a list of widths: int:8:256:log (the example) is one layer's width.
  name, dim = S.parse_space_arg("model.units=int:8:256:log")
  assert (dim.kind, dim.low, dim.high, dim.log) == ("int", 8, 256, True)
  cfg = Config().override({"model.units": dim.value(0.5)})
  assert cfg.model.widths == (dim.value(0.5),)
  with pytest.raises(ConfigError, match="list of layer widths; search one layer's width with int:8:256"):
    S.parse_space_arg("model.units=uniform:8:256")
