"""Issue 15, analytics: the report's figures from a store of known calls (worked out by hand in
tests/analytics_fixture.py), the range options, and `wacall report` as a table and as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.analytics import Period, compute_report, percentile, report_period
from agent.cli import main
from agent.store.sqlite import SqliteStore
from tests.analytics_fixture import FIRST, LAST, seed_analytics
from tests.conftest import BACKENDS, StoreOpener
from tests.pg_server import PgServer

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analytics")
    store = SqliteStore.in_data_dir(path)
    seed_analytics(store)
    store.close()
    return path


@pytest.fixture(scope="module")
def postgres_analytics_url(postgres_server: PgServer) -> Iterator[str]:
    from agent.store.postgres import PostgresStore

    url = postgres_server.checkout()
    with PostgresStore(url) as store:
        seed_analytics(store)
    yield url
    postgres_server.checkin(url)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[SqliteStore]:
    """The seeded calls on SQLite and on PostgreSQL: the facts query is the one piece of SQL that differs."""
    if request.param == "sqlite":
        store = SqliteStore.in_data_dir(data_dir)
    else:
        from agent.store.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("postgres_analytics_url"))
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WACALL_CONFIG", "WACALL_DATA_DIR", "WACALL_RATE_CARD"):
        monkeypatch.delenv(name, raising=False)


# -- the figures -------------------------------------------------------------------------------------------


def test_the_headline_figures_are_the_hand_computed_ones(store: SqliteStore) -> None:
    total = compute_report(store, Period(FIRST, LAST)).as_dict()["total"]
    assert total["calls"] == 7
    assert (total["inbound"], total["inbound_answered"]) == (4, 3)
    assert (total["outbound"], total["outbound_answered"]) == (3, 2)
    assert total["pickup_rate_inbound"] == 0.75
    assert total["pickup_rate_outbound"] == pytest.approx(2 / 3)
    assert (total["answered"], total["contained"], total["handed_over"], total["abandoned"]) == (5, 2, 2, 1)
    assert total["containment_rate"] == 0.4
    assert total["handover_rate"] == 0.4
    assert total["queue_abandon_rate"] == 0.5
    assert total["avg_handle_s"] == 120.0
    assert total["avg_queue_wait_s"] == 37.5
    assert total["cost"] == "0.0700"
    assert (total["turns"], total["v2v_p50_ms"], total["v2v_p95_ms"]) == (7, 600.0, 900.0)


def test_every_day_of_the_range_is_reported_even_without_calls(store: SqliteStore) -> None:
    report = compute_report(store, Period(FIRST, LAST))
    assert list(report.by_day) == [D1, D2, D3]
    day1, day2, day3 = (report.by_day[d].as_dict() for d in (D1, D2, D3))
    assert (day1["calls"], day2["calls"], day3["calls"]) == (4, 3, 0)
    assert (day1["cost"], day2["cost"], day3["cost"]) == ("0.0400", "0.0300", "0.0000")
    assert (day1["v2v_p50_ms"], day1["v2v_p95_ms"]) == (500.0, 900.0)  # D at 23:59:59 still counts for day 1
    assert (day2["v2v_p50_ms"], day2["v2v_p95_ms"]) == (800.0, 800.0)
    assert (day3["v2v_p50_ms"], day3["pickup_rate_inbound"], day3["avg_handle_s"]) == (None, None, None)
    assert (day1["avg_handle_s"], day2["avg_handle_s"]) == (160.0, 60.0)


def test_cost_by_country_and_by_country_and_day(store: SqliteStore) -> None:
    report = compute_report(store, Period(FIRST, LAST))
    assert report.cost_by_country == {"GB": Decimal("0.0400"), "ES": Decimal("0.0300"), "BR": Decimal(0)}
    assert list(report.cost_by_country) == ["GB", "ES", "BR"]  # most expensive first
    assert report.cost_by_country_day[("GB", D1)] == Decimal("0.0400")
    assert report.cost_by_country_day[("ES", D2)] == Decimal("0.0300")
    assert report.cost_by_country_day[("ES", D1)] == Decimal(0)


def test_simulated_calls_count_only_when_asked_for(store: SqliteStore) -> None:
    with_sim = compute_report(store, Period(FIRST, LAST), simulated=True).total
    assert with_sim.calls == 8
    assert with_sim.contained == 3
    assert with_sim.cost == Decimal("9.0700")


def test_a_one_day_range_has_only_that_days_calls(store: SqliteStore) -> None:
    total = compute_report(store, Period(D2, D2)).total
    assert (total.calls, total.inbound, total.outbound, total.abandoned) == (3, 1, 2, 1)


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([300, 400, 500, 600, 700, 900], 50) == 500
    assert percentile([900, 300, 400, 500, 600, 700, 800], 50) == 600
    assert percentile(list(range(1, 101)), 95) == 95


def test_the_range_options() -> None:
    today = date(2026, 3, 10)
    assert report_period(today=today) == Period(date(2026, 3, 4), today)  # the last 7 days
    assert report_period(days=1, today=today) == Period(today, today)
    assert report_period(since=D1, today=today) == Period(D1, today)
    assert report_period(since=D1, days=3, today=today) == Period(D1, D3)
    assert report_period(until=D3, days=2, today=today) == Period(D2, D3)
    for bad in ({"since": D3, "until": D1}, {"days": 0}, {"days": 400}, {"since": D1, "until": D2, "days": 2}):
        with pytest.raises(ValueError):
            report_period(today=today, **bad)  # type: ignore[arg-type]


# -- wacall report -----------------------------------------------------------------------------------------


def test_report_prints_a_table(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--data-dir", str(data_dir), "--since", "2026-03-01", "--until", "2026-03-03"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "wacall report 2026-03-01 to 2026-03-03 (UTC): 7 calls"
    for expected in (
        "pickup rate, inbound       75.0 %   3 of 4 offered",
        "pickup rate, outbound      66.7 %   2 of 3 placed",
        "containment                40.0 %   2 of 5 answered",
        "handover rate              40.0 %   2 of 5 answered",
        "queue abandon rate         50.0 %   1 of 2 handed over",
        "average handle time         120 s   pickup to hang-up, answered calls",
        "voice-to-voice p50         600 ms   7 bot turns",
        "cost                   0.0700 USD   list rate, business-initiated calls",
    ):
        assert expected in lines, (expected, out)
    day_rows = [line.split() for line in lines if line.startswith("2026-03-0")]
    assert day_rows == [
        ["2026-03-01", "4", "3", "2", "1", "1", "2", "1", "0", "160", "s", "0.0400", "500", "ms", "900", "ms"],
        ["2026-03-02", "3", "1", "1", "2", "1", "0", "1", "1", "60", "s", "0.0300", "800", "ms", "800", "ms"],
    ]
    assert [line.split() for line in lines[-3:]] == [["GB", "0.0400"], ["ES", "0.0300"], ["BR", "0.0000"]]


def test_report_json_is_the_reports_figures(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "--data-dir", str(data_dir), "--since", "2026-03-01", "--days", "3", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["since"], data["until"], data["currency"]) == ("2026-03-01", "2026-03-03", "USD")
    assert data["total"]["containment_rate"] == 0.4
    assert [d["day"] for d in data["days"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert data["cost_by_country"][0] == {"country": "GB", "cost": "0.0400"}
    assert {"country": "ES", "day": "2026-03-02", "cost": "0.0300"} in data["cost_by_country_day"]


def test_report_with_no_calls_and_a_bad_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--data-dir", str(tmp_path), "--days", "2"]) == 0
    assert "no calls in this range" in capsys.readouterr().out
    assert main(["report", "--data-dir", str(tmp_path), "--since", "2026-03-05", "--until", "2026-03-01"]) == 2
    assert "since must not be after until" in capsys.readouterr().err


def test_turns_without_a_measured_latency_are_left_out(open_store: StoreOpener) -> None:
    """Older or odd turn events (no number, a payload that is not an object, none at all) never break a report."""
    from datetime import UTC, datetime

    from agent.store.base import CallRecord

    store = open_store()
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    store.save_call(CallRecord(id="X", direction="USER_INITIATED", from_number="34600111222", created_at=at))
    for n, payload in enumerate(
        [
            {"first_audio_sent_ms": "fast"},
            {"first_audio_sent_ms": None},
            None,
            {"other": 1},
            {"first_audio_sent_ms": 450},
        ]
    ):
        store.record_event("X", "turn", at, payload, dedupe_key=f"X:turn:{n}")  # type: ignore[arg-type]
    store.record_event("X", "connect", at, {"first_audio_sent_ms": 9999})  # not a turn
    try:
        [facts] = store.call_facts(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    finally:
        store.close()
    assert facts.v2v_ms == (450.0,)
    assert facts.user_number == "34600111222" and facts.answered_at is None


def test_report_counts_simulated_calls_when_asked(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "--data-dir", str(data_dir), "--since", "2026-03-01", "--days", "3", "--simulated"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(": 8 calls, simulated ones included")


def test_a_call_the_flow_gave_up_on_is_not_contained(store: SqliteStore) -> None:
    """The flow ran out of retries and its `no_match` node ended the call politely (bot_ended): the caller's
    task was not done, whatever that node promised."""
    ended = datetime(2026, 3, 1, 9, 5, tzinfo=UTC)
    store.record_event("A", "flow_result", ended, {"node": "agent", "gave_up": True})
    total = compute_report(store, Period(FIRST, LAST)).total
    assert (total.answered, total.contained) == (5, 1)


def test_the_engine_says_when_the_flow_gave_up() -> None:
    from agent.dialogue.engine import FlowEngine
    from agent.dialogue.flow import load_flow

    engine = FlowEngine(load_flow("prompts/demo.yaml"))
    engine.start()
    for _ in range(3):  # demo: max_retries 2, then no_match
        engine.handle("purple elephants dancing")
    assert engine.gave_up and engine.node == "no_match"
