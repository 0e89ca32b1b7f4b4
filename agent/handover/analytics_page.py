"""The console's analytics page (`/console/analytics`) and its figures as JSON (`/console/api/analytics`).

For whoever can sign in to the console (agents, and the supervisors who are configured as agents): the same
session cookie, nothing else to set up. The page is HTML rendered here with the charts as inline SVG
(agent/analytics_svg.py), so it needs no script, no chart library and nothing beyond the console's own strict
CSP; a date form (a plain GET) picks the range. The report is computed in a worker thread: weeks of records
must never stall the event loop that carries every live call's audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from agent.analytics import MAX_DAYS, FactsSource, Figures, Report, compute_report, parse_period
from agent.analytics_svg import bar_chart, line_chart
from agent.whatsapp.pricing import RateCard

__all__ = ["AnalyticsPage"]


def _today() -> date:
    return datetime.now(UTC).date()


def _pct(part: int, whole: int) -> str:
    return "–" if whole == 0 else f"{100 * part / whole:.1f} %"


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _share(part: int, whole: int, of: str = "") -> tuple[str, str]:
    return _pct(part, whole), f"{part} of {whole}{' ' + of if of else ''}"


def _headline(t: Figures, currency: str) -> list[tuple[str, str, str, str]]:
    """(id, name, value, what it is out of) for each figure card."""
    f = t.as_dict()
    return [
        ("calls", "Calls", str(t.calls), f"{t.inbound} in, {t.outbound} out"),
        ("pickup-inbound", "Pickup, inbound", *_share(t.inbound_answered, t.inbound, "offered")),
        ("pickup-outbound", "Pickup, outbound", *_share(t.outbound_answered, t.outbound, "placed")),
        ("containment", "Containment", *_share(t.contained, t.answered, "answered")),
        ("handover", "Handover rate", *_share(t.handed_over, t.answered, "answered")),
        ("abandon", "Queue abandon", *_share(t.abandoned, t.handed_over, "queued")),
        ("aht", "Avg handle time", _secs(f["avg_handle_s"]), f"queue wait {_secs(f['avg_queue_wait_s'])}"),
        ("v2v-p50", "Voice-to-voice p50", _ms(f["v2v_p50_ms"]), f"{len(t.v2v_ms)} bot turns"),
        ("v2v-p95", "Voice-to-voice p95", _ms(f["v2v_p95_ms"]), "speech end to reply audio"),
        ("cost", "Cost", f"{t.cost}", currency),
    ]


def _charts(report: Report) -> list[tuple[str, str]]:
    days = list(report.by_day)
    labels = [d.strftime("%m-%d") for d in days]
    per_day = list(report.by_day.values())
    v2v = [f.as_dict() for f in per_day]
    countries = list(report.cost_by_country)
    return [
        ("calls-per-day", bar_chart("Calls per day", labels, [f.calls for f in per_day])),
        (
            "v2v-by-day",
            line_chart(
                "Voice-to-voice latency by day (ms)",
                labels,
                {"p50": [d["v2v_p50_ms"] for d in v2v], "p95": [d["v2v_p95_ms"] for d in v2v]},
            ),
        ),
        (
            "cost-by-country",
            bar_chart(
                f"Cost by country ({report.currency})",
                countries,
                [float(v) for v in report.cost_by_country.values()],
                fmt=lambda v: f"{v:.4g}",
            ),
        ),
        (
            "cost-by-day",
            bar_chart(
                f"Cost per day ({report.currency})",
                labels,
                [float(f.cost) for f in per_day],
                fmt=lambda v: f"{v:.4g}",
                colour="#4f9d69",
            ),
        ),
    ]


DEFINITIONS = """
<details id="definitions"><summary>How these are counted</summary><ul>
<li><b>Pickup, inbound</b>: inbound calls answered out of all offered, including those refused after hours or
over capacity. <b>Outbound</b>: calls picked up out of all placed (Meta accepted them and the phone rang).</li>
<li><b>Containment</b>: answered calls the bot finished itself (the flow reached an <code>end: true</code> node
and the bot hung up), never handed to a person, out of all answered calls.</li>
<li><b>Handover rate</b>: answered calls handed to a queue. <b>Queue abandon</b>: of those, callers who hung up
while still waiting for a person.</li>
<li><b>Avg handle time</b>: pickup to hang-up of answered calls (bot, queue and agent together).</li>
<li><b>Voice-to-voice</b>: per bot turn, from the end of the caller's speech to the first reply audio sent
(server side: the network and the phone are not in it); nearest-rank p50 and p95.</li>
<li><b>Cost</b>: the list-rate cost stored with each call, by the country of the user's number.</li>
<li>Days are UTC; calls placed by <code>wacall simulate</code> are left out.</li>
</ul></details>
"""


def _form(period_first: str, period_last: str, error: str | None) -> str:
    notice = f'<p id="range-error" class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        '<form id="range" method="get" action="analytics">'
        f'<label>From <input type="date" name="since" value="{escape(period_first, quote=True)}"></label>'
        f'<label>to <input type="date" name="until" value="{escape(period_last, quote=True)}"></label>'
        '<button type="submit">Show</button>'
        f'<span class="hint">UTC days, at most {MAX_DAYS}</span></form>{notice}'
    )


def render_page(
    report: Report | None, agent_name: str, *, error: str | None = None, since: str = "", until: str = ""
) -> str:
    """The whole page; `report` None shows only the form (and the error that stopped the report)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>wacall · analytics</title>",
        '<link rel="stylesheet" href="static/console.css">',
        '<link rel="stylesheet" href="static/analytics.css">',
        "</head><body>",
        '<header><h1>wacall <span>analytics</span></h1><nav id="me">',
        f'<span id="me-name">{escape(agent_name)}</span> <a href="./">Back to the console</a></nav></header>',
        '<main id="analytics">',
    ]
    if report is None:
        parts.append(_form(since, until, error))
    else:
        p = report.period
        parts.append(_form(p.first.isoformat(), p.last.isoformat(), error))
        parts.append(f'<p id="period">{p.first} to {p.last} (UTC)</p>')
        parts.append('<section id="headline">')
        for key, name, value, note in _headline(report.total, report.currency):
            parts.append(
                f'<div class="figure" id="fig-{key}"><span class="name">{escape(name)}</span>'
                f'<span class="value">{escape(value)}</span><span class="note">{escape(note)}</span></div>'
            )
        parts.append('</section><section id="charts">')
        parts += [f'<figure id="chart-{key}">{svg}</figure>' for key, svg in _charts(report)]
        parts.append("</section>")
        parts.append(DEFINITIONS)
    parts.append("</main></body></html>")
    return "\n".join(parts)


class AnalyticsPage:
    """The routes, given the store, who is signed in (the console's session check) and the console's headers."""

    def __init__(
        self,
        store: FactsSource,
        signed_in: Callable[[Request], str | None],
        *,
        headers: Mapping[str, str],
        card: RateCard | None = None,
        today: Callable[[], date] = _today,
    ) -> None:
        self._store = store
        self._signed_in = signed_in
        self._headers = dict(headers)
        self._card = card
        self._today = today

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/analytics", self.page, methods=["GET"]),
            Route("/api/analytics", self.figures, methods=["GET"]),
        ]

    async def _report(self, query: Mapping[str, str]) -> Report:
        period = parse_period(query, today=self._today())  # ValueError for the caller to show
        return await asyncio.to_thread(compute_report, self._store, period, card=self._card)

    async def page(self, request: Request) -> Response:
        agent = self._signed_in(request)
        if agent is None:
            return RedirectResponse("./", status_code=303, headers={"Cache-Control": "no-store"})
        try:
            report = await self._report(request.query_params)
        except ValueError as exc:
            q = request.query_params
            html = render_page(None, agent, error=str(exc), since=q.get("since", ""), until=q.get("until", ""))
            return HTMLResponse(html, status_code=400, headers=self._headers)
        return HTMLResponse(render_page(report, agent), headers=self._headers)

    async def figures(self, request: Request) -> Response:
        headers = {"Cache-Control": "no-store"}
        if self._signed_in(request) is None:
            return JSONResponse({"error": "not signed in"}, status_code=401, headers=headers)
        try:
            report = await self._report(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=headers)
        data: dict[str, Any] = report.as_dict()
        return JSONResponse(data, headers=headers)
