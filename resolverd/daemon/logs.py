"""The daemon's log lines: one JSON object per line for machines, or key=value text for people.

Both formats carry the same fields: ``ts`` (RFC 3339, UTC, milliseconds), ``level`` (lower case),
``logger``, ``msg``, then every key the caller passed in ``extra={...}``, then ``exc`` (the
formatted traceback) when the record has exception info and ``stack`` when it has stack info.
A caller's key that collides with one of these is kept with a ``_`` appended rather than
silently replacing it.

Only the ``resolverd`` logger is configured: the daemon may run inside a process whose root
logger belongs to someone else.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Final

import msgspec

from resolverd.errors import ConfigError

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Whatever a LogRecord carries by itself is not an extra; computing the set from a record keeps
# it right across Python versions (3.12 added taskName). The two names after it are set later,
# by Formatter.format.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_RESERVED: Final = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


def _timestamp(record: logging.LogRecord) -> str:
    # record.msecs is logging's own millisecond split of record.created; reuse it so that the
    # two never disagree near a second boundary.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, Any]:
    """The line's fields in their order: core, extras, then exc and stack."""
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD:
            fields[key + "_" if key in _RESERVED else key] = value
    if record.exc_info and not record.exc_text:
        # Cached on the record like logging.Formatter does, for the next handler.
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields["exc"] = record.exc_text
    if record.stack_info:
        fields["stack"] = formatter.formatStack(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (no line break inside; the handler adds the one at
    the end). A value JSON has no type for goes through ``str()``; msgspec's own encodings
    (datetime as RFC 3339, bytes as base64, dataclasses and Structs as objects) are kept."""

    _encoder: Final = msgspec.json.Encoder(enc_hook=_safe_str)

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(self, record)
        try:
            return self._encoder.encode(fields).decode()
        except Exception:
            # A value msgspec tried and failed on (a self-containing list, say): stringify just
            # the values that fail, so that one bad extra costs its own field only.
            return self._encoder.encode({k: self._encodable(v) for k, v in fields.items()}).decode()

    def _encodable(self, value: object) -> object:
        try:
            self._encoder.encode(value)
        except Exception:
            return _safe_str(value)
        return value


class TextFormatter(logging.Formatter):
    """Formats a record as ``ts level logger: msg key=value ...``; a value with a space, a quote,
    an equals sign or a control character, or an empty one, is written as a JSON string. The
    traceback, if any, follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(self, record)
        exc = fields.pop("exc", None)
        stack = fields.pop("stack", None)
        line = (
            f"{fields.pop('ts')} {fields.pop('level')} {fields.pop('logger')}: {fields.pop('msg')}"
        )
        pairs = "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
        return "\n".join(part for part in (line + pairs, exc, stack) if part)


def _text_value(value: object) -> str:
    text = _safe_str(value)
    if not text or any(c in ' "=\\' or c < " " or c == "\x7f" for c in text):
        return msgspec.json.encode(text).decode()
    return text


class _Handler(logging.StreamHandler[IO[str]]):
    """The one handler `configure_logging` owns, told apart from anyone else's by its type."""


def configure_logging(
    fmt: str = "json", level: str = "info", stream: IO[str] | None = None
) -> None:
    """Send the ``resolverd`` logger's records at `level` and above to `stream` (standard error
    by default) in `fmt`, "json" or "text". Calling it again replaces the previous setup rather
    than adding to it. The logger stops propagating to the root logger, so that a root handler
    someone else installed does not print each line a second time.

    Raises ConfigError for an unknown format or level.
    """
    formatters: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}
    if fmt not in formatters:
        raise ConfigError(f"log format {fmt!r}: expected one of {', '.join(formatters)}")
    levelno = LEVELS.get(level.lower())
    if levelno is None:
        raise ConfigError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    logger = logging.getLogger("resolverd")
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
        old.close()
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatters[fmt]())
    logger.addHandler(handler)
    logger.setLevel(levelno)
    logger.propagate = False
