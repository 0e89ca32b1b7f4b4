"""Issue 19, `wacall settings show|push` against the Meta simulator (Graph over httpx.ASGITransport, no sockets).

The simulator validates settings with its own reading of spec §5 (agent/simulator/call_settings.py), so the
refusals here are checked twice: wacall's before Meta is asked, and the simulator's when wacall's are bypassed.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.cli import build_parser
from agent.config import Settings
from agent.settings_cli import desired_settings, push, run_settings
from agent.simulator.call_settings import OutsideCallHours
from agent.simulator.meta import MetaSimulator
from agent.whatsapp.call_settings import CallHours, CallingSettings, Holiday, WeeklyHours
from agent.whatsapp.graph import GraphClient, GraphError

TOKEN = "sim-token"
PNID = "106540000000002"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOURS_CONFIG: dict[str, Any] = {
    "timezone": "Europe/Madrid",
    "weekly": {"monday": ["09:00-13:00", "14:00-18:00"], "friday": "09:00-15:00"},
    "holidays": ["2026-12-25", "2026-01-06"],
}


class Inbox:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.payloads.append(json.loads(request.content))
        return httpx.Response(200)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def sim(inbox: Inbox) -> AsyncIterator[MetaSimulator]:
    simulator = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret="secret",
        access_token=TOKEN,
        phone_number_id=PNID,
        clock=NOW.timestamp,
        webhook_transport=httpx.MockTransport(inbox.handle),
    )
    yield simulator
    await simulator.aclose()


@pytest.fixture
async def graph(sim: MetaSimulator) -> AsyncIterator[GraphClient]:
    async with GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=PNID,
        token=TOKEN,
        transport=httpx.ASGITransport(app=sim.app),
    ) as client:
        yield client


def settings_from_config() -> Settings:
    return Settings(
        business_hours=HOURS_CONFIG,
        call_settings={"status": "ENABLED", "callback_permission_status": "ENABLED"},  # type: ignore[arg-type]
    )


async def run_push(graph: GraphClient, desired: CallingSettings, **kw: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await push(graph, desired, now=NOW, out=out, err=err, **{"apply": True, **kw})
    return code, out.getvalue(), err.getvalue()


async def test_push_applies_hours_generated_from_the_config(graph: GraphClient, sim: MetaSimulator) -> None:
    desired, notes = desired_settings(settings_from_config(), NOW)
    assert notes == ["holiday 2026-01-06 is past and is not sent (Meta refuses past dates)"]

    code, out, _ = await run_push(graph, desired, apply=False)
    assert code == 0
    assert "+ call_hours.weekly_operating_hours: MONDAY 0900-1300" in out
    assert "~ callback_permission_status: DISABLED -> ENABLED" in out
    assert "dry run: nothing was sent" in out
    assert not [r for r in sim.requests if r.method == "POST"]

    code, out, _ = await run_push(graph, desired, notes=notes)
    assert code == 0 and "applied" in out
    calling = sim.settings_view()
    assert calling["call_hours"] == {
        "status": "ENABLED",
        "timezone_id": "Europe/Madrid",
        "weekly_operating_hours": [
            {"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1300"},
            {"day_of_week": "MONDAY", "open_time": "1400", "close_time": "1800"},
            {"day_of_week": "FRIDAY", "open_time": "0900", "close_time": "1500"},
        ],
        "holiday_schedule": [{"date": "2026-12-25", "start_time": "0000", "end_time": "2359"}],
    }
    assert sim.rules.callback_permission is True

    code, out, _ = await run_push(graph, desired)
    assert code == 0 and "nothing to change" in out


async def test_meta_tells_the_server_of_the_change_by_webhook(
    graph: GraphClient, sim: MetaSimulator, inbox: Inbox
) -> None:
    await graph.update_settings({"status": "DISABLED"})
    await sim.drain_webhooks()
    (payload,) = inbox.payloads
    change = payload["entry"][0]["changes"][0]
    assert change["field"] == "account_settings_update"
    assert change["value"]["phone_number_settings"]["calling"]["status"] == "DISABLED"
    assert sim.rules.calling_enabled is False  # §5 rule 4: /calls now answers 138000


async def test_an_invalid_schedule_is_refused_before_meta_with_the_rule_named(
    graph: GraphClient, sim: MetaSimulator
) -> None:
    desired = CallingSettings(
        call_hours=CallHours(
            "ENABLED",
            "Europe/Madrid",
            (WeeklyHours("MONDAY", "0900", "1300"), WeeklyHours("MONDAY", "1200", "1800")),
        )
    )
    code, _, err = await run_push(graph, desired)
    assert code == 2
    assert "refused before Meta (overlapping_entries): overlapping entries: MONDAY 0900-1300" in err
    assert sim.requests == []


def ch(
    *weekly: tuple[str, str, str], tz: str = "UTC", status: str = "ENABLED", holiday: str | None = None
) -> CallHours:
    return CallHours(status, tz, tuple(WeeklyHours(*w) for w in weekly), (Holiday(holiday),) if holiday else None)


MON = ("MONDAY", "0900", "1300")


@pytest.mark.parametrize(
    ("call_hours", "meta_rule"),
    [
        (ch(MON, ("MONDAY", "1200", "1800")), "overlapping entries"),
        (ch(*(("MONDAY", f"{h:02d}00", f"{h:02d}30") for h in (8, 10, 12))), "more than 2 entries per day"),
        (ch(), "empty weekly hours"),
        (ch(MON, tz="Nowhere/Atlantis"), "invalid timezone"),
        (ch(("MONDAY", "9:00", "1300")), "invalid schedule"),
        (ch(MON, holiday="2026-12-01"), "past holiday"),
        (ch(MON, holiday="2026/12/31"), "bad date format"),
        (ch(MON, status="MAYBE"), "invalid status"),
    ],
)
async def test_the_simulator_refuses_what_meta_refuses_when_wacalls_checks_are_skipped(
    graph: GraphClient, sim: MetaSimulator, call_hours: CallHours, meta_rule: str
) -> None:
    code, _, err = await run_push(graph, CallingSettings(call_hours=call_hours), check=False)
    assert code == 1
    assert "(#100)" in err and f"— {meta_rule}: " in err
    assert "call_hours" not in sim.settings_view()


async def test_the_simulator_refuses_more_than_20_holidays_and_bad_fields(graph: GraphClient) -> None:
    weekly = [{"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1300"}]
    holidays = [{"date": f"2027-01-{d:02d}", "start_time": "0000", "end_time": "2359"} for d in range(1, 22)]
    with pytest.raises(GraphError) as caught:
        hours = {"status": "ENABLED", "timezone_id": "UTC", "weekly_operating_hours": weekly}
        await graph.update_settings({"call_hours": {**hours, "holiday_schedule": holidays}})
    assert caught.value.code == 100 and "at most 20 holidays" in str(caught.value)
    for bad in ({"call_icon_visibility": "HIDE"}, {"call_icons": {"restrict_to_user_countries": ["bra"]}}, {}):
        with pytest.raises(GraphError) as caught:
            await graph.update_settings(bad)
        assert caught.value.code == 100


async def test_call_hours_are_replaced_whole_so_omitted_holidays_are_deleted(
    graph: GraphClient, sim: MetaSimulator
) -> None:
    desired, _ = desired_settings(settings_from_config(), NOW)
    assert (await run_push(graph, desired))[0] == 0
    assert sim.settings_view()["call_hours"]["holiday_schedule"]
    without = CallingSettings(
        call_hours=CallHours("ENABLED", "Europe/Madrid", (WeeklyHours("MONDAY", "0900", "1300"),))
    )
    code, out, err = await run_push(graph, without)
    assert code == 0
    assert "- call_hours.holiday_schedule: 2026-12-25 0000-2359" in out
    assert "WARNING: this push has no holiday_schedule, so Meta DELETES the 1 holiday(s) it has (2026-12-25)" in err
    assert "holiday_schedule" not in sim.settings_view()["call_hours"]
    assert sim.settings_view()["callback_permission_status"] == "ENABLED"  # other fields are merged, not replaced


def _cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "wacall.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    monkeypatch.setenv("WACALL_CONFIG", str(path))
    monkeypatch.setenv("WHATSAPP_TOKEN", TOKEN)
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", PNID)
    monkeypatch.setenv("WACALL_GRAPH_BASE_URL", "http://meta.test")


def test_settings_show_and_push_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real `wacall settings` entry point; the simulator's clock is the wall clock here (run_settings uses it)."""
    simulator = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret="secret",
        access_token=TOKEN,
        phone_number_id=PNID,
        webhook_transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    transport = httpx.ASGITransport(app=simulator.app)
    hours = {**HOURS_CONFIG, "holidays": ["2099-12-25"]}
    _cli_env(monkeypatch, tmp_path, {"business_hours": hours, "call_settings": {"call_icon_visibility": "DISABLE_ALL"}})

    assert run_settings(build_parser().parse_args(["settings", "push"]), transport=transport) == 0
    assert "dry run" in capsys.readouterr().out
    assert run_settings(build_parser().parse_args(["settings", "push", "--apply"]), transport=transport) == 0
    assert run_settings(build_parser().parse_args(["settings", "show"]), transport=transport) == 0
    shown = capsys.readouterr().out
    assert "call_icon_visibility         DISABLE_ALL" in shown
    assert "call_hours                   ENABLED in Europe/Madrid" in shown
    assert "  MONDAY 0900-1300\n  MONDAY 1400-1800\n  FRIDAY 0900-1500\n  holiday 2099-12-25 0000-2359" in shown

    _cli_env(monkeypatch, tmp_path, {"call_settings": {"status": "ON"}})
    assert run_settings(build_parser().parse_args(["settings", "push", "--apply"]), transport=transport) == 2
    assert "refused before Meta (invalid_status): invalid status: status is 'ON'" in capsys.readouterr().err


async def test_after_a_push_the_simulator_only_rings_the_business_within_call_hours() -> None:
    """§5 simulator rule 3, on the clock of each call: Monday 7 Dec 2026 12:00 UTC is 13:00 in Madrid."""
    clock = [NOW.timestamp()]
    simulator = MetaSimulator(
        webhook_url="http://wacall.test/webhook",
        app_secret="secret",
        access_token=TOKEN,
        phone_number_id=PNID,
        clock=lambda: clock[0],
        webhook_transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    desired, _ = desired_settings(settings_from_config(), NOW)
    async with GraphClient(
        base_url="http://meta.test",
        version="v23.0",
        phone_number_id=PNID,
        token=TOKEN,
        transport=httpx.ASGITransport(app=simulator.app),
    ) as client:
        assert (await run_push(client, desired))[0] == 0
    with pytest.raises(OutsideCallHours):  # 13:00-14:00 is the Monday lunch break
        await simulator.place_user_call(wa_id="15550002222", offer_sdp="v=0\r\n")
    clock[0] += 3600  # 14:00 Madrid: open
    call = await simulator.place_user_call(wa_id="15550002222", offer_sdp="v=0\r\n")
    assert call.id in simulator.calls
    clock[0] = datetime(2026, 12, 25, 10, 0, tzinfo=UTC).timestamp()  # a Friday, but a holiday
    with pytest.raises(OutsideCallHours):
        await simulator.place_user_call(wa_id="15550002222", offer_sdp="v=0\r\n")
    await simulator.drain_webhooks()
    await simulator.aclose()
