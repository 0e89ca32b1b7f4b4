"""`wacall report`: the analytics figures (agent/analytics.py) as a terminal table or JSON.

Reads the store directly, like `wacall calls`, so it works with the server stopped and never competes with
live calls for the server's event loop. Kept out of agent/cli.py so the CLI stays a list of thin commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from typing import Any

from agent.analytics import DEFAULT_DAYS, MAX_DAYS, Figures, Report, compute_report, report_period
from agent.config import load_settings

__all__ = ["add_report_parser", "cmd_report", "format_report"]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_report_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        parents=parents,
        help="call figures over a date range: pickup, containment, handover, queue abandon, handle time, "
        "cost by country and day, voice-to-voice latency",
    )
    report.add_argument("--since", type=_day, metavar="DATE", help="first day, YYYY-MM-DD (UTC)")
    report.add_argument("--until", type=_day, metavar="DATE", help="last day, included (default: today)")
    report.add_argument(
        "--days", type=int, metavar="N", help=f"number of days (default {DEFAULT_DAYS}, at most {MAX_DAYS})"
    )
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    report.add_argument("--simulated", action="store_true", help="count calls placed by `wacall simulate` too")
    report.add_argument("--data-dir", help="where the call records are (default: settings data_dir)")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from agent.store.select import open_configured_store
    from agent.whatsapp.pricing import RateCard

    try:
        period = report_period(since=args.since, until=args.until, days=args.days, today=datetime.now(UTC).date())
    except ValueError as exc:
        print(f"wacall report: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(getattr(args, "config", None))
    store = open_configured_store(
        "" if args.data_dir else settings.database_url.get_secret_value(), args.data_dir or settings.data_dir
    )
    try:
        report = compute_report(store, period, card=RateCard.load(settings.rate_card), simulated=args.simulated)
    finally:
        store.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def _percent(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100 * part / whole:.1f} %"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _share(part: int, whole: int, of: str) -> tuple[str, str]:
    return _percent(part, whole), f"{part} of {whole} {of}"


def _headline(t: Figures, currency: str) -> list[tuple[str, str, str]]:
    f = t.as_dict()
    return [
        ("pickup rate, inbound", *_share(t.inbound_answered, t.inbound, "offered")),
        ("pickup rate, outbound", *_share(t.outbound_answered, t.outbound, "placed")),
        ("containment", *_share(t.contained, t.answered, "answered")),
        ("handover rate", *_share(t.handed_over, t.answered, "answered")),
        ("queue abandon rate", *_share(t.abandoned, t.handed_over, "handed over")),
        ("average handle time", _seconds(f["avg_handle_s"]), "pickup to hang-up, answered calls"),
        ("average queue wait", _seconds(f["avg_queue_wait_s"]), "handed-over calls"),
        ("voice-to-voice p50", _ms(f["v2v_p50_ms"]), f"{len(t.v2v_ms)} bot turns"),
        ("voice-to-voice p95", _ms(f["v2v_p95_ms"]), "server side: speech end to first reply audio"),
        ("cost", f"{t.cost} {currency}", "list rate, business-initiated calls"),
    ]


_DAY_COLUMNS = (
    *("day", "calls", "in", "in ans", "out", "out ans", "contained", "handover", "abandon"),
    *("AHT", "cost", "v2v p50", "v2v p95"),
)


def _day_row(day: date, f: Figures) -> tuple[str, ...]:
    d = f.as_dict()
    return (
        day.isoformat(),
        str(f.calls),
        str(f.inbound),
        str(f.inbound_answered),
        str(f.outbound),
        str(f.outbound_answered),
        str(f.contained),
        str(f.handed_over),
        str(f.abandoned),
        _seconds(d["avg_handle_s"]),
        str(f.cost),
        _ms(d["v2v_p50_ms"]),
        _ms(d["v2v_p95_ms"]),
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """First column left-aligned, the numbers right-aligned, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(cells).rstrip()

    return [line(row) for row in [header, *rows]]


def format_report(report: Report) -> str:
    """The headline figures, one row per day that had calls, then cost by country."""
    period, total = report.period, report.total
    scope = "calls" if not report.simulated else "calls, simulated ones included"
    lines = [f"wacall report {period.first} to {period.last} (UTC): {total.calls} {scope}", ""]
    headline = _headline(total, report.currency)
    name_w = max(len(name) for name, _, _ in headline)
    value_w = max(len(value) for _, value, _ in headline)
    lines += [f"{name:<{name_w}}  {value:>{value_w}}   {note}" for name, value, note in headline]
    busy = [(day, f) for day, f in report.by_day.items() if f.calls]
    lines += ["", "by day (days without calls left out)" if busy else "no calls in this range"]
    if busy:
        lines += _table(_DAY_COLUMNS, [_day_row(day, f) for day, f in busy])
    if report.cost_by_country:
        lines += ["", f"cost by country ({report.currency})"]
        lines += _table(("country", "cost"), [(country, str(cost)) for country, cost in report.cost_by_country.items()])
    return "\n".join(lines)
