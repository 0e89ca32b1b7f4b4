"""`wacall settings show|push`: the number's calling settings at Meta, driven from wacall's config.

Talks to the Graph API directly (with WHATSAPP_TOKEN and the configured phone number id), not through the
running server: settings belong to the number, not to any call, and an operator may push them before the
server is ever started. `push` is a dry run unless `--apply` is given, because Meta's app shows a change
to users for up to 7 days and `call_hours` is replaced whole (holidays included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from agent.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    import httpx

    from agent.whatsapp.call_settings import CallingSettings
    from agent.whatsapp.graph import GraphClient

__all__ = ["add_settings_parser", "desired_settings", "print_settings", "push", "run_settings"]


def desired_settings(settings: Settings, now: datetime) -> tuple[CallingSettings, list[str]]:
    """What the config says Meta should hold, and notes on how business hours were adapted for Meta."""
    from agent.whatsapp.call_settings import CallingSettings, call_hours_from_business_hours
    from agent.whatsapp.rules import BusinessHours

    wanted = settings.call_settings
    notes: list[str] = []
    call_hours = None
    if wanted.call_hours and settings.business_hours is not None:
        call_hours, notes = call_hours_from_business_hours(BusinessHours.from_config(settings.business_hours), now)
    elif wanted.call_hours:
        notes.append("no business_hours in the config: call_hours is left as Meta has it")
    countries = wanted.restrict_to_user_countries
    desired = CallingSettings(
        status=wanted.status,
        call_icon_visibility=wanted.call_icon_visibility,
        restrict_to_user_countries=None if countries is None else tuple(countries),
        callback_permission_status=wanted.callback_permission_status,
        call_hours=call_hours,
    )
    return desired, notes


def print_settings(calling: CallingSettings, out: TextIO) -> None:
    """A readable view of what Meta holds; anything beyond the managed fields is printed as JSON."""

    def show(name: str, value: Any) -> None:
        print(f"{name:<28} {'(unset)' if value is None else value}", file=out)

    show("status", calling.status)
    show("call_icon_visibility", calling.call_icon_visibility)
    countries = calling.restrict_to_user_countries
    show("restrict_to_user_countries", None if countries is None else ", ".join(countries) or "(none: everywhere)")
    show("callback_permission_status", calling.callback_permission_status)
    hours = calling.call_hours
    if hours is None:
        show("call_hours", None)
    else:
        show("call_hours", f"{hours.status} in {hours.timezone_id}")
        for entry in sorted(hours.weekly_operating_hours, key=_day_order):
            print(f"  {entry}", file=out)
        for holiday in sorted(hours.holiday_schedule or ()):
            print(f"  holiday {holiday}", file=out)
    for key, value in calling.other.items():
        show(key, json.dumps(value))


def _day_order(entry: Any) -> tuple[int, str]:
    from agent.whatsapp.call_settings import DAYS

    day = entry.day_of_week
    return (DAYS.index(day) if day in DAYS else 7, entry.open_time)


async def show(graph: GraphClient, out: TextIO) -> int:
    from agent.whatsapp.call_settings import CallingSettings

    data = await graph.get_settings()
    calling = data.get("calling")
    if not isinstance(calling, dict):
        print("Meta returned no calling settings for this number (calling was never configured)", file=out)
        return 0
    print_settings(CallingSettings.from_meta(calling), out)
    return 0


async def push(
    graph: GraphClient,
    desired: CallingSettings,
    *,
    apply: bool,
    now: datetime,
    check: bool = True,
    notes: Sequence[str] = (),
    out: TextIO,
    err: TextIO,
) -> int:
    """Check `desired` with Meta's rules, show the diff against Meta, and POST it only with `apply`.

    Exit codes: 0 done (or nothing to do), 2 refused before Meta was asked, 1 Meta refused.
    """
    from agent.whatsapp.call_settings import CallingSettings, diff_settings, holiday_deletion_warning, validate_calling
    from agent.whatsapp.graph import GraphError

    for note in notes:
        print(f"note: {note}", file=err)
    body = desired.to_meta()
    if not body:
        print("the config manages no call settings (call_settings and business_hours are unset)", file=err)
        return 2
    if check:
        problems = validate_calling(desired, now)
        if problems:
            for problem in problems:
                print(f"refused before Meta ({problem.rule}): {problem}", file=err)
            print("wacall settings push: nothing was sent", file=err)
            return 2
    current_raw = (await graph.get_settings()).get("calling")
    current = CallingSettings.from_meta(current_raw if isinstance(current_raw, dict) else {})
    changes = diff_settings(current, desired)
    if not changes:
        print("Meta already has these settings: nothing to change", file=out)
        return 0
    print("changes at Meta:", file=out)
    for change in changes:
        print(f"  {change}", file=out)
    warning = holiday_deletion_warning(current, desired)
    if warning:
        print(f"WARNING: {warning}", file=err)
    elif desired.call_hours is not None and not desired.call_hours.holiday_schedule:
        print("note: no holidays are sent; Meta deletes any holiday_schedule it holds when it is omitted", file=err)
    if not apply:
        print("dry run: nothing was sent; run `wacall settings push --apply` to apply", file=out)
        return 0
    try:
        await graph.update_settings(body)
    except GraphError as exc:
        print(f"Meta refused the settings: {exc}", file=err)
        return 1
    print("applied: Meta enforces the new settings now; phones may take up to 7 days to show them", file=out)
    return 0


def _graph(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> GraphClient:
    from agent.whatsapp.graph import GraphClient

    missing = [
        env
        for value, env in (
            (settings.whatsapp_token.get_secret_value(), "WHATSAPP_TOKEN"),
            (settings.phone_number_id, "WHATSAPP_PHONE_NUMBER_ID"),
        )
        if not value
    ]
    if missing:
        raise ConfigError("missing required environment variables: " + ", ".join(missing))
    return GraphClient(
        base_url=settings.graph_base_url,
        version=settings.graph_version,
        phone_number_id=settings.phone_number_id,
        token=settings.whatsapp_token.get_secret_value(),
        transport=transport,
    )


def run_settings(args: argparse.Namespace, *, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """`transport` lets a test put the simulator where graph.facebook.com would be."""
    from agent.whatsapp.graph import GraphError

    settings = load_settings(getattr(args, "config", None))
    now = datetime.now(UTC)

    async def main() -> int:
        async with _graph(settings, transport) as graph:
            if args.settings_command == "show":
                return await show(graph, sys.stdout)
            desired, notes = desired_settings(settings, now)
            return await push(
                graph,
                desired,
                apply=args.apply,
                now=now,
                check=not args.no_local_checks,
                notes=notes,
                out=sys.stdout,
                err=sys.stderr,
            )

    try:
        return asyncio.run(main())
    except GraphError as exc:
        print(f"wacall settings: {exc}", file=sys.stderr)
        return 1


def add_settings_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    settings = subparsers.add_parser(
        "settings", parents=parents, help="the number's call settings at Meta (hours, icon, callback permission)"
    )
    sub = settings.add_subparsers(dest="settings_command", required=True)
    show_cmd = sub.add_parser("show", parents=parents, help="print the calling settings Meta holds")
    show_cmd.set_defaults(func=run_settings)
    push_cmd = sub.add_parser(
        "push",
        parents=parents,
        help="show what the config would change at Meta (call_settings, business_hours); --apply sends it",
    )
    push_cmd.add_argument("--apply", action="store_true", help="send the settings (default: dry run, diff only)")
    push_cmd.add_argument(
        "--no-local-checks",
        action="store_true",
        help="skip wacall's copy of Meta's rules and let Meta judge (if Meta's rules changed before wacall's)",
    )
    push_cmd.set_defaults(func=run_settings)
