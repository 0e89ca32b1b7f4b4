"""``wacall link``: the deep link that calls the business, and its QR code, for web pages and posters.

Prints the link; with ``--qr FILE.png`` or ``FILE.svg`` also writes the QR code (segno). The number comes from
``--number``, else the config's ``business_number``. Registered on the main parser by :func:`add_link_parser`;
returns 0, or 2 for bad usage, following ``agent.cli``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.config import load_settings
from agent.whatsapp.links import LinkError, call_link
from agent.whatsapp.payloads import payload_problem

__all__ = ["QR_FORMATS", "add_link_parser", "cmd_link", "payload_arg", "write_qr"]

#: What a poster printer and a web page take; segno picks the writer from the extension.
QR_FORMATS = (".png", ".svg")
#: Pixels per QR module in a PNG: about 3 cm square at 300 dpi for a short link, sharp enough to print.
PNG_SCALE = 10


def payload_arg(value: str) -> str:
    """argparse type: a payload Meta would carry (spec §6), refused at the command line rather than dropped later."""
    problem = payload_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"not a usable payload: {problem}")
    return value


def write_qr(url: str, path: Path) -> None:
    """Write `url` as a QR code; error correction M survives a smudged or partly covered print."""
    import segno

    suffix = path.suffix.lower()
    if suffix not in QR_FORMATS:
        raise LinkError(f"--qr must end in {' or '.join(QR_FORMATS)}, not {path.name!r}")
    qr = segno.make(url, error="m")
    qr.save(str(path), scale=PNG_SCALE if suffix == ".png" else 4, border=4)


def cmd_link(args: argparse.Namespace) -> int:
    number = args.number or load_settings(getattr(args, "config", None)).business_number
    if not number:
        print("wacall link: no business number: pass --number or set business_number in the config", file=sys.stderr)
        return 2
    try:
        url = call_link(number, args.payload)
        if args.qr is not None:
            write_qr(url, Path(args.qr))
    except LinkError as exc:
        print(f"wacall link: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"wacall link: cannot write {args.qr}: {exc}", file=sys.stderr)
        return 2
    print(url)
    if args.qr is not None:
        print(f"QR code written to {args.qr}", file=sys.stderr)
    return 0


def add_link_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Register ``link`` on ``wacall``'s sub-parsers."""
    link = subparsers.add_parser(
        "link",
        parents=parents or [],
        help="print the wa.me/call deep link that calls the business (and write its QR code)",
    )
    link.add_argument(
        "--payload",
        type=payload_arg,
        help="context the call carries (deeplink_payload), e.g. the campaign: summer-sale; up to 512 characters",
    )
    link.add_argument("--number", help="the business number, international format (default: the config's)")
    link.add_argument("--qr", metavar="FILE", help="also write the link's QR code to FILE.png or FILE.svg")
    link.set_defaults(func=cmd_link)
    return link
