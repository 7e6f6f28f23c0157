"""Bad input through the running daemon: a reload from a bad source is refused with an error that
names the source, the row and the field, and the generation it would have replaced stays
published, byte for byte, under readers that keep resolving it.

The catalog follows the loaders' and gates' unit tests (tests/unit/test_loader_*.py,
test_validate.py) but runs each case end to end: the source file is replaced, ``reload`` goes
over the control socket, the build worker refuses the file and ``status`` reports it. One daemon
per format serves every case of that format; each case puts the good file back and checks that
a good reload then succeeds (finding the payload unchanged), and the last test publishes a new
generation from a changed good file after all of Kite's bad ones.

A message names the row and the field where the fault has them: a bad byte or a row cut short
is a fault of the row, an empty file or a fall in size one of the whole file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resolverd import Resolver
from resolverd.daemon.control import request
from resolverd.errors import EX_DATAERR

from .daemons import HEADER, Daemon, wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# A reload builds in the daemon's worker process: generous, for a loaded 2-core machine.
RELOAD_TIMEOUT = 60.0


@dataclass(frozen=True)
class Format:
    """A source format the daemon serves, and a good file of it."""

    name: str
    file: str
    good: str

    @property
    def label(self) -> str:
        """How errors name the source (`FORMAT=FILE NAME`)."""
        return f"{self.name}={self.file}"


@dataclass(frozen=True)
class Case:
    """One bad source file and what its refusal must say."""

    id: str
    format: Format
    content: str | bytes
    where: str  # how the message starts: the source, then the row and field where they apply
    detail: str  # what is wrong, a fragment of the message
    reason: str = "source"  # status' last_reload.reason: "source" (a row), "gate" (the whole)


# -- Kite: the full catalog ---------------------------------------------------------------------

AARTI = "1793,7,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE"
SBIN = "779521,3045,SBIN,STATE BANK OF INDIA,0,,0,0.05,1,EQ,NSE,NSE"
RELIANCE = "738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE"
BSE_AARTI = "134197252,524208,AARTIIND,AARTI INDUSTRIES.,0,,0,0.05,1,EQ,BSE,BSE"
NIFTY_CALL = "17437186,68114,NIFTY24APR22500CE,NIFTY,0,25-04-2024,22500,0.05,50,CE,NFO-OPT,NFO"
NIFTY_PUT = "17437442,68115,NIFTY24APR22500PE,NIFTY,0,25-04-2024,22500,0.05,50,PE,NFO-OPT,NFO"
NIFTY_FUT = "13368834,52222,NIFTY24APRFUT,NIFTY,0,25-04-2024,0,0.05,50,FUT,NFO-FUT,NFO"
BANK_CALL = (
    "10240002,40000,BANKNIFTY24APR48000CE,BANKNIFTY,0,24-04-2024,48000,0.05,15,CE,NFO-OPT,NFO"
)
KITE_ROWS = (AARTI, SBIN, RELIANCE, BSE_AARTI, NIFTY_CALL, NIFTY_PUT, NIFTY_FUT, BANK_CALL)
# In the file, with the header as row 1:
SBIN_ROW, BSE_AARTI_ROW, NIFTY_CALL_ROW, NEXT_ROW = 3, 5, 6, 10


def kite_text(*rows: str, header: str = HEADER) -> str:
    return "".join(f"{line}\n" for line in (header, *rows))


def kite_with(row: str, old: str, new: str) -> str:
    """The good file with `old` replaced by `new` in one row."""
    assert old in row
    return kite_text(*(line.replace(old, new) if line == row else line for line in KITE_ROWS))


KITE = Format("kite", "instruments.csv", kite_text(*KITE_ROWS))
K = KITE.label
GOOD = KITE.good


def kite_cases() -> list[Case]:
    without_lot_size = [
        r.replace(",1,EQ,", ",EQ,").replace(",50,", ",").replace(",15,", ",") for r in KITE_ROWS
    ]
    expired = [
        r.replace("25-04-2024", "28-03-2024").replace("24-04-2024", "27-03-2024") for r in KITE_ROWS
    ]
    return [
        Case(
            "duplicate-key",
            KITE,
            kite_text(*KITE_ROWS, AARTI.replace("1793,7,", "2049,8,")),
            f"{K}: row {NEXT_ROW}, field tradingsymbol: ",
            "NSE:AARTIIND is listed twice: rows 2 and 10",
        ),
        Case(
            "token-used-twice-in-the-feed",
            KITE,
            # The same token under another exchange: a shifted column, say.
            kite_text(
                *KITE_ROWS, AARTI.replace(",AARTIIND,", ",AARTIX,").replace(",NSE,NSE", ",BSE,BSE")
            ),
            f"{K}: row {NEXT_ROW}, field token: ",
            "token 1793 of feed kite is used twice: by NSE:AARTIIND (kite=instruments.csv row 2)"
            " and by BSE:AARTIX here",
        ),
        Case(
            "token-breaks-exchange-token-shift-8-or-segment",
            KITE,
            kite_with(NIFTY_CALL, ",68114,", ",68116,"),
            f"{K}: row {NIFTY_CALL_ROW}, field instrument_token: ",
            "instrument_token 17437186 does not match exchange_token 68116",
        ),
        Case(
            "non-numeric-token",
            KITE,
            kite_with(SBIN, "779521", "7795x1"),
            f"{K}: row {SBIN_ROW}, field instrument_token: ",
            "'7795x1' is not an integer",
        ),
        Case(
            "token-beyond-32-bits",
            KITE,
            kite_with(SBIN, "779521", str(2**32)),
            f"{K}: row {SBIN_ROW}, field instrument_token: ",
            "'4294967296' is out of range 0..4294967295",
        ),
        Case(
            "token-of-30-digits",
            KITE,
            kite_with(SBIN, "779521", "9" * 30),
            f"{K}: row {SBIN_ROW}, field instrument_token: ",
            "(30 characters) is out of range",
        ),
        Case(
            "negative-exchange-token",
            KITE,
            kite_with(SBIN, ",3045,", ",-3045,"),
            f"{K}: row {SBIN_ROW}, field exchange_token: ",
            "'-3045' is negative",
        ),
        Case(
            "required-field-empty",
            KITE,
            kite_with(SBIN, ",SBIN,", ",,"),
            f"{K}: row {SBIN_ROW}, field tradingsymbol: ",
            "is empty",
        ),
        Case(
            "required-column-missing",
            KITE,
            kite_text(*without_lot_size, header=HEADER.replace(",lot_size", "")),
            f"{K}: row 1, field lot_size: ",
            "the header has no column 'lot_size'",
        ),
        Case(
            "expiry-not-a-date",
            KITE,
            kite_with(NIFTY_CALL, "25-04-2024", "2024/04/25"),
            f"{K}: row {NIFTY_CALL_ROW}, field expiry: ",
            "'2024/04/25' is not a date",
        ),
        Case(
            "expiry-on-the-31st-of-february",
            KITE,
            kite_with(NIFTY_CALL, "25-04-2024", "31-02-2024"),
            f"{K}: row {NIFTY_CALL_ROW}, field expiry: ",
            "'31-02-2024' is not a date: day is out of range",
        ),
        Case(
            "tick-size-not-a-number",
            KITE,
            kite_with(NIFTY_CALL, ",0.05,", ",0.05x,"),
            f"{K}: row {NIFTY_CALL_ROW}, field tick_size: ",
            "'0.05x' is not a number",
        ),
        Case(
            "strike-not-finite",
            KITE,
            kite_with(NIFTY_CALL, ",22500,", ",nan,"),
            f"{K}: row {NIFTY_CALL_ROW}, field strike: ",
            "'nan' is not a finite number",
        ),
        Case(
            "negative-strike",
            KITE,
            kite_with(NIFTY_CALL, ",22500,", ",-22500,"),
            f"{K}: row {NIFTY_CALL_ROW}, field strike: ",
            "'-22500' is negative",
        ),
        Case(
            "lot-size-not-whole",
            KITE,
            kite_with(NIFTY_CALL, ",50,", ",50.5,"),
            f"{K}: row {NIFTY_CALL_ROW}, field lot_size: ",
            "'50.5' is not an integer",
        ),
        Case(
            "non-utf8-byte",
            KITE,
            GOOD.replace("AARTI INDUSTRIES.", "AARTI \xe9").encode("latin-1"),
            f"{K}: row {BSE_AARTI_ROW}, field name: ",
            "byte 0xe9 at offset",
        ),
        Case(
            "an-image-instead-of-a-csv",
            KITE,
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
            f"{K}: row 1: ",
            "byte 0x89 at offset 0 is not UTF-8",
        ),
        Case(
            "an-html-error-page",
            KITE,
            "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
            f"{K}: row 1, field instrument_token: ",
            "the header has no column 'instrument_token'",
        ),
        Case("empty-file", KITE, b"", f"{K}: ", "no instruments: the file is empty"),
        Case(
            "header-only",
            KITE,
            kite_text(),
            f"{K}: ",
            "no instruments: the header has no data rows after it",
        ),
        Case(
            "cut-off-mid-row",
            KITE,
            GOOD[: GOOD.index("NIFTY24APR22500CE") + 5],
            f"{K}: row {NIFTY_CALL_ROW}, field name: ",
            "3 fields, but the header has 12",
        ),
        Case(
            "gzip-cut-off",
            KITE,
            gzip.compress(GOOD.encode())[:-12],
            f"{K}: ",
            "the gzip stream is cut off or corrupt",
        ),
        Case(
            "field-beyond-the-csv-limit",
            KITE,
            kite_with(SBIN, "STATE BANK OF INDIA", "N" * 200_000),
            f"{K}: row {SBIN_ROW}: ",
            "not valid CSV",
        ),
        Case(
            "row-count-fell-beyond-max-drop",
            KITE,
            kite_text(*KITE_ROWS[:6]),  # 6 of 8: a fall of 25%, the default allows 20%
            "broker kite: 6 instruments against 8 in the previous snapshot, a fall of 25.0%",
            f"a partial download of {K}?",
            reason="gate",
        ),
        Case(
            "stale-file-whose-contracts-expired",
            KITE,
            kite_text(*expired),  # the four derivatives expired before the trade date
            "broker kite: 4 instruments against 8 in the previous snapshot, a fall of 50.0%",
            f"{K} is stale: 4 of its 8 contracts expired before the trade date 2024-04-03",
            reason="gate",
        ),
    ]


# -- the other formats: a few cases each on their fixtures ---------------------------------------


def fixture_format(name: str, path: str) -> Format:
    return Format(name, Path(path).name, (FIXTURES / path).read_text(encoding="utf-8"))


FYERS = fixture_format("fyers", "fyers/symbol_masters.csv")
UPSTOX = fixture_format("upstox", "upstox/complete.json")
ANGEL = fixture_format("angel", "angel/OpenAPIScripMaster.json")
DHAN = fixture_format("dhan", "dhan/api-scrip-master.csv")


def replaced(form: Format, old: str, new: str) -> str:
    assert form.good.count(old) == 1, f"{old!r} is not unique in the {form.name} fixture"
    return form.good.replace(old, new)


def other_cases() -> list[Case]:
    fyers_lines = FYERS.good.splitlines(keepends=True)
    angel_future = (
        '"symbol":"NIFTY25APR24FUT","name":"NIFTY","expiry":"25APR2024","strike":"-1.000000",'
    )
    return [
        Case(
            "fytoken-breaks-the-encoding-rule",
            FYERS,
            replaced(FYERS, "101124042568114,NIFTY", "101124042568115,NIFTY"),
            f"{FYERS.label}: row 14, field Fytoken: ",
            "'101124042568115' does not end with Scrip code 68114",
        ),
        Case(
            "cut-off-mid-row",
            FYERS,
            FYERS.good[:-40],
            f"{FYERS.label}: row 30, field Scrip code: ",
            "(is the file cut off?)",
        ),
        Case(
            "same-row-twice",
            FYERS,
            FYERS.good + fyers_lines[1],
            f"{FYERS.label}: row 31, field exchange_token: ",
            "exchange token 3045 is listed twice in this source",
        ),
        Case(
            "row-count-fell-beyond-max-drop",
            FYERS,
            "".join(fyers_lines[:10]),
            "broker fyers: 10 instruments against 29 in the previous snapshot",
            f"a partial download of {FYERS.label}?",
            reason="gate",
        ),
        Case(
            "lot-size-of-the-wrong-json-type",
            UPSTOX,
            replaced(
                UPSTOX,
                '"lot_size":50,"freeze_quantity":1800.0,"exchange_token":"68114"',
                '"lot_size":"50","freeze_quantity":1800.0,"exchange_token":"68114"',
            ),
            f"{UPSTOX.label}: row 13, field lot_size: ",
            "Expected `int | null`, got `str`",
        ),
        Case(
            "cut-off-inside-an-object",
            UPSTOX,
            UPSTOX.good[: UPSTOX.good.index('"NSE_FO|68114"')],
            f"{UPSTOX.label}: row 13: ",
            "the JSON is cut off",
        ),
        Case(
            "non-numeric-token",
            ANGEL,
            replaced(ANGEL, '"token":"52222"', '"token":"52x22"'),
            f"{ANGEL.label}: row 14, field token: ",
            "'52x22' is not an integer",
        ),
        Case(
            "required-key-missing",
            ANGEL,
            replaced(ANGEL, f'{angel_future}"lotsize":"50",', angel_future),
            f"{ANGEL.label}: row 14, field lotsize: ",
            "is missing",
        ),
        Case(
            "non-numeric-security-id",
            DHAN,
            replaced(DHAN, "NSE,D,68114,", "NSE,D,68x14,"),
            f"{DHAN.label}: row 13, field SEM_SMST_SECURITY_ID: ",
            "'68x14' is not an integer",
        ),
        Case(
            "non-utf8-byte",
            DHAN,
            replaced(DHAN, "NIFTY 25 APR 22500 CALL", "NIFTY 25 APR 22500 CALL \xe9").encode(
                "latin-1"
            ),
            f"{DHAN.label}: row 13, field SEM_CUSTOM_SYMBOL: ",
            "byte 0xe9 at offset",
        ),
    ]


# Kite last: the final test reuses the daemon that refused all of its cases.
CATALOG = [*other_cases(), *kite_cases()]


# -- the daemons --------------------------------------------------------------------------------


@dataclass
class Served:
    """A daemon serving one format's good file, and what it published at start."""

    format: Format
    daemon: Daemon
    source: Path
    status: dict[str, Any]
    contents: list[tuple[str, str, str, int | str]]  # (key, broker, feed, token) of every row


class Daemons:
    """One daemon at a time, for the format at hand: the catalog runs format by format."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current: Served | None = None

    def __call__(self, form: Format) -> Served:
        if self.current is None or self.current.format != form:
            self.close()
            self.current = self._start(form)
        return self.current

    def _start(self, form: Format) -> Served:
        sources = self.root / f"{form.name}-sources"
        directory = self.root / f"{form.name}-shm"
        sources.mkdir()
        directory.mkdir()
        source = sources / form.file
        replace_file(source, form.good)
        # Not watched: each reload is the one a case asks for, so the counts are exact.
        daemon = Daemon(
            directory, [f"{form.name}={source}"], RESOLVERD__REGISTRIES__UNIVERSE__WATCH="false"
        )
        daemon.start()
        with Resolver.open("universe", directory=directory) as reader:
            contents = read_contents(reader)
        return Served(form, daemon, source, daemon.status(), contents)

    def close(self) -> None:
        if self.current is not None:
            code = self.current.daemon.stop()
            self.current = None
            assert code == 0


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    running = Daemons(tmp_path_factory.mktemp("bad-input"))
    yield running
    running.close()


def replace_file(path: Path, content: str | bytes) -> None:
    """Replace the file atomically, as a broker dump is replaced."""
    temporary = path.with_name(f".{path.name}.tmp")
    data = content.encode() if isinstance(content, str) else content
    temporary.write_bytes(data)
    os.replace(temporary, path)


def read_contents(reader: Resolver) -> list[tuple[str, str, str, int | str]]:
    rows = []
    for ordinal in range(len(reader)):
        record = reader.record_at(ordinal)
        rows += [(record.key, t.broker, t.feed, t.value) for t in record.tokens]
    assert rows, "the good file published nothing to check against"
    return rows


def assert_resolves(reader: Resolver, contents: list[tuple[str, str, str, int | str]]) -> None:
    for key, broker, feed, token in contents:
        assert reader.token(key, broker) == token
        assert reader.key(token, feed) == key


def published_files(daemon: Daemon, status: dict[str, Any]) -> dict[str, Any]:
    """What readers see: the directory's files and the current snapshot's identity and bytes."""
    snapshot = Path(status["snapshot"])
    stat = snapshot.stat()
    return {
        "files": sorted(p.name for p in daemon.directory.iterdir()),
        "snapshot": (stat.st_ino, stat.st_size, stat.st_mtime_ns),
        "sha256": hashlib.sha256(snapshot.read_bytes()).hexdigest(),
    }


SERVING = ("generation", "checksum", "snapshot", "instruments", "trade_date", "feeds")


def reload(daemon: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = request(daemon.control, "reload", "universe", timeout=RELOAD_TIMEOUT)[
        "universe"
    ]
    return result


@pytest.mark.parametrize("case", CATALOG, ids=[f"{c.format.name}-{c.id}" for c in CATALOG])
def test_a_bad_source_is_refused_naming_it_and_the_live_generation_stays(
    daemons: Callable[[Format], Served], case: Case
) -> None:
    served = daemons(case.format)
    daemon = served.daemon
    before = daemon.status()
    assert {k: before[k] for k in SERVING} == {k: served.status[k] for k in SERVING}
    files = published_files(daemon, before)
    with Resolver.open("universe", directory=daemon.directory) as reader:
        try:
            replace_file(served.source, case.content)
            refused = reload(daemon)
        finally:
            replace_file(served.source, case.format.good)

        last = refused["last_reload"]
        error = last["error"]
        assert (last["result"], last["reason"]) == ("failed", case.reason), error
        assert error.startswith(case.where), error
        assert case.detail in error, error
        assert case.format.label in error
        assert last["exit_code"] == EX_DATAERR
        assert last["trigger"] == "resolverd reload"
        assert refused["reloads"] == {
            **before["reloads"],
            "failed": before["reloads"]["failed"] + 1,
        }
        assert refused["retry_at"] is not None  # a failure is retried later

        after = daemon.status()
        assert after["last_reload"] == last
        for status in (refused, after):
            assert {k: status[k] for k in SERVING} == {k: before[k] for k in SERVING}
            assert status["linked_generations"] == before["linked_generations"]
        assert published_files(daemon, after) == files
        assert reader.generation == before["generation"]
        assert_resolves(reader, served.contents)
        with Resolver.open("universe", directory=daemon.directory) as late:
            assert late.generation == before["generation"]
            assert_resolves(late, served.contents)

        # The good file back: the next reload succeeds, finding what is already served.
        good = reload(daemon)
        assert good["last_reload"]["result"] == "unchanged", good["last_reload"]
        assert good["reloads"]["failed"] == refused["reloads"]["failed"]
        assert good["retry_at"] is None
        assert {k: good[k] for k in SERVING} == {k: before[k] for k in SERVING}
        assert reader.generation == before["generation"]


def test_after_every_bad_file_a_changed_good_one_is_published_and_followed(
    daemons: Callable[[Format], Served],
) -> None:
    served = daemons(KITE)
    daemon = served.daemon
    before = daemon.status()
    with Resolver.open("universe", directory=daemon.directory) as reader:
        assert reader.token("NSE:SBIN", "kite") == 779521
        replace_file(served.source, kite_with(SBIN, "779521,3045,", "2049,8,"))
        try:
            status = reload(daemon)
        finally:
            replace_file(served.source, KITE.good)
        assert status["last_reload"]["result"] == "ok", status["last_reload"]
        assert status["generation"] == before["generation"] + 1
        wait_for(lambda: reader.get_token("NSE:SBIN", "kite") == 2049, "the reader to follow")
        assert reader.generation == status["generation"]
        assert reader.get_key(779521, "kite") is None
