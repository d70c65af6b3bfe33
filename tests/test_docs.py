"""README's field tables name every config field, so a field cannot be added undocumented."""
import re
from pathlib import Path

from jaxlstm.config import all_fields

README = Path(__file__).resolve().parents[1] / "README.md"


def field_rows() -> dict[str, str]:
  """First cell -> whole row of every table row under a '#### ... field(s) ...' heading."""
  rows, in_fields = {}, False
  for line in README.read_text().splitlines():
    if line.startswith("#"):
      in_fields = line.startswith("#### ") and "field" in line
    elif in_fields and line.startswith("| `"):
      rows[line.split("|")[1]] = line
  return rows


def test_readme_tables_name_every_config_field():
  rows = field_rows()
  named = {name for cell in rows for name in re.findall(r"`([a-z_.0-9]+)`", cell)}
  missing = []
  for field in all_fields():
    section, _, leaf = field.partition(".")
    parent, _, nested = leaf.rpartition(".")
    if field in named or (section in ("data", "model") and leaf in named):
      continue
    # A nested callback field (train.early_stopping.patience) is named in its parent's row.
    parent_rows = [row for cell, row in rows.items() if f"`{section}.{parent}`" in cell] if parent else []
    if not any(f"`{nested}`" in row for row in parent_rows):
      missing.append(field)
  assert not missing, f"README's field tables do not name {missing}"
