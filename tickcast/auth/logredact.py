"""A logging filter that keeps secrets and forged lines out of log files.

uvicorn logs request paths with their query (``WebSocket /ws/predictions?api_key=tck_...``), and
it logs the %-decoded path, so a request can put a NUL or a newline into a log line. Attached to
a *handler*, this filter sees every record that handler writes, whichever logger made it
(uvicorn's, the application's, a library's), and rewrites it before it is formatted:

- API keys (``tck_<id>_<secret>``) become ``<api key ID>`` (``tickcast.auth.apikeys.redact_keys``),
  and any ``api_key=...`` / ``api-key=...`` value becomes ``api_key=<redacted>``;
- control characters in the values logged (the ``%s`` arguments) become ``\\xNN``; in the message
  itself newlines and tabs stay (a message of our own may span lines), other control characters
  are escaped too; tracebacks are redacted but keep their lines.

The record keeps its shape (``args`` stays a tuple of the same types) because formatters read it:
uvicorn's access formatter unpacks ``args``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from tickcast.auth.apikeys import redact_keys

_QUERY_KEY = re.compile(r"(api[_-]?key=)[^&\s\"'#;,]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DONE = "_tickcast_redacted"


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def redact(text: str) -> str:
    """``text`` without API keys or ``api_key=`` values."""
    if "=" in text and "key" in text.lower():
        text = _QUERY_KEY.sub(r"\1<redacted>", text)
    return redact_keys(text)


def clean_value(text: str) -> str:
    """A logged value: redacted, and every control character escaped (one value, one line)."""
    return _CONTROL.sub(_escape, redact(text))


def _clean_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value  # numbers keep their type for %d and %.1f
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return clean_value(value)
    text = str(value)
    cleaned = clean_value(text)
    return value if cleaned == text else cleaned  # an object kept as is keeps its formatting


class RedactingFilter(logging.Filter):
    """Rewrites each record in place (once, however many handlers carry it); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _DONE, False):
            return True
        setattr(record, _DONE, True)
        if isinstance(record.msg, str):
            record.msg = _CONTROL_BUT_LINES.sub(_escape, redact(record.msg))
        elif record.msg is not None:
            record.msg = _CONTROL_BUT_LINES.sub(_escape, redact(str(record.msg)))
        if isinstance(record.args, tuple):
            record.args = tuple(_clean_arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _clean_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _CONTROL_BUT_LINES.sub(_escape, redact(record.exc_text))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
