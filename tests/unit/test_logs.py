"""JsonFormatter and TextFormatter on hand-made records, configure_logging on the real logger."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resolverd.daemon.logs import JsonFormatter, TextFormatter, configure_logging
from resolverd.errors import ConfigError

RFC3339_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(
    msg: str = "reloaded %s",
    args: tuple[object, ...] = ("main",),
    *,
    levelno: int = logging.INFO,
    exc_info: Any = None,
    **extra: object,
) -> logging.LogRecord:
    made = logging.getLogger("resolverd.test").makeRecord(
        "resolverd.test", levelno, "daemon.py", 1, msg, args, exc_info, extra=extra
    )
    made.created = 1_712_136_300.0  # 2024-04-03T09:25:00Z
    made.msecs = 42.9
    return made


def as_json(line: str) -> dict[str, Any]:
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_json_line_has_the_core_fields_then_the_extras() -> None:
    line = JsonFormatter().format(record(registry="main", generation=4, feeds=["kite", "fyers"]))

    assert list(as_json(line).items()) == [
        ("ts", "2024-04-03T09:25:00.042Z"),
        ("level", "info"),
        ("logger", "resolverd.test"),
        ("msg", "reloaded main"),
        ("registry", "main"),
        ("generation", 4),
        ("feeds", ["kite", "fyers"]),
    ]


def test_a_json_line_without_extras_has_only_the_core_fields() -> None:
    assert set(as_json(JsonFormatter().format(record()))) == {"ts", "level", "logger", "msg"}


def test_a_message_with_line_breaks_stays_on_one_line() -> None:
    line = JsonFormatter().format(record("first\nsecond", ()))

    assert as_json(line)["msg"] == "first\nsecond"


def test_an_exception_is_included_as_its_formatted_traceback() -> None:
    try:
        raise ValueError("bad row")
    except ValueError:
        exc_info = sys.exc_info()

    fields = as_json(JsonFormatter().format(record(levelno=logging.ERROR, exc_info=exc_info)))

    assert fields["level"] == "error"
    assert fields["exc"].startswith("Traceback (most recent call last):\n")
    assert fields["exc"].endswith("ValueError: bad row")


def test_a_value_json_cannot_encode_goes_through_str() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    fields = as_json(JsonFormatter().format(record(thing=Opaque(), path=Path("/run/x"))))

    assert (fields["thing"], fields["path"]) == ("opaque-thing", "/run/x")


def test_a_value_msgspec_fails_on_costs_only_its_own_field() -> None:
    loop: list[object] = []
    loop.append(loop)

    fields = as_json(JsonFormatter().format(record(loop=loop, registry="main")))

    assert (fields["loop"], fields["registry"]) == ("[[...]]", "main")


def test_a_value_whose_str_raises_is_still_logged() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    fields = as_json(JsonFormatter().format(record(thing=Hostile())))

    assert "Hostile object at" in fields["thing"]


def test_an_extra_named_like_a_core_field_is_kept_beside_it() -> None:
    fields = as_json(JsonFormatter().format(record(level="custom", ts=1)))

    assert (fields["level"], fields["level_"], fields["ts_"]) == ("info", "custom", 1)


def test_a_text_line_reads_ts_level_logger_msg_then_pairs() -> None:
    line = TextFormatter().format(record(registry="main", reason="bad gate", empty=""))

    assert line == (
        "2024-04-03T09:25:00.042Z info resolverd.test: reloaded main registry=main "
        'reason="bad gate" empty=""'
    )


def test_a_text_line_puts_the_traceback_on_the_following_lines() -> None:
    try:
        raise ValueError("bad row")
    except ValueError:
        exc_info = sys.exc_info()

    lines = TextFormatter().format(record(exc_info=exc_info)).split("\n")

    assert lines[0].endswith("resolverd.test: reloaded main")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad row"


@pytest.fixture
def resolverd_logger() -> Iterator[logging.Logger]:
    """The real "resolverd" logger, put back as it was afterwards."""
    logger = logging.getLogger("resolverd")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    for handler in logger.handlers[:]:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_configure_logging_writes_json_lines_to_the_stream(
    resolverd_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)

    logging.getLogger("resolverd.daemon").info("swapped", extra={"generation": 5})

    (line,) = stream.getvalue().splitlines()
    fields = as_json(line)
    assert RFC3339_UTC_MS.fullmatch(fields["ts"])
    assert (fields["logger"], fields["msg"], fields["generation"]) == (
        "resolverd.daemon",
        "swapped",
        5,
    )


def test_configuring_twice_keeps_one_handler_writing_to_the_latest_stream(
    resolverd_logger: logging.Logger,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging("text", stream=second)

    logging.getLogger("resolverd.daemon").warning("once")

    assert len(resolverd_logger.handlers) == 1
    assert first.getvalue() == ""
    assert second.getvalue().endswith(" warning resolverd.daemon: once\n")


def test_records_below_the_level_are_dropped(resolverd_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)

    logging.getLogger("resolverd.daemon").info("quiet")
    logging.getLogger("resolverd.daemon").error("loud")

    assert [as_json(line)["msg"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_the_root_logger_is_left_alone(resolverd_logger: logging.Logger) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    configure_logging(stream=io.StringIO())

    assert (root.handlers, root.level) == (handlers, level)


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "verbose")])
def test_an_unknown_format_or_level_is_a_config_error(
    resolverd_logger: logging.Logger, fmt: str, level: str
) -> None:
    handlers = resolverd_logger.handlers[:]

    with pytest.raises(ConfigError, match=fmt if fmt == "xml" else level):
        configure_logging(fmt, level, stream=io.StringIO())

    assert resolverd_logger.handlers == handlers


def test_records_do_not_reach_a_root_handler_a_second_time(
    resolverd_logger: logging.Logger,
) -> None:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    root_handler = Collect()
    logging.getLogger().addHandler(root_handler)
    try:
        configure_logging(stream=io.StringIO())
        logging.getLogger("resolverd.daemon").error("once")
    finally:
        logging.getLogger().removeHandler(root_handler)

    assert root_handler.records == []
