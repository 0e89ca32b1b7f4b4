"""Every flow in prompts/ passes validation, its JSON Schema, its own test conversations, and
speaks only plain, TTS-friendly lines. New flows are picked up automatically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.dialogue.flow import FLOW_KEYS, NODE_KEYS, flow_errors, load_flow, read_flow_text
from agent.dialogue.flowtest import flow_tests_path, format_report, is_test_file, run_test_file
from agent.dialogue.model import Variants
from agent.dialogue.schema import flow_schema, flow_test_schema
from agent.dialogue.templates import PLACEHOLDER_RE

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
FLOWS = sorted(p for p in PROMPTS.glob("*.yaml") if not is_test_file(p))
SHIPPED = {"demo", "support_triage", "appointment_booking", "payment_followup", "after_hours"}


def test_the_use_case_flows_ship() -> None:
    assert {p.stem for p in FLOWS} >= SHIPPED


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_passes_check(path: Path) -> None:
    flow, errors = flow_errors(read_flow_text(path), str(path))
    assert errors == [] and flow is not None, [str(e) for e in errors]


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_passes_its_test_conversations(path: Path) -> None:
    tests = flow_tests_path(path)
    assert tests.is_file(), f"{path.name} needs {tests.name}"
    report = run_test_file(tests)
    assert report.ok, format_report(report)
    assert len(report.results) >= 4


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_lines_are_plainly_speakable(path: Path) -> None:
    flow = load_flow(path)
    lines: list[str] = list(flow.fallback)
    for node in flow.nodes.values():
        lines += node.reprompt
        for item in node.say:
            lines += item.one_of if isinstance(item, Variants) else [item]
        if node.ask is not None and isinstance(node.ask.confirm, str):
            lines.append(node.ask.confirm)
        lines += [intent.confirm for intent in node.intents if intent.confirm]
    lines += [intent.confirm for intent in flow.global_intents if intent.confirm]
    for entry in flow.faq:
        for item in entry.answer:
            lines += item.one_of if isinstance(item, Variants) else [item]
    for line in lines:
        bad = set(PLACEHOLDER_RE.sub("", line)) & set("&%$#@*/\\<>[]_=+~^|")
        assert not bad, f"TTS-unfriendly characters {bad} in {line!r}"
        assert len(line) < 200, line
        assert not any(abbr in f" {line} " for abbr in (" e.g. ", " etc ", " approx ", " Mr ", " St ")), line


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_header_documents_the_language(path: Path) -> None:
    header = path.read_text(encoding="utf-8").split("\nname:")[0]
    assert header.startswith("#") and "README" in header


# -- JSON Schema: with jsonschema if installed, else a small structural validator ---------------


def as_editor_sees(value: Any) -> Any:
    """YAML as a JSON tool sees it: dates as text, every key a string."""
    if isinstance(value, dict):
        return {str(k): as_editor_sees(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_editor_sees(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


_TYPES = {
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


def _is(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema draft-07 our schemas use, so CI needs no extra dependency."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    errors: list[str] = []
    if "anyOf" in schema:
        results = [validate(value, option, root, path) for option in schema["anyOf"]]
        if all(results):
            # Explain with the form of the right type, as an editor would.
            typed = [r for r in results if not r[0].startswith(f"{path}: expected ")]
            return typed[0] if typed else [f"{path}: matches none of the allowed forms"]
        return errors
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, name) for name in names):
            return [f"{path}: expected {names}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: too short")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below minimum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: not above {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key}")
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{path}: too few properties")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += validate(item, properties[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unknown key {key!r}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, root, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], root, f"{path}[{i}]")
    return errors


def schema_errors(data: Any, schema: dict[str, Any]) -> list[str]:
    errors = validate(data, schema, schema)
    try:
        import jsonschema
    except ImportError:
        return errors
    library = sorted(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(data))
    assert bool(library) == bool(errors), (library, errors)  # the two validators agree
    return errors


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_matches_the_json_schema(path: Path) -> None:
    data = as_editor_sees(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert schema_errors(data, flow_schema()) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_test_file_matches_its_json_schema(path: Path) -> None:
    data = as_editor_sees(yaml.safe_load(flow_tests_path(path).read_text(encoding="utf-8")))
    assert schema_errors(data, flow_test_schema()) == []


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["nodes"]["welcome"].update(sya="hi"), "unknown key 'sya'"),
        (lambda d: d["nodes"]["ask_date"]["ask"].update(type="colour"), "'colour' is not one of"),
        (lambda d: d.update(max_retries=-1), "below minimum"),
        (lambda d: d["nodes"]["book"]["http"].pop("on_error"), "missing on_error"),
        (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    ],
)
def test_the_schema_flags_mistakes(mutate: Any, fragment: str) -> None:
    data = as_editor_sees(yaml.safe_load((PROMPTS / "appointment_booking.yaml").read_text(encoding="utf-8")))
    mutate(data)
    errors = schema_errors(data, flow_schema())
    assert any(fragment in e for e in errors), errors


def test_schema_keys_follow_the_loader() -> None:
    schema = flow_schema()
    assert list(schema["properties"]) == list(FLOW_KEYS)
    node = schema["definitions"]["node"]["anyOf"][0]
    assert list(node["properties"]) == list(NODE_KEYS)
    assert all("description" in spec for spec in node["properties"].values())
