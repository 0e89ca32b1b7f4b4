"""Load-time validation of the full flow language: every mistake at its exact line:column."""

from __future__ import annotations

import textwrap

import pytest

from agent.dialogue.flow import Flow, FlowError, flow_errors, parse_flow
from agent.dialogue.model import Ask, Branch, Intent, Node


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text).lstrip("\n"), source="flow.yaml")


def assert_error(text: str, position: str, *fragments: str) -> None:
    with pytest.raises(FlowError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"flow.yaml:{position}: "), message
    for fragment in fragments:
        assert fragment in message, message


# -- unknown targets ---------------------------------------------------------------------------


def test_unknown_branch_target() -> None:
    assert_error(
        """
        start: a
        slots:
          x: 1
        nodes:
          a:
            say: hi
            branches:
              - if: x > 1
                goto: nowhere
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "9:15",
        "goto of branch: 'nowhere' is not a node",
    )


def test_unknown_no_match_target() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How many?
            ask: {slot: n, type: number}
            next: bye
            no_match: nowher
          bye:
            say: Bye.
            end: true
        """,
        "7:15",
        "no_match: 'nowher' is not a node",
    )


def test_unknown_http_target() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: https://crm.example.com/lookup
              on_success: found
              on_error: not_fond
          found:
            say: Found.
            end: true
          not_found:
            say: Not found.
            end: true
        """,
        "8:17",
        "on_error: 'not_fond' is not a node",
        "did you mean 'not_found'",
    )


def test_unknown_llm_transition_and_tool_goto() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How can I help?
            llm:
              prompt: Help the caller.
              transitions: [done, billing]
          done:
            say: Bye.
            end: true
        """,
        "7:27",
        "transition 'billing' is not a node",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How can I help?
            llm:
              prompt: Help the caller.
              tools:
                - name: book
                  goto: boked
          booked:
            say: Booked.
            end: true
        """,
        "9:17",
        "goto of tool 'book': 'boked'",
        "did you mean 'booked'",
    )


# -- unreachable nodes and questions with no way out -------------------------------------------


def test_unreachable_node_points_at_its_name() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hello.
            next: bye
          forgotten:
            say: Nobody comes here.
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "6:3",
        "node 'forgotten' can never be reached",
    )


def test_no_match_node_is_reachable_from_questions() -> None:
    flow = parse("""
        start: a
        nodes:
          a:
            say: Yes or no?
            ask: {slot: ok, type: yes_no}
            next: bye
          no_match:
            say: Sorry. Bye.
            end: true
          bye:
            say: Bye.
            end: true
    """)
    assert "no_match" in flow.nodes


def test_question_with_no_way_out() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Order or billing?
            intents:
              - name: order
                examples: [my order]
                goto: order
          order:
            say: Your order is on its way. Anything else?
            intents:
              - name: more
                examples: [yes]
                goto: a
        """,
        "3:3",
        "question at node 'a' has no way out",
    )


def test_global_intent_counts_as_a_way_out() -> None:
    parse("""
        start: a
        global_intents:
          - name: bye
            examples: [goodbye]
            goto: bye
        nodes:
          a:
            say: Order or billing?
            intents:
              - name: order
                examples: [my order]
                goto: a
          bye:
            say: Bye.
            end: true
    """)


def test_ask_without_next_has_no_way_out() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: What day?
            ask:
              slot: day
              type: date
        """,
        "5:5",
        "question at node 'a' has no way out once answered",
        "add `next: <node>`",
    )


def test_branches_need_a_next() -> None:
    assert_error(
        """
        start: a
        slots: {vip: false}
        nodes:
          a:
            say: Hello.
            branches:
              - if: vip
                goto: bye
          bye:
            say: Bye.
            end: true
        """,
        "6:5",
        "has `branches` but no `next`",
    )


# -- slots used but never set ------------------------------------------------------------------


def test_slot_in_a_line_never_set_points_at_the_placeholder() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: What day?
            ask: {slot: date, type: date}
            next: b
          b:
            say: "Booked for {{dat}} then."
            end: true
        """,
        "8:22",
        "slot 'dat' is used here but never set",
        "did you mean 'date'",
    )


def test_slot_in_a_condition_never_set_points_at_the_name() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How many people?
            ask: {slot: party_size, type: number}
            branches:
              - if: party_size > 8 and vip
                goto: big
            next: big
          big:
            say: Fine.
            end: true
        """,
        "7:32",
        "slot 'vip' is used here but never set",
        "put it in quotes",
    )


def test_slot_in_an_http_url_and_json_never_set() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: "https://crm.example.com/customers/{{customer_id}}"
              on_success: done
              on_error: done
          done:
            say: Done.
            end: true
        """,
        "6:47",
        "slot 'customer_id' is used here but never set",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: https://crm.example.com/customers
              json:
                id: "{{customer}}"
              on_success: done
              on_error: done
          done:
            say: Done.
            end: true
        """,
        "8:14",
        "slot 'customer' is used here but never set",
    )


def test_slots_set_anywhere_count() -> None:
    flow = parse("""
        start: a
        slots:
          campaign:
        nodes:
          a:
            say: "Hello about {{campaign}}."
            set: {greeted: true}
            http:
              url: https://crm.example.com/x
              store: {balance: account.balance}
              on_success: b
              on_error: b
          b:
            say: "Balance {{balance}}, greeted {{greeted}}, topic {{topic}}, day {{day}}."
            llm:
              prompt: "Help with {{campaign}}."
              slots: [topic]
              tools:
                - name: book
                  parameters: {day: date}
                  goto: c
          c:
            say: Bye.
            end: true
    """)
    assert flow.slots == {"campaign": None}


# -- templating errors --------------------------------------------------------------------------


def test_placeholder_problems_in_every_text() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hi.
            handover:
              queue: sales
              reason: "Wants {{caller..name}}"
        """,
        "7:22",
        "unknown placeholder {{caller..name}}",
    )
    assert_error(
        """
        start: a
        fallback: "Sorry {caller.name}?"
        nodes:
          a:
            say: Hi.
            end: true
        """,
        "2:18",
        "stray '{'",
    )


def test_placeholder_in_a_literal_block_points_at_its_line() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How can I help?
            llm:
              prompt: |
                You help callers of Sunrise.
                The caller is {{caller.name}} and wants {{topic}}.
        """,
        "8:49",
        "slot 'topic' is used here but never set",
    )


def test_variants_are_checked_too() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say:
              - one_of:
                  - Hello.
                  - "Hi {{nme}}."
            end: true
        """,
        "7:17",
        "slot 'nme' is used here but never set",
    )


# -- types and shapes ---------------------------------------------------------------------------


def test_bad_slot_type() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Which colour?
            ask:
              slot: colour
              type: colour
            next: a
        """,
        "7:13",
        "unknown slot type 'colour'",
        "choose one of: yes_no, number, digits, date, time, text, choice",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Yes or no?
            ask: {slot: ok, type: yesno}
            next: a
        """,
        "5:27",
        "did you mean 'yes_no'",
    )


def test_choice_needs_choices_and_number_bounds_only_for_numbers() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Which one?
            ask: {slot: product, type: choice}
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "5:32",
        "a `choice` question needs `choices`",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Which day?
            ask:
              slot: day
              type: date
              min: 1
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "8:7",
        "`min` only applies to `type: number`",
    )


def test_condition_syntax_errors_point_inside_the_condition() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How many?
            ask: {slot: n, type: number}
            branches:
              - if: n = 3
                goto: bye
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "7:15",
        "cannot read condition",
        "use `==`",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: How many?
            ask: {slot: n, type: number}
            branches:
              - if: "n > "
                goto: bye
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "7:17",
        "the condition ends too early",
    )


def test_contradictory_keys() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: https://x.example.com
              on_success: bye
              on_error: bye
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "9:5",
        "calls a business system",
        "`next` would never be used",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Transferring.
            handover: {queue: sales}
            end: true
        """,
        "6:5",
        "hands the call over, which already ends the bot's part",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hello.
            no_match: a
            next: bye
          bye:
            say: Bye.
            end: true
        """,
        "5:5",
        "`no_match` only applies to questions",
    )


def test_intent_needs_goto_or_repeat_but_not_both() -> None:
    assert_error(
        """
        start: a
        global_intents:
          - name: again
            examples: [repeat that]
            repeat: true
            goto: a
        nodes:
          a:
            say: Hi.
            end: true
        """,
        "5:5",
        "has both `goto` and `repeat`",
    )


def test_http_needs_both_outcomes_and_a_sane_timeout() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: https://x.example.com
              on_success: a
        """,
        "6:7",
        "needs `on_error`",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: One moment.
            http:
              url: https://x.example.com
              timeout: 0
              on_success: a
              on_error: a
        """,
        "7:16",
        "more than 0 seconds",
    )


def test_llm_tool_names_must_not_shadow_builtins() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hi.
            llm:
              prompt: Help.
              tools:
                - name: goto
                  goto: a
        """,
        "8:17",
        "tool name 'goto' is built in",
    )


def test_unknown_new_keys_get_suggestions() -> None:
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hi.
            ask:
              slot: x
              typ: number
            next: a
        """,
        "7:7",
        "unknown key 'typ'",
        "did you mean 'type'",
    )
    assert_error(
        """
        start: a
        nodes:
          a:
            say: Hi.
            branches:
              - when: x
                goto: a
            next: a
        """,
        "6:9",
        "unknown key 'when'",
    )


# -- all problems at once, and hand-built flows -----------------------------------------------


def test_flow_errors_lists_every_problem_in_reading_order() -> None:
    text = textwrap.dedent("""
        start: a
        nodes:
          a:
            say: "Hi {{nobody}}."
            next: b
          b:
            say: Bye.
            next: c
    """).lstrip("\n")
    flow, errors = flow_errors(text, "flow.yaml")
    assert flow is None
    assert [(e.line, e.column) for e in errors] == [(4, 14), (8, 11)]
    assert "slot 'nobody'" in errors[0].reason and "'c' is not a node" in errors[1].reason


def test_check_flow_on_hand_built_flow_with_new_features() -> None:
    from agent.dialogue.checks import check_flow

    flow = Flow(
        name="code",
        start="a",
        nodes={
            "a": Node(
                id="a",
                say=["How many?"],
                ask=Ask(slot="n", type="number"),
                branches=[Branch(condition="n > 2 and nope", goto="b")],
                next="b",
            ),
            "b": Node(id="b", say=["Bye."], end=True),
        },
    )
    issues = check_flow(flow)
    assert [(i.path, i.offset) for i in issues] == [(("nodes", "a", "branches", 0, "if"), 10)]
    with pytest.raises(ValueError, match="exactly one of `goto` or `repeat"):
        Intent(name="x", examples=["x"])
