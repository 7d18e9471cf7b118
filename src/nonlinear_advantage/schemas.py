"""The JSON schemas of the files a user writes: ``params.yaml`` and a run config.

One validation source per kind of file (schema_files/*.schema.json, inside the package so that
a plain ``pip install .`` validates too; workflow/schemas links to them). Defaults live in
the schema too; :func:`check` fills them in, then reports every problem by its key and the
file it is in, as a :class:`UserError` (exit 2, no traceback).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from .errors import UserError

SCHEMA_DIR = Path(__file__).resolve().parent / "schema_files"
PARAMS = "params"
RUN = "run"


def path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


@cache
def load(name: str) -> dict:
    """A schema as its file holds it (the plan fills in the registries' enums for params)."""
    return json.loads(path(name).read_text())


def key_path(parts) -> str:
    """``sweep.shifts[2]``: the place in the file that an error is about."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def with_defaults(instance, schema: dict):
    """A copy of ``instance`` with the schema's ``default`` values filled in, at every level.

    Whole numbers where the schema says "number" become floats, so that ``lr: 1`` and
    ``lr: 1.0`` make the same config (and the same resume digest).
    """
    if schema.get("type") == "number" and isinstance(instance, int) and not isinstance(instance, bool):
        return float(instance)
    if not isinstance(instance, dict):
        return instance
    out = copy.deepcopy(instance)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(out[key], sub)
    return out


def check(instance, name: str | dict, source: str):
    """``instance`` with defaults filled in; a UserError listing every problem by key and file.
    ``name`` is a schema's name, or a schema itself."""
    import jsonschema

    schema = load(name) if isinstance(name, str) else name
    instance = with_defaults(instance, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = [f"  {key_path(e.absolute_path)}: {e.message}" for e in errors]
        raise UserError(f"{source} is invalid:\n" + "\n".join(lines))
    return instance
