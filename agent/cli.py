"""`wacall` command line: thin — parses arguments, builds settings, hands over to the runtime."""

from __future__ import annotations

import argparse
import asyncio
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
        config = uvicorn.Config(create_app(runtime), host=settings.host, port=settings.port, lifespan="off")
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
