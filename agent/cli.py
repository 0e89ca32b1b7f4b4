"""`wacall` command line: thin — parses arguments, builds settings, hands over to the runtime."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from agent.config import ConfigError, load_settings


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aioice", "aiortc", "httpx", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _offline_models() -> None:
    # Model weights come from installed packages; never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agent.app import create_app
    from agent.runtime import Models, Runtime

    settings = load_settings(args.config, host=args.host, port=args.port, flow=args.flow)
    settings.require_production()
    models = Models.load(settings)
    runtime = Runtime(settings, models)

    async def main() -> None:
        await runtime.warm_up()
        config = uvicorn.Config(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            lifespan="off",
            timeout_graceful_shutdown=5,  # open console event streams must not hold up a restart
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            await runtime.aclose()
            models.close()

    asyncio.run(main())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.config import Settings
    from agent.runtime import Models
    from agent.simulator.session import DEFAULT_LINES, Line, format_result, run_call

    lines = [Line(text=t) for t in args.say or []] + [Line(audio=Path(p)) for p in args.audio or []]
    if not lines:
        lines = [Line(text=t) for t in DEFAULT_LINES]
    for line in lines:
        if line.audio is not None and not line.audio.is_file():
            print(f"wacall simulate: audio file not found: {line.audio}", file=sys.stderr)
            return 2
    settings = load_settings(args.config, flow=args.flow) if args.config else Settings()
    flow = args.flow or settings.flow
    print("loading models…", file=sys.stderr)
    models = Models.load(settings)
    try:
        result = asyncio.run(run_call(models, lines, flow=flow))
    finally:
        models.close()
    print(format_result(result))
    return 0


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
        body["flow"] = str(Path(args.flow).resolve())
    return _api(args, "POST", "/v1/calls", body)


def cmd_permission(args: argparse.Namespace) -> int:
    return _api(args, "POST", "/v1/call-permissions", {"to": args.number, "text": args.text})


def cmd_calls(args: argparse.Namespace) -> int:
    """Read the call records straight from the store: works with the server stopped."""
    from agent.store.sqlite import SqliteStore

    settings = load_settings(args.config)
    store = SqliteStore.in_data_dir(args.data_dir or settings.data_dir)
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
        print(f"{when:<20} {'in' if inbound else 'out':<9} {number:<16} {outcome:<14} {duration:>8} {cost:>9}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wacall", description="AI voice agent for WhatsApp Business Calling")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--config", help="YAML config file (default: $WACALL_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="answer real WhatsApp calls (Meta webhooks + Graph API)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--flow", help="YAML flow file (default prompts/demo.yaml)")
    serve.set_defaults(func=cmd_serve)

    simulate = sub.add_parser("simulate", help="place a simulated WhatsApp call through the whole stack")
    simulate.add_argument("--flow", help="YAML flow file (default prompts/demo.yaml)")
    simulate.add_argument("--say", action="append", metavar="TEXT", help="a caller line (repeatable)")
    simulate.add_argument("--audio", action="append", metavar="FILE", help="a caller line as WAV/FLAC")
    simulate.set_defaults(func=cmd_simulate)

    call = sub.add_parser("call", help="place a business-initiated call through the running server")
    call.add_argument("number", help="the user's number, international format")
    call.add_argument("--flow", help="YAML flow for this call (default: the server's)")
    call.add_argument("--server", default="http://127.0.0.1:8080", help="wacall server URL")
    call.set_defaults(func=cmd_call)

    permission = sub.add_parser("permission", help="ask a user for permission to call them")
    permission.add_argument("number")
    permission.add_argument("--text", default="May we call you about your request?", help="message body")
    permission.add_argument("--server", default="http://127.0.0.1:8080")
    permission.set_defaults(func=cmd_permission)

    calls = sub.add_parser("calls", help="list recent calls: direction, outcome, duration, cost")
    calls.add_argument("--limit", type=int, default=20)
    calls.add_argument("--data-dir", help="where the call records are (default: settings data_dir)")
    calls.set_defaults(func=cmd_calls)

    from agent.flows_cli import add_flows_parser

    add_flows_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _offline_models()
    _setup_logging(args.verbose)
    if args.command == "simulate" and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"wacall: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
