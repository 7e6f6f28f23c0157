"""The layout conformance vectors: a small snapshot and the answers every reader must give.

``python -m tests.conformance.generate`` compiles `registry()` into ``vectors.snap`` and writes
``vectors.json`` beside it: forward lookups (hits; misses for an unknown key and for a known key
the broker does not list), reverse lookups per feed (hits and misses), for integer and string
tokens, with keys and tokens in non-ASCII UTF-8. The answers come from the Python client
reading the compiled bytes, and the expected ones written into `QUERIES` below must agree
with them, so the vectors are checked twice before they are written. Both files are committed;
tests/conformance/test_vectors.py checks the Python client against them and that compiling
again gives the same bytes, and tests/integration/test_c_reader.py checks include/resolverd.h.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

from resolverd import BrokerToken, Instrument, Registry, Resolver, compile_snapshot

HERE: Final = Path(__file__).resolve().parent
SNAPSHOT: Final = HERE / "vectors.snap"
VECTORS: Final = HERE / "vectors.json"
GENERATION: Final = 7
BUILD_TIME_NS: Final = 1_712_102_400_000_000_000
TRADE_DATE: Final = dt.date(2024, 4, 3)

Token = int | str | None


def _row(key: str, exchange: str, *tokens: tuple[str, str, int | str]) -> Instrument:
    return Instrument(
        key=key,
        exchange=exchange,
        segment=exchange,
        instrument_type="EQ",
        name=key.partition(":")[2],
        expiry=None,
        strike=0.0,
        tick_size=0.05,
        lot_size=1,
        isin="",
        exchange_token=0,
        tokens=tuple(sorted(BrokerToken(b, f, v) for b, f, v in tokens)),
    )


def registry() -> Registry:
    """Three brokers: kite (int, one feed), angel (int, two feeds sharing a token number) and
    upstox (string tokens); keys of 1 to 4 UTF-8 bytes per character, one longer than 8."""
    rows = [
        _row(
            "NSE:INFY",
            "NSE",
            ("kite", "kite", 408065),
            ("angel", "angel:NSE", 1594),
            ("upstox", "upstox", "NSE_EQ|INE009A01021"),
        ),
        _row(
            "NFO:NIFTY24APR22500CE",
            "NFO",
            ("kite", "kite", 17437186),
            ("angel", "angel:NFO", 1594),
            ("upstox", "upstox", "NSE_FO|68114"),
        ),
        _row("BSE:INFY", "BSE", ("kite", "kite", 128053508)),
        _row("NSE:CAFÉ", "NSE", ("kite", "kite", 2**64 - 2), ("upstox", "upstox", "NSE_EQ|CAFÉ")),
        _row("BSE:日本株", "BSE", ("angel", "angel:NSE", 0), ("upstox", "upstox", "BSE_EQ|日本")),
        _row("MCX:🛢CRUDE", "MCX", ("kite", "kite", 0), ("upstox", "upstox", "MCX_FO|🛢")),
        _row("NSE:A", "NSE", ("kite", "kite", 1)),
    ]
    return Registry.from_instruments(rows, trade_date=TRADE_DATE)


# (key, broker): the answer; None is a miss.
FORWARD: Final[list[tuple[str, str, Token]]] = [
    ("NSE:INFY", "kite", 408065),
    ("NSE:INFY", "angel", 1594),
    ("NSE:INFY", "upstox", "NSE_EQ|INE009A01021"),
    ("NFO:NIFTY24APR22500CE", "kite", 17437186),
    ("NFO:NIFTY24APR22500CE", "angel", 1594),
    ("NFO:NIFTY24APR22500CE", "upstox", "NSE_FO|68114"),
    ("BSE:INFY", "kite", 128053508),
    ("NSE:CAFÉ", "kite", 2**64 - 2),
    ("NSE:CAFÉ", "upstox", "NSE_EQ|CAFÉ"),
    ("BSE:日本株", "angel", 0),
    ("BSE:日本株", "upstox", "BSE_EQ|日本"),
    ("MCX:🛢CRUDE", "kite", 0),
    ("MCX:🛢CRUDE", "upstox", "MCX_FO|🛢"),
    ("NSE:A", "kite", 1),
    # known keys the broker does not list
    ("BSE:INFY", "angel", None),
    ("BSE:INFY", "upstox", None),
    ("NSE:CAFÉ", "angel", None),
    ("BSE:日本株", "kite", None),
    ("NSE:A", "upstox", None),
    # unknown keys
    ("NSE:NOPE", "kite", None),
    ("NSE:NOPE", "upstox", None),
    ("", "kite", None),
    ("nse:infy", "kite", None),
    ("NSE:INFY ", "kite", None),
    ("NSE:CAFE", "kite", None),
    ("NSE:CAFE\u0301", "kite", None),  # É decomposed: other bytes, another key
    ("NSE:AA", "kite", None),
    ("NFO:NIFTY24APR22500CE-AND-A-KEY-LONGER-THAN-ANY-STORED", "kite", None),
]

# (feed, token): the key; None is a miss.
REVERSE: Final[list[tuple[str, int | str, str | None]]] = [
    ("kite", 408065, "NSE:INFY"),
    ("kite", 17437186, "NFO:NIFTY24APR22500CE"),
    ("kite", 128053508, "BSE:INFY"),
    ("kite", 2**64 - 2, "NSE:CAFÉ"),
    ("kite", 0, "MCX:🛢CRUDE"),
    ("kite", 1, "NSE:A"),
    ("angel:NSE", 1594, "NSE:INFY"),
    ("angel:NFO", 1594, "NFO:NIFTY24APR22500CE"),
    ("angel:NSE", 0, "BSE:日本株"),
    ("upstox", "NSE_EQ|INE009A01021", "NSE:INFY"),
    ("upstox", "NSE_FO|68114", "NFO:NIFTY24APR22500CE"),
    ("upstox", "NSE_EQ|CAFÉ", "NSE:CAFÉ"),
    ("upstox", "BSE_EQ|日本", "BSE:日本株"),
    ("upstox", "MCX_FO|🛢", "MCX:🛢CRUDE"),
    # misses
    ("kite", 2, None),
    ("kite", 408066, None),
    ("kite", 1594, None),  # angel's token, not kite's
    ("kite", 2**64 - 1, None),  # NO_TOKEN itself
    ("angel:NFO", 0, None),  # in the other angel feed only
    ("angel:NSE", 17437186, None),
    ("upstox", "NSE_EQ|INE009A01022", None),
    ("upstox", "", None),
    ("upstox", "nse_fo|68114", None),
    ("upstox", "408065", None),
]


def vectors(snapshot: bytes | bytearray) -> dict[str, Any]:
    """The vectors document for `snapshot`, with every answer read back by the Python client
    (strict and fingerprint mode) and checked against FORWARD and REVERSE."""
    with (
        Resolver(bytes(snapshot), verify=True) as loose,
        Resolver(bytes(snapshot), strict=True) as strict,
    ):
        forward = []
        for key, broker, expected in FORWARD:
            for resolver in (loose, strict):
                got = resolver.get_token(key, broker)
                if got != expected:
                    raise AssertionError(f"token({key!r}, {broker!r}) = {got!r}, not {expected!r}")
            ordinal = int(loose.ordinals([key])[0])
            forward.append({"key": key, "broker": broker, "token": expected, "ordinal": ordinal})
        reverse = []
        for feed, token, expected_key in REVERSE:
            for resolver in (loose, strict):
                got = resolver.get_key(token, feed)
                if got != expected_key:
                    raise AssertionError(
                        f"key({token!r}, {feed!r}) = {got!r}, not {expected_key!r}"
                    )
            reverse.append({"feed": feed, "token": token, "key": expected_key})
        header = loose.header
        return {
            "layout_version": [header.version_major, header.version_minor],
            "generation": header.generation,
            "build_time_ns": header.build_time_ns,
            "trade_date": header.trade_date,
            "instrument_count": header.instrument_count,
            "file_size": header.file_size,
            "payload_checksum": f"{header.payload_checksum:#018x}",
            "brokers": {b: loose.broker_kind(b) for b in loose.brokers},
            "feeds": {
                f: {"broker": loose.feed_broker(f), "kind": loose.feed_kind(f)} for f in loose.feeds
            },
            "keys": list(loose),
            "forward": forward,
            "reverse": reverse,
        }


def build() -> tuple[bytearray, str]:
    """The snapshot bytes and the vectors.json text, exactly as committed."""
    snapshot = compile_snapshot(registry(), generation=GENERATION, build_time_ns=BUILD_TIME_NS)
    text = json.dumps(vectors(snapshot), indent=1, ensure_ascii=False) + "\n"
    return snapshot, text


def main() -> None:
    snapshot, text = build()
    SNAPSHOT.write_bytes(snapshot)
    VECTORS.write_text(text, encoding="utf-8")
    print(f"wrote {SNAPSHOT.name} ({len(snapshot)} bytes) and {VECTORS.name}")


if __name__ == "__main__":
    main()
