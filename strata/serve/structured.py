"""Structured output: `grammar`, `json_schema` or `response_format` -> one GBNF grammar, or a 400 that names the
schema keyword the grammar could not enforce."""

from __future__ import annotations

import json
from typing import Any

from strata.serve.errors import ApiError


def grammar_for(body: dict[str, Any]) -> str | None:
    """GBNF from `grammar`, `json_schema` or `response_format` (one of them); schemas go through llama-cpp-python's
    own JSON-schema-to-GBNF converter."""
    from llama_cpp import llama_grammar

    given = [k for k in ("grammar", "json_schema", "response_format") if body.get(k) is not None]
    rf = body.get("response_format") or {}
    if rf and rf.get("type") == "text":
        given.remove("response_format")
    if len(given) > 1:
        raise ApiError(400, f"give one of {given}, not several: each one constrains the whole reply.")
    if not given:
        return None
    if given == ["grammar"]:
        return body["grammar"]
    if given == ["json_schema"]:
        schema, where = body["json_schema"], "json_schema"
    else:
        kind = rf.get("type")
        if kind == "json_object":
            if "schema" not in rf:
                return llama_grammar.JSON_GBNF
            schema, where = rf["schema"], "response_format.schema"
        elif kind == "json_schema":
            inner = rf.get("json_schema")
            if not isinstance(inner, dict) or not isinstance(inner.get("schema"), dict):
                raise ApiError(400, "response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": "
                                    "{...}}}")
            schema, where = inner["schema"], "response_format.json_schema.schema"
        else:
            raise ApiError(400, f"response_format.type must be \"text\", \"json_object\" or \"json_schema\", got "
                                f"{kind!r}")
    if not isinstance(schema, dict):
        raise ApiError(400, f"{where} must be a JSON schema object")
    _check_schema(schema, where)
    try:
        return llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain errors for schemas it cannot express
        raise ApiError(400, f"{where} is not a JSON schema strata can enforce: {exc!s:.200}") from None


# What llama-cpp-python's JSON-schema-to-GBNF converter enforces, and keys that only annotate. Any other keyword
# (minimum, multipleOf, uniqueItems, not, if/then, ...) would be ignored silently, so it is a 400 instead.
SCHEMA_ENFORCED = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
                   "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "pattern", "minLength", "maxLength",
                   "format", "$defs", "definitions"}
SCHEMA_ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
                      "readOnly", "writeOnly"}


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        if isinstance(schema, bool):
            return
        raise ApiError(400, f"{where} must be a JSON schema object, got {schema!r:.60}")
    unknown = sorted(set(schema) - SCHEMA_ENFORCED - SCHEMA_ANNOTATIONS)
    if unknown:
        raise ApiError(400, f"{where} uses {unknown}, which the grammar cannot enforce; drop it (validate it after) "
                            f"or express it with: {', '.join(sorted(SCHEMA_ENFORCED))}.")
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            _check_schema(sub, f"{where}.{key}.{name}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            _check_schema(sub, f"{where}.{key}[{i}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _check_schema(schema[key], f"{where}.{key}")
