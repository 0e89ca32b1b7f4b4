"""Caller scripts: the YAML a natural caller is written in, and what the bench checks a call against."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.dialogue.flow import load_flow
from agent.simulator.caller_outcome import CallOutcome, check_expectations, count_reprompts, relative_dates
from agent.simulator.caller_script import (
    FILLER_STRETCH,
    AfterBot,
    BargeIn,
    Pause,
    Say,
    ScriptError,
    Silence,
    Speech,
    Wait,
    load_scripts,
    parse_markup,
    parse_script,
)
from agent.simulator.natural_caller import LinePicker

REPO = Path(__file__).resolve().parents[2]
MONDAY = dt.date(2026, 12, 7)


def test_inline_pauses_and_fillers_split_a_line() -> None:
    segments = parse_markup("I'd like to book ... [pause 1.0] ... [um] for Tuesday")
    assert segments == [
        Speech("I'd like to book"),
        Pause(1.0),  # the ellipses only surround the explicit pause
        Speech("um", rate=FILLER_STRETCH, filler=True),
        Speech("for Tuesday"),
    ]


def test_a_bare_ellipsis_is_a_short_pause_and_edges_are_trimmed() -> None:
    assert parse_markup("... so … yes [pause 0.4]") == [Speech("so"), Pause(0.6, explicit=False), Speech("yes")]
    assert parse_markup("Tuesday, [pause] no, Wednesday") == [Speech("Tuesday,"), Pause(0.6), Speech("no, Wednesday")]


@pytest.mark.parametrize("text", ["[pause 0.01] x", "x [pause 11] y", "x [cough] y", "x [um 2] y"])
def test_bad_markup_is_refused(text: str) -> None:
    with pytest.raises(ScriptError):
        parse_markup(text)


def test_a_whole_script_parses_with_every_kind_of_step() -> None:
    script = parse_script(
        """
        name: everything
        flow: demo
        style: disfluent
        seed: 9
        direction: business_initiated
        voice: {length_scale: 1.2, variation: 0.05}
        noise: {level_dbfs: -42, color: brown}
        caller: {name: Sam}
        lines:
          - "Hi, [um] it's about [pause 0.8] my order."
          - say: "Tuesday, no, Wednesday."
            think: 0.3
          - say: "Hang on."
            when: {barge_in: 1.5}
          - silence: 6
          - segments: ["I'd like to book", {pause: 1.0}, {filler: uh}, {say: "for Tuesday", rate: 1.3}]
            when: {wait: 0.5}
        expect: {node: goodbye}
        """
    )
    assert (script.style, script.seed, script.direction, script.caller_name) == (
        "disfluent",
        9,
        "business_initiated",
        "Sam",
    )
    assert script.voice.length_scale == 1.2 and script.noise is not None and script.noise.level_dbfs == -42
    first, second, third, silence, fifth = script.lines
    assert isinstance(first, Say) and first.pauses == [0.8] and first.text == "Hi, um it's about my order."
    assert isinstance(second, Say) and second.when == AfterBot(0.3)
    assert isinstance(third, Say) and third.when == BargeIn(1.5)
    assert silence == Silence(6.0)
    assert isinstance(fifth, Say) and fifth.when == Wait(0.5)
    assert fifth.segments == (
        Speech("I'd like to book"),
        Pause(1.0),
        Speech("uh", rate=FILLER_STRETCH, filler=True),
        Speech("for Tuesday", rate=1.3),
    )
    assert script.expect == {"node": "goodbye"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("lines: []", "non-empty"),
        ("lines: ['hi']\nnoise: -10", "outside"),
        ("lines: ['hi']\nnoise: {level_dbfs: -40, color: purple}", "color"),
        ("lines: ['hi']\nstyle: mumbling", "style"),
        ("lines: [{say: hi, when: soon}]", "when"),
        ("lines: [{say: hi, when: {barge_in: 1}, think: 1}]", "think"),
        ("lines: [{say: hi, segments: [hi]}]", "either"),
        ("lines: ['[pause 1]']", "nothing to say"),
        ("lines: ['hi']\nvoice: {length_scale: 5}", "length_scale"),
        ("lines: ['hi']\nspeed: 2", "unknown key"),
    ],
)
def test_mistakes_name_the_field(yaml_text: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message) as caught:
        parse_script(yaml_text, source="x.yaml")
    assert str(caught.value).startswith("x.yaml:")


def test_the_bench_callers_are_valid_and_cover_every_shipped_flow() -> None:
    scripts = load_scripts(REPO / "bench" / "callers")
    by_flow: dict[str, list[str]] = {}
    for script in scripts:
        by_flow.setdefault(Path(script.source).parent.name, []).append(script.style)
        assert script.expect, f"{script.source}: says nothing about what completes the task"
    assert set(by_flow) == {"demo", "appointment_booking", "after_hours", "payment_followup", "support_triage"}
    for flow, styles in by_flow.items():
        assert len(styles) >= 8 and {"clean", "disfluent"} <= set(styles), flow


def test_relative_dates_mean_what_people_mean() -> None:
    assert relative_dates("tomorrow", MONDAY) == {dt.date(2026, 12, 8)}
    assert relative_dates("today+2", MONDAY) == {dt.date(2026, 12, 9)}
    assert relative_dates("weekday:monday", MONDAY) == {dt.date(2026, 12, 14)}  # never today
    assert relative_dates("next:friday", MONDAY) == {dt.date(2026, 12, 11), dt.date(2026, 12, 18)}
    assert relative_dates("15:30", MONDAY) is None


def test_expectations_check_slots_nodes_requests_and_lines() -> None:
    outcome = CallOutcome(
        slots={"date": dt.date(2026, 12, 8), "time": "15:30", "confirmed": True, "order_number": 48291},
        final_node="booked",
        handover_queue=None,
        requests=[
            {"method": "POST", "url": "http://x/api/appointments", "json": {"date": "2026-12-08", "time": "15:30"}}
        ],
        bot_lines=["You are booked for Tuesday."],
    )
    met = {
        "slots": {"date": "tomorrow", "time": "15:30:00", "confirmed": True, "order_number": 48291},
        "node": ["booked", "goodbye"],
        "request": {"method": "post", "url": "/api/appointments", "json": {"date": "tomorrow", "time": "15:30"}},
        "said": "you are booked",
    }
    assert check_expectations(met, outcome, today=MONDAY) == []
    unmet = {
        "slots": {"date": "weekday:friday", "product": "phone"},
        "node": "goodbye",
        "handover": "repairs",
        "request": {"method": "PUT"},
        "permission_request": True,
        "said": "Goodbye",
    }
    problems = check_expectations(unmet, outcome, today=MONDAY)
    assert len(problems) == 7, problems


def test_reprompts_are_counted_from_the_flows_own_lines() -> None:
    flow = load_flow(REPO / "prompts" / "payment_followup.yaml")
    said = ["Sorry, could you say that again?", "Sorry, are you John Smith? Please say yes or no.", "Thank you."]
    assert count_reprompts(said, flow) == 2


def test_answers_and_replies_are_parsed_and_checked() -> None:
    script = parse_script(
        """
        lines:
          - "I'd like to book"
          - {say: "Tomorrow.", answers: 'what day|which day'}
        replies:
          - {when_bot_says: 'is that right', say: "Yes [pause 0.3] please.", max_uses: 1}
        """
    )
    second = script.lines[1]
    assert isinstance(second, Say) and second.answers == "what day|which day"
    (reply,) = script.replies
    assert reply.when_bot_says == "is that right" and reply.max_uses == 1 and reply.say.pauses == [0.3]
    with pytest.raises(ScriptError, match="regular expression"):
        parse_script("lines: [{say: hi, answers: '(unclosed'}]")
    with pytest.raises(ScriptError, match="when_bot_says"):
        parse_script("lines: [hi]\nreplies: [{say: yes}]")


def _picker(yaml_text: str, heard: list[str]) -> LinePicker:
    return LinePicker(parse_script(yaml_text), lambda: [(1.0, line) for line in heard])


BOOKING = """
lines:
  - "I'd like to book a check up."
  - {say: "Tomorrow.", answers: 'what day'}
  - {say: "Ten in the morning.", answers: 'what time'}
  - {say: "Yes.", answers: 'ten o.clock in the morning\\. shall i book'}
replies:
  - {when_bot_says: 'shall i book', say: "No, ten in the morning."}
"""


def _said(choice: tuple[str, int, Say] | None) -> tuple[str, str] | None:
    return None if choice is None else (choice[0], choice[2].text)


def test_a_caller_answers_the_question_it_is_asked() -> None:
    heard = ["Hello.", "Book a new appointment, or change one?"]  # what the bot said since the last line
    picker = _picker(BOOKING, heard)

    def bot_says(line: str) -> None:
        heard[:] = [line]

    assert _said(picker.pick(0, 0.0, reactive=True)) == ("line", "I'd like to book a check up.")
    bot_says("What day would you like to come in?")
    assert _said(picker.pick(1, 0.0, reactive=True)) == ("line", "Tomorrow.")
    # The bot asks the day again: the caller says it again, once.
    bot_says("Sorry, which day was that? What day?")
    assert _said(picker.pick(2, 0.0, reactive=True)) == ("repeat", "Tomorrow.")
    bot_says("Sorry, could you say that again?")
    assert _said(picker.pick(2, 0.0, reactive=True)) == ("line", "Ten in the morning.")  # already repeated
    # A wrong read-back is corrected; a right one confirmed.
    bot_says("So that is Tuesday at eleven o'clock in the morning. Shall I book it?")
    assert _said(picker.pick(3, 0.0, reactive=True)) == ("reply", "No, ten in the morning.")
    bot_says("So that is Tuesday at ten o'clock in the morning. Shall I book it?")
    assert _said(picker.pick(3, 0.0, reactive=True)) == ("line", "Yes.")
    bot_says("You are booked. Goodbye!")
    assert picker.pick(4, 0.0, reactive=True) is None  # nothing left and nothing asked


def test_lines_the_bot_did_not_need_are_skipped() -> None:
    picker = _picker(BOOKING, ["So that is Tuesday at ten o'clock in the morning. Shall I book it?"])
    choice = picker.pick(1, 0.0, reactive=True)
    assert choice is not None and choice[:2] == ("line", 3)


def test_without_hearing_the_lines_go_out_in_order() -> None:
    picker = LinePicker(parse_script(BOOKING), None)
    assert [_said(picker.pick(i, 0.0, reactive=True)) for i in range(5)] == [
        ("line", "I'd like to book a check up."),
        ("line", "Tomorrow."),
        ("line", "Ten in the morning."),
        ("line", "Yes."),
        None,
    ]
