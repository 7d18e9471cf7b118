"""The JSON schemas of the files a user writes: ``params.yaml`` and a run config.

One validation source per kind of file (schema_files/*.schema.json, inside the package so that
a plain ``pip install .`` validates too; workflow/schemas links to them). Defaults live in
the schema too; :func:`check` fills them in, then reports every problem by its key and the
file it is in, as a :class:`UserError` (exit 2, no traceback).
"""

from __future__ import annotations

import copy
import json
import math
import re
from functools import cache
from pathlib import Path

from .errors import UserError
from .fileio import non_finite

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


# A number with an exponent, as YAML 1.2 (and so DVC) reads it. PyYAML's YAML 1.1 reads one only
# with a dot and a signed exponent (1.0e+6): 1e6, 1.0e6 and 1e-3 stay text, for Snakemake too.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def _yaml11_hint(text, schema_type) -> str:
    """Why a number reads as a string, and how to write it; "" when ``text`` is not such a number."""
    import yaml

    if not isinstance(text, str) or not _EXPONENT_FLOAT.fullmatch(text) or not isinstance(yaml.safe_load(text), str):
        return ""
    types = schema_type if isinstance(schema_type, list) else [schema_type]
    if "number" not in types and "integer" not in types:
        return ""
    mantissa, _, exponent = text.lower().partition("e")
    fix = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent if exponent[0] in '+-' else '+' + exponent}"
    if "integer" in types and float(text).is_integer():
        fix = str(int(float(text)))
    return (f"{text!r} is a string, not a number: YAML 1.1 (PyYAML, which Snakemake and this package use) reads "
            f"a number with an exponent only with a dot and a signed exponent; write {fix}")


@cache
def _validator_class():
    """Draft 2020-12, with "number" meaning a finite number: NaN and infinities (YAML's .nan, .inf)
    fail every numeric key's type."""
    import jsonschema

    draft = jsonschema.Draft202012Validator
    finite = draft.TYPE_CHECKER.redefine(
        "number", lambda checker, x: draft.TYPE_CHECKER.is_type(x, "number") and (not isinstance(x, float)
                                                                                 or math.isfinite(x)))
    return jsonschema.validators.extend(draft, type_checker=finite)


def _message(error) -> str:
    if error.validator == "type":
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return f"{error.instance} is not a finite number"
        return _yaml11_hint(error.instance, error.validator_value) or error.message
    return error.message


def check(instance, name: str | dict, source: str):
    """``instance`` with defaults filled in; a UserError listing every problem by key and file.
    ``name`` is a schema's name, or a schema itself. Every number must be finite, at every key
    (the schema's numeric keys and free-form ones such as a run's ``fields`` alike)."""
    schema = load(name) if isinstance(name, str) else name
    instance = with_defaults(instance, schema)
    errors = {}  # key path -> messages
    for e in _validator_class()(schema).iter_errors(instance):
        errors.setdefault(tuple(e.absolute_path), set()).add(_message(e))
    for parts, value in non_finite(instance):
        errors.setdefault(parts, {f"{value} is not a finite number"})
    if errors:
        lines = [f"  {key_path(parts)}: {message}" for parts in sorted(errors, key=lambda p: list(map(str, p)))
                 for message in sorted(errors[parts])]
        raise UserError(f"{source} is invalid:\n" + "\n".join(lines))
    return instance
