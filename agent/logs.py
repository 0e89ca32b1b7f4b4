"""Log lines an operator can search: every line of a call carries its call id, and JSON on request.

The call id comes from a context variable set where a call's work starts (webhook handling, placing a
call); asyncio tasks copy the context when they are created, so every task a call starts (its conversation,
media, watchdogs) logs under its id without any message having to mention it.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

call_id_var: ContextVar[str | None] = ContextVar("wacall_call_id", default=None)

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(call_tag)s: %(message)s"
QUIET_LIBRARIES = ("aioice", "aiortc", "httpx", "faster_whisper")


class CallIdFilter(logging.Filter):
    """Stamps each record with the call it belongs to (None outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = call_id_var.get()
        record.call_id = call_id
        record.call_tag = f" [{call_id[:24]}]" if call_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, CloudWatch, Elastic)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(*, verbose: bool, fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)
