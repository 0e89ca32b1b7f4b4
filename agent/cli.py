"""`wacall` command line: thin — parses arguments, builds settings, hands over to the runtime."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError, load_settings
from agent.link_cli import add_link_parser, payload_arg
from agent.store.base import StoreError

if TYPE_CHECKING:
    from agent.simulator.http_answers import CannedAnswer, HttpAnswers
    from agent.simulator.session import Line


def _setup_logging(verbose: bool, fmt: str) -> None:
    from agent.logs import setup_logging

    setup_logging(verbose=verbose, fmt=fmt)


def _offline_models() -> None:
    # Model weights come from installed packages; never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # onnxruntime would otherwise write a device id under ~/.cache and try to send telemetry.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _refuse_broken_flow(path: str, command: str) -> int | None:
    """Every problem of a broken flow as `file:line:col: message` (as `wacall flows check` prints them),
    instead of a traceback ending in the first one; returns the exit code, or None when the flow is fine."""
    from agent.flows_cli import flow_problems

    problems = flow_problems(path)
    if not problems:
        return None
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"wacall {command}: {path} has {len(problems)} problem(s); nothing was started", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agent.app import create_app
    from agent.graceful import HTTP_CLOSE_S, DrainingServer
    from agent.listen_socket import listening_socket
    from agent.runtime import Models, Runtime

    settings = load_settings(args.config, host=args.host, port=args.port, flow=args.flow)
    refused = _refuse_broken_flow(settings.flow, "serve")
    if refused is not None:
        return refused
    settings.require_production()
    models = Models.load(settings)
    runtime = Runtime(settings, models)

    async def main() -> None:
        await runtime.warm_up()
        await runtime.settle_restart()  # first: the calls it ends must not be answered again from pending events
        await runtime.handle_pending()  # webhooks stored but never handled before the last stop
        config = uvicorn.Config(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            lifespan="off",
            timeout_graceful_shutdown=HTTP_CLOSE_S,  # open console event streams must not hold up a restart
        )
        server = DrainingServer(config)
        listener = None
        try:
            if settings.metrics_listen:
                from agent.metrics_server import MetricsListener

                listener = MetricsListener(
                    runtime.metrics, settings.metrics_listen, settings.metrics_token.get_secret_value()
                )
                await listener.start()
            # Our own socket: uvicorn's would make every response wait for the peer's delayed ACK.
            await server.serve_until_drained(
                runtime,
                sockets=[listening_socket(settings.host, settings.port)],
                goodbye=settings.shutdown.goodbye or None,
                deadline_s=settings.shutdown.deadline_s,
            )
        finally:
            if listener is not None:
                await listener.aclose()
            await runtime.aclose()
            models.close()

    asyncio.run(main())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """A call through the whole stack with the deployment's settings (config file and environment, read as
    `serve` reads them); only Meta, the caller and the URLs between them are simulated."""
    from agent.media.dtmf import check_keys
    from agent.runtime import Models
    from agent.simulator.http_answers import HttpAnswersError
    from agent.simulator.session import format_result, run_call

    lines = caller_lines(args)
    for line in lines:
        if line.keys is not None:
            try:
                check_keys(line.keys)
            except ValueError as exc:
                print(f"wacall simulate: --keys {line.keys}: {exc}", file=sys.stderr)
                return 2
        if line.audio is not None and not line.audio.is_file():
            print(f"wacall simulate: audio file not found: {line.audio}", file=sys.stderr)
            return 2
    settings = load_settings(args.config, flow=args.flow)
    refused = _refuse_broken_flow(settings.flow, "simulate")
    if refused is not None:
        return refused
    try:
        http = _canned_http(settings.flow, args.http_answers, live=args.live_http)
    except HttpAnswersError as exc:
        print(exc, file=sys.stderr)
        return 2
    _progress("loading models…")
    started = time.monotonic()
    models = Models.load(settings)
    _progress(f"models loaded ({time.monotonic() - started:.1f} s)")
    try:
        result = asyncio.run(
            run_call(
                models, lines, settings=settings, http=http, progress=_progress, payload=args.payload, via=args.via
            )
        )
    finally:
        models.close()
    print(format_result(result))
    return 0


def caller_lines(args: argparse.Namespace) -> list[Line]:
    """The caller's lines in the order given on the command line (`--say`, `--audio` and `--keys` mixed)."""
    from agent.simulator.session import DEFAULT_LINES, Line

    kinds = {"text": lambda v: Line(text=v), "audio": lambda v: Line(audio=Path(v)), "keys": lambda v: Line(keys=v)}
    lines = [kinds[kind](value) for kind, value in args.lines or []]
    return lines or [Line(text=t) for t in DEFAULT_LINES]


def _canned_http(flow_path: str, answers_file: str | None, *, live: bool) -> HttpAnswers:
    """The business-system answers for the flow's `http` steps: `--http-answers FILE` first, then the flow's
    own test file (unless `--live-http`); any other request goes to the real system."""
    from agent.dialogue.flow import load_flow
    from agent.dialogue.flowtest import flow_tests_path
    from agent.simulator.http_answers import HttpAnswers, answers_from_file, answers_from_flow_tests, http_nodes

    flow = load_flow(flow_path)
    by_node: dict[str, CannedAnswer] = {} if live else answers_from_flow_tests(flow_path, flow)
    if by_node:
        _progress(f"canned http answers for {', '.join(sorted(by_node))} from {flow_tests_path(flow_path)}")
    by_url: dict[str, CannedAnswer] = {}
    if answers_file:
        from_file, by_url = answers_from_file(answers_file, flow)
        by_node.update(from_file)
        _progress(f"canned http answers from {answers_file}: {', '.join([*from_file, *by_url])}")
    unanswered = sorted(set(http_nodes(flow)) - set(by_node))
    if unanswered and not by_url:
        _progress(f"http steps without a canned answer ask the real system: {', '.join(unanswered)}")
    return HttpAnswers(by_node=by_node, by_url=by_url, on_request=_progress)


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, object] | None = None) -> int:
    """The running server owns calls (it receives their webhooks), so the CLI asks it over HTTP."""
    import httpx

    token = os.environ.get("WACALL_API_TOKEN", "")
    if not token:
        print("wacall: set WACALL_API_TOKEN (the same as the server's) to use the calls API", file=sys.stderr)
        return 2
    url = args.server.rstrip("/") + path
    try:
        response = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        print(f"wacall: cannot reach the server at {args.server}: {exc}", file=sys.stderr)
        return 1
    data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        reason = data.get("reason") or data.get("detail") or data.get("error") or response.text
        print(f"wacall: refused ({response.status_code}): {reason}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2))
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"to": args.number}
    if args.flow:
        # The server takes flow names from its own prompts folder only (a path would be refused).
        body["flow"] = Path(args.flow).stem
    return _api(args, "POST", "/v1/calls", body)


def cmd_permission(args: argparse.Namespace) -> int:
    return _api(args, "POST", "/v1/call-permissions", {"to": args.number, "text": args.text})


def cmd_button(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"to": args.number}
    if args.payload is not None:
        body["payload"] = args.payload
    if args.text is not None:
        body["text"] = args.text
    return _api(args, "POST", "/v1/call-buttons", body)


def cmd_calls(args: argparse.Namespace) -> int:
    """Read the call records straight from the store: works with the server stopped."""
    from agent.store.select import open_configured_store

    settings = load_settings(args.config)
    # --data-dir names a SQLite file to read; otherwise the store the settings name, PostgreSQL included.
    store = open_configured_store(
        "" if args.data_dir else settings.database_url.get_secret_value(), args.data_dir or settings.data_dir
    )
    try:
        records = store.recent_calls(args.limit)
    finally:
        store.close()
    if not records:
        print("no calls recorded yet")
        return 0
    print(f"{'when (UTC)':<20} {'direction':<9} {'number':<16} {'outcome':<14} {'duration':>8} {'cost':>9}")
    for r in records:
        when = r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "?"
        inbound = r.direction == "USER_INITIATED"
        number = (r.from_number if inbound else r.to_number) or "?"
        duration = f"{r.duration_s:.0f} s" if r.duration_s is not None else "-"
        cost = f"{r.cost:.4f}" if r.cost is not None else "-"
        outcome = r.outcome or r.state
        direction = ("in" if inbound else "out") + (" (sim)" if r.simulated else "")
        print(f"{when:<20} {direction:<9} {number:<16} {outcome:<14} {duration:>8} {cost:>9}")
    if any(r.simulated for r in records):
        print("(sim): placed by `wacall simulate`, with a simulated Meta and caller")
    return 0


class _CallerLine(argparse.Action):
    """`--say`, `--audio` and `--keys` append to one list, so the caller's steps run in the order given."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        lines = list(getattr(namespace, self.dest, None) or [])
        lines.append((self.const, values))
        setattr(namespace, self.dest, lines)


def _config_option() -> argparse.ArgumentParser:
    """`--config` for a subcommand too (`wacall serve --config x.yaml`); SUPPRESS keeps one given before the
    subcommand when it is not repeated after it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file (default: $WACALL_CONFIG)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wacall", description="AI voice agent for WhatsApp Business Calling")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("WACALL_LOG_FORMAT") or "text",
        help="log lines as text or one JSON object per line (default: $WACALL_LOG_FORMAT, else text)",
    )
    parser.add_argument("--config", help="YAML config file (default: $WACALL_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    config = [_config_option()]

    serve = sub.add_parser("serve", parents=config, help="answer real WhatsApp calls (Meta webhooks + Graph API)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--flow", help="YAML flow file (default prompts/demo.yaml)")
    serve.set_defaults(func=cmd_serve)

    simulate = sub.add_parser(
        "simulate",
        parents=config,
        help="place a simulated WhatsApp call through the whole stack, with the config and environment of serve",
    )
    simulate.add_argument("--flow", help="YAML flow file (default: the config's, else prompts/demo.yaml)")
    simulate.add_argument(
        "--say", dest="lines", action=_CallerLine, const="text", metavar="TEXT", help="a caller line (repeatable)"
    )
    simulate.add_argument(
        "--audio",
        dest="lines",
        action=_CallerLine,
        const="audio",
        metavar="FILE",
        help="a caller line as WAV/FLAC (repeatable; lines play in the order given)",
    )
    simulate.add_argument(
        "--keys",
        dest="lines",
        action=_CallerLine,
        const="keys",
        metavar="KEYS",
        help="press keys on the call's keypad (DTMF, e.g. --keys 1 or --keys 12#: 100 ms each, 100 ms apart), "
        "then hear the bot's reply (repeatable; in order with --say/--audio)",
    )
    simulate.add_argument(
        "--http-answers",
        metavar="FILE",
        help="YAML: http step name or part of a URL -> {ok: true, data: {...}}, answered instead of the real "
        "business system (default: the answers in the flow's x.test.yaml)",
    )
    simulate.add_argument(
        "--live-http",
        action="store_true",
        help="do not take answers from the flow's test file: http steps reach the real business systems",
    )
    simulate.add_argument(
        "--payload",
        type=payload_arg,
        help="the caller comes from a call button or deep link carrying this payload (see --via)",
    )
    simulate.add_argument(
        "--via",
        choices=["button", "link"],
        default="button",
        help="with --payload: a call button (cta_payload, the default) or a wa.me/call deep link (deeplink_payload)",
    )
    simulate.set_defaults(func=cmd_simulate)

    call = sub.add_parser("call", help="place a business-initiated call through the running server")
    call.add_argument("number", help="the user's number, international format")
    call.add_argument("--flow", help="name of a flow in the server's prompts folder (default: the server's flow)")
    call.add_argument("--server", default="http://127.0.0.1:8080", help="wacall server URL")
    call.set_defaults(func=cmd_call)

    permission = sub.add_parser("permission", help="ask a user for permission to call them")
    permission.add_argument("number")
    permission.add_argument("--text", default="May we call you about your request?", help="message body")
    permission.add_argument("--server", default="http://127.0.0.1:8080")
    permission.set_defaults(func=cmd_permission)

    button = sub.add_parser("button", help="send a user a call button (a template outside the 24 h window)")
    button.add_argument("number")
    button.add_argument("--payload", help="comes back with the call when the user taps (at most 512 characters)")
    button.add_argument("--text", help="message above the button (default: the config's call_button.body)")
    button.add_argument("--server", default="http://127.0.0.1:8080")
    button.set_defaults(func=cmd_button)

    calls = sub.add_parser("calls", parents=config, help="list recent calls: direction, outcome, duration, cost")
    calls.add_argument("--limit", type=int, default=20)
    calls.add_argument("--data-dir", help="where the call records are (default: settings data_dir)")
    calls.set_defaults(func=cmd_calls)

    from agent.flows_cli import add_flows_parser

    add_flows_parser(sub)
    from agent.report_cli import add_report_parser

    add_report_parser(sub, config)
    add_link_parser(sub, parents=config)
    from agent.settings_cli import add_settings_parser

    add_settings_parser(sub, config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _offline_models()
    _setup_logging(args.verbose, args.log_format)
    if args.command == "simulate" and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (ConfigError, StoreError) as exc:  # a bad setting, or a database that cannot be used
        print(f"wacall: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
