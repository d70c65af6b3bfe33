"""Config ids are frozen (DESIGN §10): they key every repeat's random streams, folders and resume.

`data/study_ids.json` holds the id of every config of every study in `jaxlstm.experiments`,
as they were when ids were frozen. A change to `Config`, `config_id` or a study that moves
one of them fails here: add new fields so that they enter the id only away from their
default, and never edit an existing study's configs in place.
"""
import json
import shutil
from pathlib import Path

import pytest

from jaxlstm import config as config_lib
from jaxlstm import study as study_lib
from jaxlstm import sweep
from jaxlstm.config import Config

FROZEN = json.loads((Path(__file__).parent / "data" / "study_ids.json").read_text())


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_every_study_keeps_its_config_ids(name):
  study = study_lib.make_study(sweep.build_parser().parse_args(["--experiment", name]))
  assert [c.config_id for c in study.configs] == FROZEN[name]


def test_every_study_is_frozen():
  assert sorted(FROZEN) == study_lib.experiment_names(), "add the ids of a new study to data/study_ids.json"


def test_a_field_added_later_enters_the_id_only_away_from_its_default(monkeypatch):
  # Pretend model.pool_size was added after the freeze.
  frozen = dict(config_lib.ID_FIELDS, model=tuple(f for f in config_lib.ID_FIELDS["model"] if f != "pool_size"))
  monkeypatch.setattr(config_lib, "ID_FIELDS", frozen)
  default, changed = Config(), Config().override({"model.pool_size": 3})
  assert "pool_size" not in default.identity()["model"]
  assert changed.identity()["model"]["pool_size"] == 3
  assert default.config_id != changed.config_id
  # Its default left out, the id is the one of a config that never had the field.
  without = {k: v for k, v in default.to_dict()["model"].items() if k in frozen["model"]}
  assert default.identity()["model"] == without


def test_operational_fields_never_change_the_id():
  base = Config()
  assert base.override({"train.checkpoint_every": 7}).config_id == base.config_id
  assert base.override({"train.epochs": 7}).config_id != base.config_id


def test_data_from_a_file_is_identified_by_its_content(tmp_path):
  series = "value\n" + "\n".join(str(i % 7) for i in range(60)) + "\n"
  here, there = tmp_path / "a" / "s.csv", tmp_path / "b" / "moved.csv"
  here.parent.mkdir()
  here.write_text(series)
  there.parent.mkdir()
  shutil.copy(here, there)
  ids = [Config().override({"data.problem": "csv", "data.options": {"path": str(p), "n_in": 5}}).config_id
         for p in (here, there)]
  assert ids[0] == ids[1]
  there.write_text(series.replace("\n3\n", "\n4\n", 1))
  changed = Config().override({"data.problem": "csv", "data.options": {"path": str(there), "n_in": 5}})
  assert changed.config_id != ids[0]


def test_a_config_edited_through_its_options_dict_gets_the_edited_id():
  # Config keeps its canonical JSON per instance (its hash is its id); data.options is
  # the one plain dict a frozen config holds, so an in-place edit must not go unseen.
  edited = Config().override({"data.options": {"n_train": 50}})
  before = edited.config_id
  assert hash(edited) == hash(Config().override({"data.options": {"n_train": 50}}))
  edited.data.options["n_train"] = 60
  expected = Config().override({"data.options": {"n_train": 60}})
  assert edited.config_id == expected.config_id != before
  assert edited.to_dict() == expected.to_dict()
