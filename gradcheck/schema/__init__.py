"""The published JSON Schemas of ``gradcheck check --format json`` (``report.schema.json``) and
``gradcheck diagnose --format json`` (``findings.schema.json``), and a small validator for them.

The validator implements only the keywords the schema uses (type, enum, const, required,
properties, additionalProperties, items, minimum, exclusiveMinimum, local $ref), so checking a
report needs no third-party package. It is not a general JSON Schema implementation.
"""

from __future__ import annotations

import json
from importlib import resources

SCHEMA_FILE = "report.schema.json"
FINDINGS_SCHEMA_FILE = "findings.schema.json"
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # JSON has one number type; bool is an int in Python but never a JSON number.
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}
# Keywords that only document; everything else must be implemented below.
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_SUPPORTED = _ANNOTATIONS | {"type", "enum", "const", "required", "properties",
                             "additionalProperties", "items", "minimum", "exclusiveMinimum", "$ref"}


# Documents a command prints besides its single-file one, by the top-level key that marks them,
# and their definitions in the schema (the root describes the single-file document).
_DOCUMENTS = (("files", "files_document"), ("error", "error_document"))


def load_schema(name: str = SCHEMA_FILE) -> dict:
    """A schema shipped in the package: the check report's by default, or ``FINDINGS_SCHEMA_FILE``."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def validate(document, schema: dict | None = None) -> list[str]:
    """Every way ``document`` breaks ``schema`` (default: the report schema), as
    ``"$.layers[0].status: ..."`` messages; an empty list means it is valid. A document with a
    ``files`` key (several files) or an ``error`` key (a run stopped by a user error) is checked
    against the schema's ``files_document`` or ``error_document`` definition."""
    schema = load_schema() if schema is None else schema
    node = schema
    if isinstance(document, dict):
        defs = schema.get("$defs", {})
        node = next((defs[name] for key, name in _DOCUMENTS if key in document and name in defs),
                    schema)
    errors: list[str] = []
    _check(document, node, schema, "$", errors)
    return errors


def _resolve(ref: str, root: dict) -> dict:
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, found {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} at {path} are not supported")
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, errors)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, found {json.dumps(value)[:60]}")
            return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {json.dumps(schema['const'])}, found {json.dumps(value)[:60]}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: expected one of {schema['enum']}, found {json.dumps(value)[:60]}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} must be greater than {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check(item, properties[key], root, f"{path}.{key}", errors)
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, root, f"{path}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], root, f"{path}[{i}]", errors)
