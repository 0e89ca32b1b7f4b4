"""One definition of the flow language: the models are what the loader accepts, what the
generated JSON Schema describes and what the engine runs; mistakes come back all at once,
in plain words, with suggestions drawn from the keys valid where the mistake is."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BeforeValidator, Field

from agent.dialogue.engine import FlowEngine
from agent.dialogue.flow import flow_errors, parse_flow, read_flow_text
from agent.dialogue.flowtest import is_test_file, load_suite
from agent.dialogue.model import Flow, FlowError, Node, Text, _nodes
from agent.dialogue.schema import flow_schema
from agent.dialogue.yamlsource import load_marked
from tests.dialogue.test_shipped_flows import as_editor_sees, schema_errors

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
SHIPPED = sorted(p for p in PROMPTS.glob("*.yaml") if not is_test_file(p))

BASE = """\
name: base
start: welcome
nodes:
  welcome:
    say: Hello, do you want to book?
    intents:
      - name: yes
        examples: [yes please]
        goto: bye
  bye:
    say: Goodbye.
    end: true
"""


def messages(text: str) -> list[str]:
    _flow, errors = flow_errors(textwrap.dedent(text).lstrip("\n"), "f.yaml")
    return [str(error) for error in errors]


def editor_data(text: str) -> Any:
    return as_editor_sees(load_marked(text, "f.yaml"))


# -- the generated schema and the loader agree --------------------------------------------------------


def _test_flows() -> list[tuple[str, str]]:
    """Every valid flow written out in the dialogue tests, as module constants."""
    found = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"tests.dialogue.{path.stem}")
        for name, value in vars(module).items():
            if isinstance(value, str) and name.isupper() and "nodes:" in value:
                text = textwrap.dedent(value).lstrip("\n")
                if flow_errors(text, name)[1] == []:
                    found.append((f"{path.stem}.{name}", text))
    return found


@pytest.mark.parametrize(
    ("name", "text"),
    [(p.stem, read_flow_text(p)) for p in SHIPPED] + _test_flows(),
    ids=lambda v: v if "\n" not in v else "",
)
def test_every_valid_flow_fits_the_generated_schema(name: str, text: str) -> None:
    assert schema_errors(editor_data(text), flow_schema()) == [], name


def test_the_test_flows_were_found() -> None:
    assert len(_test_flows()) >= 5


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    end: true\n", "    end: true\n    sey: Bye\n"),  # unknown key in a node
        ("    end: true\n", "    end: maybe\n"),  # not true/false
        ("start: welcome\n", ""),  # no start
        (
            "    say: Hello, do you want to book?\n",
            "    say: Hello, do you want to book?\n    max_retries: -1\n",
        ),  # below the minimum
        ("    say: Goodbye.\n", "    say: 5\n"),  # a number where a line is said
        (
            "    say: Hello, do you want to book?\n",
            "    say: Hello, do you want to book?\n    ask: {slot: n, type: colour}\n",
        ),  # unknown slot type
        (
            "    say: Hello, do you want to book?\n",
            "    say: Hello, do you want to book?\n    http: {url: x, on_success: bye}\n",
        ),  # missing on_error
        ("name: base\n", "name: base\ncolour: blue\n"),  # unknown top-level key
        (  # intents not a list
            "      - name: yes\n        examples: [yes please]\n        goto: bye\n",
            "      name: yes\n      examples: [yes please]\n      goto: bye\n",
        ),
        ("        goto: bye\n", "        goto: bye\n        key: [1]\n"),  # a key must be one key
    ],
)
def test_a_mistake_is_rejected_by_both_the_loader_and_the_schema(old: str, new: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new)
    assert flow_errors(text, "f.yaml")[1], "the loader accepted it"
    assert schema_errors(editor_data(text), flow_schema()), "the schema accepted it"


def test_the_schema_is_generated_with_descriptions() -> None:
    schema = flow_schema()
    node = schema["definitions"]["node"]["anyOf"][0]
    assert "set" in node["properties"] and not {"assign", "id"} & set(node["properties"])
    assert all("description" in spec for spec in node["properties"].values())
    assert all("description" in spec for spec in schema["properties"].values())
    assert "if" in schema["definitions"]["Branch"]["properties"]  # aliases are the YAML keys
    assert "condition" not in schema["definitions"]["Branch"]["properties"]


# -- one model per key ----------------------------------------------------------------------------------


class NotedNode(Node):
    note: Text | None = Field(default=None, description="A remark for other authors; the bot never says it.")


class NotedFlow(Flow):
    nodes: Annotated[dict[str, NotedNode], BeforeValidator(_nodes)] = Field(min_length=1)


def test_a_key_added_to_the_model_is_accepted_by_loader_schema_and_engine() -> None:
    """Adding a key to the language is adding a field to a model: nothing else changes."""
    text = BASE.replace("    say: Goodbye.\n", "    say: Goodbye.\n    note: keep this short\n")
    assert "unknown key 'note'" in str(flow_errors(text, "f.yaml")[1][0])  # not (yet) in the language
    flow, errors = flow_errors(text, "f.yaml", shape=NotedFlow)
    assert errors == [] and flow is not None
    assert flow.nodes["bye"].note == "keep this short"  # type: ignore[attr-defined]
    schema = flow_schema(NotedFlow)
    assert "note" in schema["definitions"]["NotedNode"]["anyOf"][0]["properties"]
    assert schema_errors(editor_data(text), schema) == []
    engine = FlowEngine(flow)
    assert engine.start().lines == ["Hello, do you want to book?"]
    mistyped = flow_errors(text.replace("note:", "noet:"), "f.yaml", shape=NotedFlow)[1]
    assert "did you mean 'note'?" in str(mistyped[0])


# -- every mistake at once -------------------------------------------------------------------------------


def test_every_structural_mistake_is_reported_with_its_position() -> None:
    found = messages(
        """
        start: a
        nodes:
          a:
            sey: Hello
            next: b
          b:
            say: 5
            end: maybe
            intents:
              - name: x
                gotoo: a
        """
    )
    assert found == [
        "f.yaml:4:5: unknown key 'sey' in node 'a'; did you mean 'say'?",
        "f.yaml:7:10: `say` of node 'b' must be text, not a number (5) (put it in quotes if you really mean those "
        "words)",
        "f.yaml:8:10: `end` of node 'b' must be true or false, not text ('maybe')",
        "f.yaml:11:9: unknown key 'gotoo' in intent 'x'; did you mean 'goto'?",
    ]


def test_mistakes_in_different_blocks_are_all_reported() -> None:
    found = messages(
        """
        start: a
        max_retries: lots
        business_hours: {open: "9am"}
        nodes:
          a:
            say: Hi
            ask: {slot: n, type: numbr}
            next: a
        """
    )
    assert [f.split(": ", 1)[0] for f in found] == ["f.yaml:2:14", "f.yaml:3:24", "f.yaml:7:26"]
    assert "did you mean 'number'?" in found[2]


def test_parse_flow_still_raises_the_first() -> None:
    with pytest.raises(FlowError, match=r"^f\.yaml:4:5: unknown key 'sey'"):
        parse_flow("start: a\nnodes:\n  a:\n    sey: Hi\n    end: maybe\n", "f.yaml")


# -- YAML syntax in plain words ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: bad\nstart: welcome\nnodes:\n  welcome:\n    say: Hello: welcome\n",
            "f.yaml:5:5: line 5: the text after `say:` contains ': ' — put the whole line in quotes: say: \"Hello: "
            'welcome"',
        ),
        (
            'start: a\nnodes:\n  a:\n    say: He said "stop": then left\n    end: true\n',
            "f.yaml:4:5: line 4: the text after `say:` contains ': ' — put the whole line in quotes: say: 'He said "
            '"stop": then left\'',
        ),
        (
            "start: a\nnodes:\n  a:\n    say: hi\n     end: true\n",
            "f.yaml:5:6: line 5 is indented more than line 4 above it (5 spaces instead of 4); line it up with `say:` "
            "if it belongs to the same block",
        ),
        (
            "start: a\nnodes:\n  a:\n    say: hi\n    next: b\n  b:\n      end: true\n    say: bye\n",
            "f.yaml:8:5: line 8 is indented by 4 spaces, which lines it up with no block above: `b:` on line 6 uses 2 "
            "spaces and the lines inside it 6; keys of one block need the same number of spaces",
        ),
        (
            "start: a\nnodes:\n\ta:\n",
            "f.yaml:3:1: line 3 is indented with a tab: indent with spaces, not tabs (2 per level)",
        ),
        (
            'start: a\nnodes:\n  a:\n    say: "Hello\n    end: true\n',
            'f.yaml:4:10: line 4: the text starting with " at column 10 is never closed; add the closing " at the end '
            "of that text",
        ),
    ],
    ids=["colon", "colon-with-quotes", "indented-more", "indented-between", "tab", "unclosed-quote"],
)
def test_yaml_syntax_errors_in_plain_words(text: str, expected: str) -> None:
    assert messages(text) == [expected]


def test_flow_tests_read_yaml_the_same_way(tmp_path: Path) -> None:
    tests = tmp_path / "f.test.yaml"
    tests.write_text("conversations:\n  - name: a\n    steps:\n      - caller: yes: please\n", encoding="utf-8")
    with pytest.raises(FlowError, match="line 4: the text after `caller:` contains ': '"):
        load_suite(tests)


# -- suggestions from the keys valid there ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    say: Goodbye.\n", "    sey: Goodbye.\n", "unknown key 'sey' in node 'bye'; did you mean 'say'?"),
        ("    say: Goodbye.\n", "    say: Goodbye.\n    sey: {paid: true}\n", "did you mean 'set'?"),
        ("        examples:", "        exampels:", "unknown key 'exampels' in intent 'yes'; did you mean 'examples'?"),
        ("start: welcome", "strat: welcome", "unknown key 'strat' in the flow; did you mean 'start'?"),
        ("    end: true\n", "    end: true\n    handover: {qeue: sales}\n", "did you mean 'queue'?"),
        ("    end: true\n", "    end: true\n    colour: red\n", "(allowed: say, ask, intents, branches, next, set"),
    ],
)
def test_suggestions_come_from_the_keys_valid_there(old: str, new: str, expected: str) -> None:
    assert old in BASE
    found = messages(BASE.replace(old, new))
    assert any(expected in message for message in found), found
