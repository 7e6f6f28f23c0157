"""The PostgreSQL registry: its rules held by the database, ingest, the streaming loader, and
what its errors may and may not show."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

from resolverd import db  # noqa: E402  (after the skip: db imports psycopg)
from resolverd.compiler import compile_snapshot  # noqa: E402
from resolverd.errors import (  # noqa: E402
    ConfigError,
    RegistryError,
    SourceError,
    UnavailableError,
)
from resolverd.loaders import load_kite  # noqa: E402
from resolverd.loaders.postgres import is_dsn, load_registry  # noqa: E402
from resolverd.model import BrokerToken, Instrument, Registry  # noqa: E402
from resolverd.shm_layout import read_header  # noqa: E402
from resolverd.synthetic import BROKERS, generate_universe  # noqa: E402

pytestmark = pytest.mark.integration

TABLES = ("instrument_keys", "broker_feeds", "broker_instrument_tokens")
TRADE_DATE = dt.date(2024, 4, 3)
PASSWORD = "s3cret-Pa55word"


def instrument(
    key: str,
    exchange_token: int,
    *tokens: tuple[str, str, int | str],
    lot_size: int = 1,
    expiry: dt.date | None = None,
    name: str = "",
) -> Instrument:
    """An NSE cash instrument (or an NFO future when it has an expiry) with the given tokens."""
    exchange, segment, kind = ("NFO", "NFO-FUT", "FUT") if expiry else ("NSE", "NSE", "EQ")
    return Instrument(
        key=key,
        exchange=exchange,
        segment=segment,
        instrument_type=kind,
        name=name,
        expiry=expiry,
        tick_size=0.05,
        lot_size=lot_size,
        exchange_token=exchange_token,
        tokens=tuple(BrokerToken(broker, feed, value) for broker, feed, value in tokens),
    )


SBIN = instrument("NSE:SBIN", 3045, ("kite", "kite", 779521), name="STATE BANK OF INDIA")
INFY = instrument("NSE:INFY", 1594, ("kite", "kite", 408065), name="INFOSYS")
NIFTY_FUT = instrument(
    "NFO:NIFTY24APRFUT",
    35001,
    ("kite", "kite", 8960002),
    lot_size=50,
    expiry=dt.date(2024, 4, 25),
    name="NIFTY",
)


def contents(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the registry's tables, in a fixed order."""
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {db.SCHEMA}.{table} ORDER BY 1, 2").fetchall()
            for table in TABLES
        }


def records(registry: Registry) -> dict[str, Instrument]:
    """The registry's records by key, tokens in broker order, for comparing registries."""
    return {
        r.key: Instrument(**{**_fields(r), "tokens": tuple(sorted(r.tokens))})
        for r in registry.instruments()
    }


def _fields(r: Instrument) -> dict[str, Any]:
    return {name: getattr(r, name) for name in r.__struct_fields__}


def payload_checksum(registry: Registry) -> int:
    return read_header(compile_snapshot(registry, build_time_ns=0)).payload_checksum


def with_password(dsn: str, **extra: str) -> str:
    """`dsn` with a password (which a trust server ignores) and any other settings added."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if "password" in conninfo_to_dict(dsn):
        return make_conninfo(dsn, **extra)
    return make_conninfo(dsn, password=PASSWORD, **extra)


def error_texts(error: BaseException) -> Iterator[str]:
    """The text of an error and of every exception chained to it."""
    seen: BaseException | None = error
    while seen is not None:
        yield str(seen)
        seen = seen.__cause__ or seen.__context__


# -- schema ------------------------------------------------------------------------------------


def test_init_schema_twice_changes_nothing_and_keeps_the_data(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [SBIN, INFY], ["kite"], source="test")
    before = contents(registry_dsn)
    db.init_schema(registry_dsn)
    db.init_schema(registry_dsn)
    assert contents(registry_dsn) == before
    with psycopg.connect(registry_dsn) as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'notify_changed'"
        ).fetchone()
        version = conn.execute(f"SELECT version FROM {db.SCHEMA}.schema_version").fetchall()
    assert triggers == (3,)
    assert version == [(db.SCHEMA_VERSION,)]


def test_a_registry_of_another_schema_version_is_refused(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [SBIN], ["kite"], source="test")
    with psycopg.connect(registry_dsn) as conn:
        conn.execute(f"UPDATE {db.SCHEMA}.schema_version SET version = version + 1")
    with pytest.raises(ConfigError, match="schema version 2"):
        db.init_schema(registry_dsn)
    with pytest.raises(ConfigError, match="schema version 2"):
        load_registry(registry_dsn)


# Each statement breaks one rule; NSE:SBIN (kite token 779521, exchange token 3045) and the int
# feed kite are registered before it runs.
VIOLATIONS = {
    "instrument_keys_pkey": "INSERT INTO {s}.instrument_keys"
    " (instrument_key, exchange, segment, instrument_type) VALUES ('NSE:SBIN', 'NSE', 'NSE', 'EQ')",
    "instrument_keys_exchange_token_key": "INSERT INTO {s}.instrument_keys"
    " (instrument_key, exchange, segment, instrument_type, exchange_token)"
    " VALUES ('NSE:SBIN-X', 'NSE', 'NSE', 'EQ', 3045)",
    "lot_size_non_negative": "UPDATE {s}.instrument_keys SET lot_size = -1",
    "instrument_key_is_trimmed": "UPDATE {s}.instrument_keys SET instrument_key = 'NSE:SBIN '",
    "strike_is_finite_non_negative": "UPDATE {s}.instrument_keys SET strike = 'NaN'",
    "isin_is_empty_or_12_characters": "UPDATE {s}.instrument_keys SET isin = 'INE062A0102'",
    "broker_instrument_tokens_feed_token_key": "INSERT INTO {s}.instrument_keys"
    " (instrument_key, exchange, segment, instrument_type) VALUES ('NSE:INFY', 'NSE', 'NSE', 'EQ');"
    " INSERT INTO {s}.broker_instrument_tokens"
    " VALUES ('NSE:INFY', 'kite', 'kite', 'int', '779521')",
    "int_token_is_decimal": "UPDATE {s}.broker_instrument_tokens SET token = '77x521'",
    "int_token_fits_uint64": "UPDATE {s}.broker_instrument_tokens"
    " SET token = '18446744073709551615'",
    "broker_instrument_tokens_feed_fkey": "UPDATE {s}.broker_feeds SET token_kind = 'str'",
    "token_kind_is_int_or_str": "INSERT INTO {s}.broker_feeds VALUES ('x', 'x', 'float')",
    "broker_instrument_tokens_instrument_key_fkey": "INSERT INTO {s}.broker_instrument_tokens"
    " VALUES ('NSE:NOPE', 'kite', 'kite', 'int', '1')",
}


@pytest.mark.parametrize("constraint", sorted(VIOLATIONS))
def test_the_database_refuses_a_row_that_breaks_a_rule_naming_the_constraint(
    registry_dsn: str, constraint: str
) -> None:
    db.ingest(registry_dsn, [SBIN], ["kite"], source="test")
    before = contents(registry_dsn)
    with pytest.raises(RegistryError) as caught, db.connect(registry_dsn) as conn:
        conn.execute(VIOLATIONS[constraint].format(s=db.SCHEMA))
    assert f"constraint {constraint} refused a row" in str(caught.value)
    assert contents(registry_dsn) == before


def test_a_renamed_key_cascades_to_its_tokens(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [SBIN], ["kite"], source="test")
    with db.connect(registry_dsn) as conn:
        conn.execute(f"UPDATE {db.SCHEMA}.instrument_keys SET instrument_key = 'NSE:SBIN-NEW'")
    assert contents(registry_dsn)["broker_instrument_tokens"] == [
        ("NSE:SBIN-NEW", "kite", "kite", "int", "779521")
    ]


# -- ingest ------------------------------------------------------------------------------------


def test_ingest_refuses_a_token_twice_in_a_feed_naming_the_constraint_and_values(
    registry_dsn: str,
) -> None:
    clash = instrument("NSE:INFY", 1594, ("kite", "kite", 779521))
    with pytest.raises(RegistryError) as caught:
        db.ingest(registry_dsn, [SBIN, clash], ["kite"], source="test")
    message = str(caught.value)
    assert "broker_instrument_tokens_feed_token_key" in message
    assert "(feed, token)=(kite, 779521)" in message


def test_ingest_refuses_two_keys_on_one_exchange_token(registry_dsn: str) -> None:
    twin = instrument("NSE:SBIN-BE", 3045, ("kite", "kite", 779522))
    with pytest.raises(RegistryError) as caught:
        db.ingest(registry_dsn, [SBIN, twin], ["kite"], source="test")
    assert "instrument_keys_exchange_token_key" in str(caught.value)
    assert "(exchange, segment, exchange_token)=(NSE, NSE, 3045)" in str(caught.value)


def test_ingest_refuses_a_negative_lot_size_naming_the_constraint(registry_dsn: str) -> None:
    bad = instrument("NSE:INFY", 1594, ("kite", "kite", 408065), lot_size=-5)
    with pytest.raises(RegistryError, match="constraint lot_size_non_negative refused"):
        db.ingest(registry_dsn, [SBIN, bad], ["kite"], source="test")


def test_ingest_refuses_a_key_listed_twice_naming_both_rows(registry_dsn: str) -> None:
    again = instrument("NSE:SBIN", 9999, ("kite", "kite", 1))
    with pytest.raises(RegistryError, match="test: key NSE:SBIN is listed twice: rows 2 and 5"):
        db.ingest(registry_dsn, [SBIN, INFY, again], ["kite"], source="test", rows=[2, 3, 5])


def test_ingest_refuses_a_non_numeric_token_in_an_int_feed(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [SBIN], ["kite"], source="test")
    text = instrument("NSE:SBIN", 3045, ("kite", "kite", "NSE_EQ|779521"))
    with pytest.raises(RegistryError, match="feed kite holds int tokens of broker kite; test"):
        db.ingest(registry_dsn, [text], ["kite"], source="test")


def test_ingest_refuses_a_token_of_a_broker_it_does_not_carry(registry_dsn: str) -> None:
    both = instrument("NSE:SBIN", 3045, ("kite", "kite", 779521), ("angel", "angel:NSE", 3045))
    with pytest.raises(ConfigError, match="row 1 carries a token of broker 'angel'"):
        db.ingest(registry_dsn, [both], ["kite"], source="test")


def test_a_failed_ingest_leaves_the_registry_exactly_as_it_was(registry_dsn: str) -> None:
    universe = list(generate_universe(2000).instruments())
    db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    before = contents(registry_dsn)
    changed = [Instrument(**{**_fields(r), "lot_size": r.lot_size + 1}) for r in universe[:-1]]
    # The last record takes the first one's kite token: refused, after everything else
    # (metadata updates, token replacement) has been staged and applied.
    last = universe[-1]
    thief = Instrument(**{**_fields(last), "tokens": (universe[0].tokens[0], *last.tokens[1:])})
    with pytest.raises(RegistryError, match="broker_instrument_tokens_feed_token_key"):
        db.ingest(registry_dsn, [*changed, thief], BROKERS, source="synthetic")
    assert contents(registry_dsn) == before


def test_ingest_notifies_the_registry_channel_once_per_table_it_writes(registry_dsn: str) -> None:
    with psycopg.connect(registry_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {db.NOTIFY_CHANNEL}")
        db.ingest(registry_dsn, [SBIN, INFY], ["kite"], source="test")
        # All three arrive together at commit; the timeout only bounds a failing run.
        received = list(listener.notifies(timeout=30, stop_after=3))
    assert {n.channel for n in received} == {db.NOTIFY_CHANNEL}
    assert sorted(n.payload for n in received) == sorted(TABLES)


def test_reingesting_the_same_records_writes_nothing(registry_dsn: str) -> None:
    universe = list(generate_universe(2000).instruments())
    first = db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    before = contents(registry_dsn)
    again = db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    assert (first.inserted, first.tokens) == (2000, 8000)
    assert (again.inserted, again.updated, again.removed, again.renamed) == (0, 0, 0, 0)
    assert again.tokens == 8000
    assert contents(registry_dsn) == before  # updated_at included


def test_an_ingest_that_writes_vacuums_the_tables_the_loader_scans(registry_dsn: str) -> None:
    def vacuums() -> dict[str, int]:
        with psycopg.connect(registry_dsn) as conn:
            rows = conn.execute(
                "SELECT relname, vacuum_count FROM pg_stat_user_tables"
                " WHERE schemaname = 'instrument_registry'"
            ).fetchall()
        return dict(rows)

    universe = list(generate_universe(200).instruments())
    db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    first = vacuums()
    assert first["instrument_keys"] >= 1 and first["broker_instrument_tokens"] >= 1
    report = db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    assert not report.warnings
    assert vacuums() == first  # nothing written, nothing to vacuum


def test_a_second_broker_keeps_the_first_brokers_tokens_and_keys(registry_dsn: str) -> None:
    kite = [SBIN, INFY, NIFTY_FUT]
    db.ingest(registry_dsn, kite, ["kite"], source="kite=a.csv")
    # Angel calls SBIN by its series name; the exchange token says it is the same contract.
    angel = [
        instrument("NSE:SBIN-EQ", 3045, ("angel", "angel:NSE", 3045)),
        instrument("NSE:INFY", 1594, ("angel", "angel:NSE", 1594)),
    ]
    report = db.ingest(registry_dsn, angel, ["angel"], source="angel=b.json")
    assert report.renamed == 1
    assert report.warnings == ["angel=b.json: source row 1 calls it NSE:SBIN-EQ, kept NSE:SBIN"]
    assert (report.inserted, report.removed) == (0, 0)

    loaded = records(load_registry(registry_dsn))
    assert sorted(loaded) == ["NFO:NIFTY24APRFUT", "NSE:INFY", "NSE:SBIN"]
    assert loaded["NSE:SBIN"].tokens == (
        BrokerToken("angel", "angel:NSE", 3045),
        BrokerToken("kite", "kite", 779521),
    )
    assert loaded["NFO:NIFTY24APRFUT"].tokens == (BrokerToken("kite", "kite", 8960002),)


def test_an_instrument_goes_only_when_no_broker_lists_it(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [SBIN, INFY, NIFTY_FUT], ["kite"], source="kite")
    db.ingest(
        registry_dsn,
        [instrument("NSE:INFY", 1594, ("angel", "angel:NSE", 1594))],
        ["angel"],
        source="angel",
    )
    # Kite delists INFY and the future: the future goes, INFY stays for Angel.
    report = db.ingest(registry_dsn, [SBIN], ["kite"], source="kite")
    assert report.removed == 1
    loaded = records(load_registry(registry_dsn))
    assert sorted(loaded) == ["NSE:INFY", "NSE:SBIN"]
    assert loaded["NSE:INFY"].tokens == (BrokerToken("angel", "angel:NSE", 1594),)


def test_a_lot_size_change_under_another_broker_is_a_warning(registry_dsn: str) -> None:
    db.ingest(registry_dsn, [NIFTY_FUT], ["kite"], source="kite")
    db.ingest(
        registry_dsn,
        [
            instrument(
                "NFO:NIFTY24APRFUT",
                35001,
                ("angel", "angel:NFO", 35001),
                lot_size=50,
                expiry=dt.date(2024, 4, 25),
            )
        ],
        ["angel"],
        source="angel",
    )
    revised = Instrument(**{**_fields(NIFTY_FUT), "lot_size": 25})
    report = db.ingest(registry_dsn, [revised], ["kite"], source="kite")
    assert report.updated == 1
    assert report.warnings == [
        "kite: source row 1 changes NFO:NIFTY24APRFUT: lot size 50 -> 25; angel also lists it"
    ]
    assert records(load_registry(registry_dsn))["NFO:NIFTY24APRFUT"].lot_size == 25


# -- load_registry -----------------------------------------------------------------------------


def test_the_real_kite_file_compiles_the_same_through_the_registry(
    registry_dsn: str, kite_file: Path
) -> None:
    kite = load_kite(kite_file)
    report = db.ingest(registry_dsn, kite, ["kite"], source="kite")
    assert (report.inserted, report.tokens) == (len(kite), len(kite))
    loaded = load_registry(registry_dsn, trade_date=TRADE_DATE)
    direct = Registry.from_instruments(kite, trade_date=TRADE_DATE)
    assert records(loaded) == records(direct)
    assert payload_checksum(loaded) == payload_checksum(direct)


def test_a_synthetic_universe_with_four_brokers_compiles_the_same_through_the_registry(
    registry_dsn: str,
) -> None:
    universe = generate_universe(20_000, trade_date=TRADE_DATE)
    db.ingest(registry_dsn, list(universe.instruments()), BROKERS, source="synthetic")
    loaded = load_registry(registry_dsn, trade_date=TRADE_DATE)
    kinds = {column.broker: column.kind for column in loaded.tokens}
    assert kinds == {"angel": "int", "fyers": "int", "kite": "int", "upstox": "str"}
    assert payload_checksum(loaded) == payload_checksum(universe)


def test_the_chunk_size_does_not_change_what_is_loaded(registry_dsn: str) -> None:
    universe = list(generate_universe(3000).instruments())
    db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    whole = records(load_registry(registry_dsn))
    assert records(load_registry(registry_dsn, chunk_rows=7)) == whole
    assert whole == {
        r.key: Instrument(**{**_fields(r), "tokens": tuple(sorted(r.tokens))}) for r in universe
    }


def test_an_ingest_committed_during_a_load_does_not_show_in_it(registry_dsn: str) -> None:
    universe = list(generate_universe(3000).instruments())
    db.ingest(registry_dsn, universe, BROKERS, source="synthetic")
    before = records(load_registry(registry_dsn))
    # Between the keys and the tokens, a new ingest drops half the instruments and renumbers
    # the tokens of the rest; the load must still see the registry as it was when it began.
    later = [
        Instrument(
            **{
                **_fields(r),
                "tokens": tuple(
                    BrokerToken(
                        t.broker, t.feed, t.value + 7 if isinstance(t.value, int) else "x" + t.value
                    )
                    for t in r.tokens
                ),
            }
        )
        for r in universe[::2]
    ]
    ingested: list[db.IngestReport] = []

    def ingest_meanwhile(table: str, rows: int) -> None:
        if not ingested:
            ingested.append(db.ingest(registry_dsn, later, BROKERS, source="later"))

    during = records(load_registry(registry_dsn, chunk_rows=500, progress=ingest_meanwhile))
    assert ingested[0].removed == 1500
    assert during == before
    assert len(records(load_registry(registry_dsn))) == 1500


def test_backslashes_tabs_and_newlines_survive_the_copy_text_format(registry_dsn: str) -> None:
    odd = instrument(
        "NSE:A\\B", 7, ("upstox", "upstox", "NSE_EQ|\\t\tX"), name="LINE\nTAB\tBACK\\SLASH\r"
    )
    db.ingest(registry_dsn, [odd], ["upstox"], source="test")
    (loaded,) = load_registry(registry_dsn).instruments()
    assert loaded == odd


def test_int_tokens_keep_all_64_bits_below_no_token(registry_dsn: str) -> None:
    largest = instrument("NSE:BIG", 1, ("kite", "kite", 2**64 - 2))
    db.ingest(
        registry_dsn,
        [largest, instrument("NSE:ZERO", 2, ("kite", "kite", 0))],
        ["kite"],
        source="test",
    )
    loaded = records(load_registry(registry_dsn))
    assert loaded["NSE:BIG"] == largest
    assert loaded["NSE:ZERO"].tokens == (BrokerToken("kite", "kite", 0),)


def test_an_empty_registry_is_a_source_error(registry_dsn: str) -> None:
    with pytest.raises(SourceError, match="no instruments: the registry is empty"):
        load_registry(registry_dsn, source="registry")


def test_a_database_without_a_registry_is_unavailable(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute(f"DROP SCHEMA IF EXISTS {db.SCHEMA} CASCADE")
    with pytest.raises(UnavailableError, match="no instrument registry here"):
        load_registry(pg_database)
    # Labelled as the command line labels it, the message names the database once.
    redacted = db.redact_dsn(pg_database)
    with pytest.raises(UnavailableError) as raised:
        load_registry(pg_database, source=f"postgres={redacted}")
    assert str(raised.value).count(redacted) == 1, str(raised.value)


def test_losing_the_server_mid_copy_is_unavailable_and_never_shows_the_password(
    registry_dsn: str,
) -> None:
    db.ingest(
        registry_dsn, list(generate_universe(20_000).instruments()), BROKERS, source="synthetic"
    )
    name = "resolverd_test_loader"
    dsn = with_password(registry_dsn, application_name=name)
    terminated: list[int] = []

    def terminate_the_loader(table: str, rows: int) -> None:
        if terminated:
            return
        with psycopg.connect(registry_dsn, autocommit=True) as admin:
            pids = [
                pid
                for (pid,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (name,),
                )
            ]
            assert len(pids) == 1, pids
            admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            # Wait until it is gone, so the loader cannot finish before it notices.
            for _ in range(600):
                gone = admin.execute(
                    "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)",
                    (pids[0],),
                ).fetchone()
                if gone == (True,):
                    break
                time.sleep(0.05)
        terminated.append(pids[0])

    with pytest.raises(UnavailableError) as caught:
        load_registry(dsn, chunk_rows=1000, progress=terminate_the_loader)
    assert terminated
    assert "went away" in str(caught.value)
    assert db.redact_dsn(dsn) in str(caught.value)
    for text in error_texts(caught.value):
        assert PASSWORD not in text


def test_an_unreachable_server_is_unavailable_and_never_shows_the_password(
    tmp_path: Path,
) -> None:
    # A socket directory with no server in it: refused at once, whatever the host runs.
    dsn = f"host={tmp_path} port=1 dbname=registry password={PASSWORD}"
    for call in (lambda: load_registry(dsn), lambda: db.ingest(dsn, [SBIN], ["kite"], source="t")):
        with pytest.raises(UnavailableError) as caught:
            call()
        assert str(caught.value).startswith(f"host={tmp_path} port=1 dbname=registry: ")
        for text in error_texts(caught.value):
            assert PASSWORD not in text


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://trader:{PASSWORD}%zz@localhost/registry",
        f"host=localhost password='{PASSWORD} unterminated",
        f"host=localhost password={PASSWORD} {PASSWORD}",
    ],
)
def test_a_malformed_connection_string_is_a_config_error_without_the_password(dsn: str) -> None:
    # libpq quotes the part it cannot parse, which here is the password.
    with pytest.raises(ConfigError) as caught:
        load_registry(dsn)
    for text in error_texts(caught.value):
        assert PASSWORD not in text


# -- connection strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://trader:pw@db.example/registry", "postgresql://trader@db.example/registry"),
        (
            "postgres://trader@db.example:5433/registry",
            "postgres://trader@db.example:5433/registry",
        ),
        (
            "postgresql://trader:p%40ss@db/r?sslmode=require",
            "postgresql://trader@db/r?sslmode=require",
        ),
        ("postgresql://db/r?password=pw&sslmode=require", "postgresql://db/r?sslmode=require"),
        ("postgresql://db/r?sslmode=require&password=pw", "postgresql://db/r?sslmode=require"),
        ("host=db dbname=r password=pw user=trader", "host=db dbname=r user=trader"),
        ("host=db password = 'a b\\' c' dbname=r", "host=db dbname=r"),
        ("password=pw", ""),
        ("host=db dbname=r", "host=db dbname=r"),
    ],
)
def test_redact_dsn_removes_every_password(dsn: str, redacted: str) -> None:
    assert db.redact_dsn(dsn) == redacted


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("postgresql://db/registry", True),
        ("POSTGRES://db/registry", True),
        ("dbname=registry", True),
        ("host=/run/postgresql port=5433", True),
        ("user=trader  host=db", True),
        ("kite=/data/instruments.csv", False),
        ("/data/dbname=x.csv", False),
        ("instruments.csv", False),
    ],
)
def test_is_dsn_tells_a_database_from_a_file(spec: str, expected: bool) -> None:
    assert is_dsn(spec) is expected


def test_an_ingest_without_isins_keeps_the_isins_another_broker_supplied(
    registry_dsn: str,
) -> None:
    with_isin = Instrument(
        key="NSE:SBIN",
        exchange="NSE",
        segment="NSE",
        instrument_type="EQ",
        name="STATE BANK OF INDIA",
        tick_size=0.05,
        isin="INE062A01020",
        exchange_token=3045,
        tokens=(BrokerToken("fyers", "fyers", 10100000003045),),
    )
    without = msgspec.structs.replace(
        with_isin, isin="", name="", tokens=(BrokerToken("kite", "kite", 779521),)
    )
    db.ingest(registry_dsn, [with_isin], {"fyers"}, source="fyers=f.csv")
    db.ingest(registry_dsn, [without], {"kite"}, source="kite=k.csv")
    (record,) = load_registry(registry_dsn).instruments()
    assert (record.isin, record.name) == ("INE062A01020", "STATE BANK OF INDIA")
    assert {t.broker for t in record.tokens} == {"fyers", "kite"}
