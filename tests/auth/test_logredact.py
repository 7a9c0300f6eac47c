"""The log filter of tickcast/auth/logredact.py on records shaped like uvicorn's and ours."""

from __future__ import annotations

import logging

from tickcast.auth.logredact import RedactingFilter

KEY = "tck_0123456789ab_" + "S3cr3t-_" * 5


def _format(record: logging.LogRecord, fmt: str = "%(message)s") -> str:
    assert RedactingFilter().filter(record)
    return logging.Formatter(fmt).format(record)


def _record(msg: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, exc_info)


def test_keys_and_api_key_values_are_redacted_wherever_they_are() -> None:
    line = _format(_record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws/predictions?api_key={KEY}&x=1"))
    assert line == '127.0.0.1:5000 - "WebSocket /ws/predictions?api_key=<redacted>&x=1" [accepted]'
    assert _format(_record(f"key {KEY} in the message itself")) == "key <api key 0123456789ab> in the message itself"
    assert _format(_record("api-key=short and API_KEY=x")) == "api-key=<redacted> and API_KEY=<redacted>"


def test_control_characters_in_values_are_escaped_and_types_kept() -> None:
    # uvicorn's access formatter reads args as (client, method, path, version, status:int).
    record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/a\x00b\nFORGED", "1.1", 404)
    assert _format(record) == '127.0.0.1:1 - "GET /a\\x00b\\x0aFORGED HTTP/1.1" 404'
    assert record.args[-1] == 404
    # Our own messages may span lines; a NUL in them is still escaped.
    assert _format(_record("first\nsecond\x00")) == "first\nsecond\\x00"


def test_a_traceback_is_redacted_and_the_record_filtered_once() -> None:
    try:
        raise ValueError(f"bad {KEY}")
    except ValueError:
        import sys

        record = _record("failed", exc_info=sys.exc_info())
    text = _format(record)
    assert "S3cr3t" not in text and "<api key 0123456789ab>" in text
    assert RedactingFilter().filter(record)  # a second handler: unchanged
    assert logging.Formatter().format(record) == text
