"""The PostgreSQL instrument registry: its schema, the ingest of broker records, and how its
errors and connection strings are reported.

The registry lives in schema ``instrument_registry`` (``resolverd/sql/registry.sql``, the one
definition of its tables and rules; `SCHEMA_VERSION` is its version):

- ``instrument_keys``: one row per instrument, its canonical key and metadata in Kite's
  vocabulary (strike and tick size in rupees, expiry a date or NULL, ISIN '' or 12 characters,
  exchange token 0 when the source has none). ``(exchange, segment, exchange_token)`` is
  unique where the token is > 0: it is the cross-broker join key.
- ``broker_feeds``: each feed (the namespace a token is unique in), its broker and its token
  kind, ``int`` or ``str``, which a feed keeps while it holds a token.
- ``broker_instrument_tokens``: each broker's token for each key, as text (``int`` tokens as
  canonical decimals below 2**64 - 1), unique within its feed.

Every statement that writes to those tables notifies `NOTIFY_CHANNEL` with the table's name as
payload when its transaction commits; the daemon LISTENs there and reloads.

`ingest` rules, all in one transaction (a failed ingest changes nothing):

1. Ingests are serialized by a SHARE ROW EXCLUSIVE lock on the three tables, which readers
   (``load_registry``, ACCESS SHARE) do not wait for.
2. Records are staged with COPY into temporary tables; everything after is set-based SQL.
3. A record whose (exchange, segment, exchange token > 0) is already registered keeps the
   registered key: the first source to list an instrument names it, as in `resolverd.join`.
   Each such rename is counted and reported ("source row N calls it X, kept Y").
4. The ingest's metadata is the newest: registered rows are updated where it differs, new keys
   are inserted.
5. The tokens of the ingest's brokers are replaced by the records' tokens (only the rows that
   differ are written); feeds are registered as needed, and a feed whose broker or kind would
   change is refused. A broker's kind is ``int`` if all its tokens are Python ints.
6. A key that this ingest leaves without any token is deleted: no broker lists it any more.
7. A lot size or expiry changed on an instrument that another broker also lists is reported as
   a warning: the other broker's file may be stale.

A record without a single token is not ingested, and a warning counts such records. The
ingest ends with ANALYZE of the three tables when it changed anything, so that the next
``load_registry`` plans its joins with the right row counts.

Errors: a server that cannot be reached, or goes away, is `UnavailableError`; a record that
breaks a rule is `RegistryError`, naming the constraint and the offending values; a malformed
connection string is `ConfigError`. Every message shows the connection string through
`redact_dsn`, and psycopg's own text is scrubbed of the password, which libpq quotes when it
cannot parse a connection string.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NoReturn
from urllib.parse import unquote

from ._extras import require
from .errors import ConfigError, RegistryError, ResolverError, SourceError, UnavailableError
from .model import Instrument

require("postgres", "psycopg", needed_by="the PostgreSQL registry")

import psycopg  # noqa: E402  (after require: without psycopg, a ConfigError that says so)
from psycopg.conninfo import conninfo_to_dict  # noqa: E402

__all__ = [
    "NOTIFY_CHANNEL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "IngestReport",
    "connect",
    "ingest",
    "init_schema",
    "redact_dsn",
    "translate_error",
]

SCHEMA = "instrument_registry"
SCHEMA_VERSION = 1
NOTIFY_CHANNEL = "instrument_registry_changed"
"""The channel the registry's triggers notify; the payload is the name of the table written."""

# Renames and metadata warnings are listed up to this many each; the counts stay exact.
MAX_LISTED = 1000
# Integer columns of instrument_keys: what a record must fit before it is staged.
_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1
# Any constant will do, as long as it is the same for every resolverd: it serializes schema
# changes between processes (the bytes of "resolver").
_SCHEMA_LOCK = 0x7265736F6C766572
_CONNECT_TIMEOUT_S = 10
# The sort of a million keys and the anti-joins of an ingest fit in this, rather than spilling
# to disk in batches of the server's default 4 MB.
WORK_MEM = "256MB"

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class IngestReport:
    """What one `ingest` changed. ``tokens`` is the number of tokens the ingest's brokers hold
    after it; ``warnings`` lists renames and metadata changes (see the module docstring)."""

    inserted: int
    updated: int
    removed: int
    tokens: int
    renamed: int
    warnings: list[str]
    seconds: float


# -- connection strings ------------------------------------------------------------------------

_URL = re.compile(r"(?is)\A(postgres(?:ql)?://)(.*)\Z")
# libpq's key=value values: single-quoted with backslash escapes, or a run of non-blanks in
# which a backslash escapes the next character. An unterminated quote runs to the end.
_VALUE = r"""(?:'(?:[^'\\]|\\.)*(?:'|\Z)|(?:[^\s\\]|\\.|\\\Z)*)"""
_KV_PASSWORD = re.compile(rf"(?is)(?:\A|(?<=\s))password\s*=\s*({_VALUE})\s*")
_KV_PAIR = re.compile(rf"(?s)[A-Za-z_][A-Za-z0-9_]*\s*=\s*{_VALUE}")
_URL_QUERY_PASSWORD = re.compile(r"(?i)([?&])password=([^&]*)&?")
_ESCAPED = re.compile(r"\\(.)", re.S)


def redact_dsn(dsn: str) -> str:
    """`dsn` without its password, for messages: ``postgresql://user:pw@host/db`` becomes
    ``postgresql://user@host/db``, and ``password=...`` is dropped from a key=value string or
    a URL's query. A malformed string is redacted all the same, since that is when libpq
    quotes it back."""
    url = _URL.match(dsn)
    if url is None:
        # Only key=value pairs are kept: a bare word is what is left of a password with a
        # blank in it that was not quoted.
        return " ".join(m.group(0).strip() for m in _KV_PAIR.finditer(_KV_PASSWORD.sub("", dsn)))
    scheme, rest = url.groups()
    head, question, query = rest.partition("?")
    # libpq splits user info at the first '@'; a password with a raw '@' is split elsewhere,
    # so everything before the last '@' is taken as user info and its password dropped.
    userinfo, at, hostpart = head.rpartition("@")
    if at:
        head = userinfo.partition(":")[0] + "@" + hostpart
    if question:
        query = _URL_QUERY_PASSWORD.sub(lambda m: m.group(1), "?" + query).strip("&?")
    return scheme + head + ("?" + query if query else "")


def _passwords(dsn: str) -> set[str]:
    """Every spelling of the passwords in `dsn` that a message might quote: as written,
    unquoted, unescaped and percent-decoded."""
    found: set[str] = set()
    url = _URL.match(dsn)
    if url is not None:
        head, _, query = url.group(2).partition("?")
        userinfo, at, _ = head.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.partition(":")[2])
        found.update(m.group(2) for m in _URL_QUERY_PASSWORD.finditer("?" + query))
        found.update({unquote(p) for p in found})
    else:
        for match in _KV_PASSWORD.finditer(dsn):
            raw = match.group(1)
            inner = raw[1:-1] if raw[:1] == "'" and raw[-1:] == "'" and len(raw) > 1 else raw
            inner = inner.removeprefix("'")
            found.update({raw, inner, _ESCAPED.sub(r"\1", inner)})
    return {p for p in found if p}


def _scrub(text: str, dsn: str) -> str:
    """`text` with the connection string and every spelling of its password replaced."""
    text = text.replace(dsn, redact_dsn(dsn)) if dsn else text
    for secret in sorted(_passwords(dsn), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text.strip()


# -- errors ------------------------------------------------------------------------------------


def translate_error(exc: psycopg.Error, dsn: str, doing: str = "") -> ResolverError:
    """The resolverd error for a psycopg error met while `doing` something with `dsn`.

    A connection that cannot be made or is lost (any OperationalError: refused, terminated by
    an administrator, a timeout, too many clients) is `UnavailableError`; a constraint
    violation or a value out of a column's range is `RegistryError` naming the constraint or
    column and the values; a missing schema is `UnavailableError` with a hint; anything else
    is a plain `ResolverError`. The message starts with the redacted connection string.
    """
    where = redact_dsn(dsn) + (f": {doing}" if doing else "")
    diag = exc.diag
    text = _scrub(diag.message_primary or str(exc), dsn)
    if isinstance(exc, psycopg.IntegrityError):
        name = diag.constraint_name
        parts = [f"{where}: " + (f"constraint {name} refused a row" if name else "refused"), text]
        if diag.message_detail:  # the values: "Key (feed, token)=(kite, 408065) already exists."
            parts.append(_scrub(diag.message_detail, dsn))
        return RegistryError("; ".join(parts))
    if isinstance(exc, psycopg.DataError):
        context = f" ({_scrub(diag.context, dsn)})" if diag.context else ""
        return RegistryError(f"{where}: {text}{context}")
    state = diag.sqlstate or ""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or state[:2] == "08":
        # No state: libpq lost the socket. 08: connection exception; 57P: terminated by an
        # administrator or a shutdown. Others (a statement or lock timeout) are a busy server.
        if not state or state[:2] == "08" or state[:3] == "57P":
            return UnavailableError(f"{where}: the server cannot be reached or went away: {text}")
        return UnavailableError(f"{where}: the server did not complete the request: {text}")
    if state in ("42P01", "3F000"):  # undefined_table, invalid_schema_name
        return UnavailableError(f"{where}: no instrument registry here ({text}); run init_schema")
    return ResolverError(f"{where}: PostgreSQL error [{state or 'no SQLSTATE'}]: {text}")


def _connect_options(dsn: str) -> dict[str, Any]:
    """Defaults for what `dsn` and the environment leave unset: a connect timeout, so that an
    unreachable host fails in seconds rather than minutes, and an application name that
    ``pg_stat_activity`` shows."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        # Raised outside the handler, so that psycopg's error, which may quote the password,
        # is not even kept as the suppressed __context__.
        raise ConfigError(
            f"{redact_dsn(dsn)}: not a valid connection string: {_scrub(problem, dsn)}"
        )
    options: dict[str, Any] = {}
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
        options["connect_timeout"] = _CONNECT_TIMEOUT_S
    if "application_name" not in given and "PGAPPNAME" not in os.environ:
        options["application_name"] = "resolverd"
    return options


@contextmanager
def connect(dsn: str, *, autocommit: bool = False, doing: str = "") -> Iterator[Connection]:
    """A connection to `dsn` that commits when the block ends, rolls back if it raises, and
    turns every psycopg error into a resolverd one (`translate_error`).

    A connection that cannot be made is `UnavailableError` (or `ConfigError` for a malformed
    string), raised without psycopg's exception chained: its text may quote the string.
    """
    options = _connect_options(dsn)
    failure: ResolverError | None = None
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **options)
    except psycopg.ProgrammingError as exc:
        failure = ConfigError(f"{redact_dsn(dsn)}: {_scrub(str(exc), dsn)}")
    except psycopg.Error as exc:
        failure = UnavailableError(f"{redact_dsn(dsn)}: cannot connect: {_scrub(str(exc), dsn)}")
    if failure is not None:
        raise failure  # outside the handler, for the reason given in _connect_options
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise translate_error(exc, dsn, doing) from exc


# -- schema ------------------------------------------------------------------------------------


def schema_sql() -> str:
    """The text of ``resolverd/sql/registry.sql``."""
    return resources.files("resolverd").joinpath("sql", "registry.sql").read_text("utf-8")


def init_schema(dsn: str) -> None:
    """Create the registry's schema, tables, constraints and triggers where they are missing.

    Idempotent, and safe to run from several processes at once (an advisory lock serializes
    them). Raises `ConfigError` if the database holds a registry of another schema version.
    """
    with connect(dsn, doing="creating the registry schema") as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        version = _stored_version(conn)
        if version is not None and version != SCHEMA_VERSION:
            raise ConfigError(
                f"{redact_dsn(dsn)}: the registry has schema version {version};"
                f" this resolverd knows version {SCHEMA_VERSION}"
            )
        conn.execute(schema_sql())


def _stored_version(conn: Connection) -> int | None:
    """The registry's schema version, or None where there is no registry yet."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_version",)
    ).fetchone()
    if row is None or not row[0]:
        return None
    stored = conn.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    return None if stored is None else int(stored[0])


# -- ingest ------------------------------------------------------------------------------------

_SETUP = f"""
SET LOCAL work_mem = '{WORK_MEM}';
SET LOCAL client_min_messages = warning;
LOCK TABLE instrument_registry.instrument_keys, instrument_registry.broker_feeds,
    instrument_registry.broker_instrument_tokens IN SHARE ROW EXCLUSIVE MODE;
CREATE TEMP TABLE staged_instruments (
    source_row bigint NOT NULL,
    instrument_key text NOT NULL,
    source_key text,
    has_token boolean NOT NULL,
    exchange text NOT NULL,
    segment text NOT NULL,
    instrument_type text NOT NULL,
    name text NOT NULL,
    expiry date,
    strike float8 NOT NULL,
    tick_size float8 NOT NULL,
    lot_size integer NOT NULL,
    isin text NOT NULL,
    exchange_token bigint NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE staged_tokens (
    instrument_key text NOT NULL,
    broker text NOT NULL,
    feed text NOT NULL,
    token text NOT NULL
) ON COMMIT DROP
"""
_COPY_INSTRUMENTS = """
COPY staged_instruments (source_row, instrument_key, has_token, exchange, segment,
    instrument_type, name, expiry, strike, tick_size, lot_size, isin, exchange_token)
FROM STDIN (FORMAT BINARY)
"""
_INSTRUMENT_TYPES = (
    "int8",
    "text",
    "bool",
    "text",
    "text",
    "text",
    "text",
    "date",
    "float8",
    "float8",
    "int4",
    "text",
    "int8",
)
_COPY_TOKENS = "COPY staged_tokens (instrument_key, broker, feed, token) FROM STDIN (FORMAT BINARY)"
_METADATA = (
    "exchange",
    "segment",
    "instrument_type",
    "name",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "isin",
    "exchange_token",
)
_META = ", ".join(_METADATA)
_S_META = ", ".join("s." + c for c in _METADATA)
_D_META = ", ".join("d." + c for c in _METADATA)
_K_META = ", ".join("k." + c for c in _METADATA)

# (a) The first source names the key: a staged record on a registered exchange token takes the
# registered key, and keeps its own in source_key.
_RENAME = """
WITH renamed AS (
    UPDATE staged_instruments s
       SET source_key = s.instrument_key, instrument_key = k.instrument_key
      FROM instrument_registry.instrument_keys k
     WHERE s.has_token AND s.exchange_token > 0 AND k.exchange_token > 0
       AND k.exchange = s.exchange AND k.segment = s.segment
       AND k.exchange_token = s.exchange_token
       AND k.instrument_key <> s.instrument_key
 RETURNING s.source_row, s.source_key, s.instrument_key
)
SELECT count(*) OVER (), source_row, source_key, instrument_key
  FROM renamed ORDER BY source_row LIMIT %s
"""
# A renamed record may land on a key that another staged record also uses.
_RENAME_CLASH = """
SELECT s.source_row, s.source_key, s.instrument_key, o.source_row, o.exchange_token
  FROM staged_instruments s
  JOIN staged_instruments o ON o.instrument_key = s.instrument_key AND o.source_row <> s.source_row
 WHERE s.source_key IS NOT NULL AND o.has_token
 ORDER BY s.source_row LIMIT 1
"""
_RENAME_TOKENS = """
UPDATE staged_tokens t SET instrument_key = s.instrument_key
  FROM staged_instruments s
 WHERE s.source_key IS NOT NULL AND t.instrument_key = s.source_key
"""
# A source that leaves a name or ISIN empty (Kite's dump has no ISIN) does not erase the one
# another broker's ingest supplied: as in a file join, later sources only fill blanks.
_KEEP_FILLED = """
UPDATE staged_instruments s
   SET name = CASE WHEN s.name = '' THEN k.name ELSE s.name END,
       isin = CASE WHEN s.isin = '' THEN k.isin ELSE s.isin END
  FROM instrument_registry.instrument_keys k
 WHERE k.instrument_key = s.instrument_key
   AND ((s.name = '' AND k.name <> '') OR (s.isin = '' AND k.isin <> ''))
"""
# (b) The records that are new or whose metadata differs: one join, and from then on only the
# differences are touched, so that re-ingesting an unchanged file rewrites nothing and
# updated_at means something.
_KEY_DIFF = f"""
CREATE TEMP TABLE key_diff ON COMMIT DROP AS
SELECT s.source_row, s.instrument_key, {_S_META},
       k.instrument_key IS NULL AS is_new, k.lot_size AS old_lot_size, k.expiry AS old_expiry
  FROM staged_instruments s
  LEFT JOIN instrument_registry.instrument_keys k ON k.instrument_key = s.instrument_key
 WHERE s.has_token AND (k.instrument_key IS NULL OR ({_K_META}) IS DISTINCT FROM ({_S_META}))
"""
# (e) Read before the update: what another broker's listing is about to see change.
_CHANGED_UNDER_OTHERS = """
SELECT count(*) OVER (), d.source_row, d.instrument_key, d.old_lot_size, d.lot_size,
       d.old_expiry, d.expiry,
       (SELECT string_agg(t.broker, ', ' ORDER BY t.broker)
          FROM instrument_registry.broker_instrument_tokens t
         WHERE t.instrument_key = d.instrument_key AND t.broker <> ALL(%(brokers)s))
  FROM key_diff d
 WHERE NOT d.is_new
   AND (d.old_lot_size <> d.lot_size OR d.old_expiry IS DISTINCT FROM d.expiry)
   AND EXISTS (SELECT 1 FROM instrument_registry.broker_instrument_tokens t
                WHERE t.instrument_key = d.instrument_key AND t.broker <> ALL(%(brokers)s))
 ORDER BY d.source_row LIMIT %(limit)s
"""
_UPDATE = f"""
UPDATE instrument_registry.instrument_keys k
   SET ({_META}, updated_at) = ({_D_META}, now())
  FROM key_diff d
 WHERE k.instrument_key = d.instrument_key AND NOT d.is_new
"""
# In key order, so that the primary key's index grows at its right edge.
_INSERT = f"""
INSERT INTO instrument_registry.instrument_keys (instrument_key, {_META})
SELECT d.instrument_key, {_D_META} FROM key_diff d WHERE d.is_new ORDER BY d.instrument_key
"""
_REGISTERED_FEEDS = """
SELECT feed, broker, token_kind FROM instrument_registry.broker_feeds WHERE feed = ANY(%s)
"""
_ADD_FEEDS = """
INSERT INTO instrument_registry.broker_feeds (feed, broker, token_kind)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
ON CONFLICT (feed) DO NOTHING
"""
_HOLDS_TOKENS = """
SELECT EXISTS (SELECT 1 FROM instrument_registry.broker_instrument_tokens WHERE broker = ANY(%s))
"""
# (c) Replacing the brokers' tokens is "delete all, insert all" in effect, but one join finds
# the tokens that differ and only those are written: the index and foreign-key work of
# millions of unchanged tokens is what would make a daily ingest slow.
_TOKEN_DIFF = """
CREATE TEMP TABLE token_diff ON COMMIT DROP AS
SELECT t.instrument_key AS old_key, t.broker AS old_broker,
       s.instrument_key, s.broker, s.feed, s.token
  FROM (SELECT instrument_key, broker, feed, token
          FROM instrument_registry.broker_instrument_tokens WHERE broker = ANY(%s)) t
  FULL JOIN staged_tokens s ON s.instrument_key = t.instrument_key AND s.broker = t.broker
 WHERE t.instrument_key IS NULL OR s.instrument_key IS NULL
    OR s.feed <> t.feed OR s.token <> t.token
"""
# Deleted first, so that a token moving between keys is free when it is inserted again.
_DROP_TOKENS = """
CREATE TEMP TABLE dropped_keys (instrument_key text NOT NULL) ON COMMIT DROP;
WITH gone AS (
    DELETE FROM instrument_registry.broker_instrument_tokens t
     USING token_diff d
     WHERE d.old_key IS NOT NULL AND t.instrument_key = d.old_key AND t.broker = d.old_broker
 RETURNING t.instrument_key
)
INSERT INTO dropped_keys SELECT DISTINCT instrument_key FROM gone
"""
_ADD_TOKENS = """
INSERT INTO instrument_registry.broker_instrument_tokens
       (instrument_key, broker, feed, token_kind, token)
SELECT s.instrument_key, s.broker, s.feed, f.token_kind, s.token
  FROM {table} s
  JOIN instrument_registry.broker_feeds f ON f.feed = s.feed AND f.broker = s.broker
 WHERE s.instrument_key IS NOT NULL
 ORDER BY s.instrument_key, s.broker
"""
# (d) Only a key that lost a token in this ingest can be left with none.
_DROP_ORPHANS = """
DELETE FROM instrument_registry.instrument_keys k
 USING dropped_keys c
 WHERE k.instrument_key = c.instrument_key
   AND NOT EXISTS (SELECT 1 FROM instrument_registry.broker_instrument_tokens t
                    WHERE t.instrument_key = k.instrument_key)
"""
_ANALYZE = """
ANALYZE instrument_registry.instrument_keys, instrument_registry.broker_feeds,
    instrument_registry.broker_instrument_tokens
"""
# After the commit (VACUUM runs outside a transaction): it marks the pages all-visible, so the
# loader's scans of the primary keys read the indexes alone instead of visiting every row
# (0.3 s here for a million new rows; the load's read of their tokens became 0.4 s faster).
_VACUUM = "VACUUM instrument_registry.instrument_keys, instrument_registry.broker_instrument_tokens"


@dataclass
class _Staged:
    """What the Python pass over the records learned while copying them."""

    tokens: int = 0
    tokenless: int = 0
    feed_broker: dict[str, str] = field(default_factory=dict)
    """Each feed's broker."""
    int_brokers: set[str] = field(default_factory=set)
    """The brokers all of whose tokens are Python ints (the others' kind is str)."""


def ingest(
    dsn: str,
    instruments: Sequence[Instrument],
    brokers: Collection[str],
    *,
    source: str,
    rows: Sequence[int] | None = None,
) -> IngestReport:
    """Merge one ingest's records into the registry at `dsn` (rules in the module docstring).

    `brokers` are the brokers this ingest carries: their tokens are replaced by the records'
    tokens, other brokers' tokens are kept. Every token of the records must belong to one of
    them. `source` labels the records in messages; `rows` gives each record's row in it
    (`Loaded.rows`), by default its position from 1. A record without any token is not
    ingested (a warning counts them).

    Raises `ConfigError` for a token of a broker not in `brokers` or an empty `brokers`,
    `SourceError` for no records, `RegistryError` for records that break a rule (a key twice,
    a token twice in a feed, two keys on one exchange token, a feed changing kind, a bad
    value), and `UnavailableError` if the server cannot be reached or goes away. On any error
    the registry is left as it was.
    """
    started = time.perf_counter()
    carried = frozenset(brokers)
    if not carried:
        raise ConfigError(f"{source}: an ingest must name the brokers it carries")
    if not instruments:
        raise SourceError(source, "no instruments: nothing to ingest")
    if rows is not None and len(rows) != len(instruments):
        raise ValueError(f"{len(rows)} row numbers for {len(instruments)} records")
    row_of: Callable[[int], int] = (lambda i: i + 1) if rows is None else rows.__getitem__
    listed = sorted(carried)
    warnings: list[str] = []
    with connect(dsn, doing=f"ingesting {source}") as conn, conn.cursor() as cur:
        # Temporary tables live in this many bytes of the backend's own memory instead of
        # 8 MB; it can only be set before the session's first temporary table.
        cur.execute("SET temp_buffers = '512MB'")
        cur.execute(_SETUP)
        staged = _stage(cur, instruments, carried, source, row_of)
        if staged.tokenless:
            warnings.append(
                f"{source}: {staged.tokenless} records carry no token and were not ingested"
            )
        cur.execute("ANALYZE staged_instruments")
        renamed = _rename(cur, source, warnings)
        _register_feeds(cur, staged, source, dsn)

        cur.execute(_KEEP_FILLED)
        cur.execute(_KEY_DIFF)
        _changed_under_others(cur, listed, source, warnings)
        cur.execute(_UPDATE)
        updated = cur.rowcount
        cur.execute(_INSERT)
        inserted = cur.rowcount

        removed = 0
        cur.execute(_HOLDS_TOKENS, (listed,))
        if _one(cur):
            cur.execute(_TOKEN_DIFF, (listed,))
            cur.execute(_DROP_TOKENS)
            cur.execute(_ADD_TOKENS.format(table="token_diff"))
            written = cur.rowcount
            cur.execute(_DROP_ORPHANS)
            removed = cur.rowcount
        else:
            cur.execute(_ADD_TOKENS.format(table="staged_tokens"))
            written = cur.rowcount
        if inserted or updated or removed or written:
            # Autovacuum analyzes in its own time; the next load_registry plans its joins
            # over a million rows now, and a stale row count makes it sort where it should
            # hash.
            cur.execute(_ANALYZE)
    if inserted or updated or removed or written:
        try:
            with connect(dsn, autocommit=True, doing="vacuuming the registry") as conn:
                conn.execute(_VACUUM)
        except ResolverError as exc:  # the ingest is committed; autovacuum will get to it
            warnings.append(f"{source}: ingested, but not vacuumed: {exc}")
    return IngestReport(
        inserted=inserted,
        updated=updated,
        removed=removed,
        tokens=staged.tokens,
        renamed=renamed,
        warnings=warnings,
        seconds=time.perf_counter() - started,
    )


def _one(cur: psycopg.Cursor[tuple[Any, ...]]) -> Any:
    row = cur.fetchone()
    assert row is not None, "a one-row query returned no row"
    return row[0]


def _stage(
    cur: psycopg.Cursor[tuple[Any, ...]],
    instruments: Sequence[Instrument],
    carried: frozenset[str],
    source: str,
    row_of: Callable[[int], int],
) -> _Staged:
    """COPY the records and their tokens into the staging tables, checking on the way what the
    staging cannot: a key twice, a foreign broker, a value too large for its column."""
    staged = _Staged()
    seen: set[str] = set()
    with cur.copy(_COPY_INSTRUMENTS) as copy:
        copy.set_types(list(_INSTRUMENT_TYPES))
        write = copy.write_row
        for i, r in enumerate(instruments):
            key = r.key
            if key in seen:
                first = next(j for j, other in enumerate(instruments) if other.key == key)
                raise RegistryError(
                    f"{source}: key {key} is listed twice: rows {row_of(first)} and {row_of(i)}"
                )
            seen.add(key)
            if r.lot_size > _INT4_MAX:
                _out_of_range(source, row_of(i), "lot_size", r.lot_size, _INT4_MAX)
            if r.exchange_token > _INT8_MAX:
                _out_of_range(source, row_of(i), "exchange_token", r.exchange_token, _INT8_MAX)
            has_token = bool(r.tokens)
            staged.tokenless += not has_token
            write(
                (
                    row_of(i),
                    key,
                    has_token,
                    r.exchange,
                    r.segment,
                    r.instrument_type,
                    r.name,
                    r.expiry,
                    float(r.strike),
                    float(r.tick_size),
                    r.lot_size,
                    r.isin,
                    r.exchange_token,
                )
            )
    feed_broker = staged.feed_broker
    not_int: set[str] = set()
    count = 0
    with cur.copy(_COPY_TOKENS) as copy:
        copy.set_types(["text", "text", "text", "text"])
        write = copy.write_row
        for i, r in enumerate(instruments):
            for token in r.tokens:
                broker, feed, value = token.broker, token.feed, token.value
                if broker not in carried:
                    raise ConfigError(
                        f"{source}: row {row_of(i)} carries a token of broker {broker!r},"
                        f" but the ingest is for {', '.join(sorted(carried))}"
                    )
                if feed_broker.setdefault(feed, broker) != broker:
                    raise RegistryError(
                        f"{source}: row {row_of(i)}: feed {feed} is given to brokers"
                        f" {feed_broker[feed]} and {broker}; a feed belongs to one broker"
                    )
                if type(value) is not int:
                    not_int.add(broker)
                write((r.key, broker, feed, str(value)))
                count += 1
    staged.tokens = count
    staged.int_brokers = set(carried) - not_int
    return staged


def _out_of_range(source: str, row: int, field: str, value: int, maximum: int) -> NoReturn:
    raise RegistryError(
        f"{source}: row {row}, field {field}: {value} is out of the registry's range 0..{maximum}"
    )


def _rename(cur: psycopg.Cursor[tuple[Any, ...]], source: str, warnings: list[str]) -> int:
    cur.execute(_RENAME, (MAX_LISTED,))
    renames = cur.fetchall()
    total = int(renames[0][0]) if renames else 0
    for _, row, called, kept in renames:
        warnings.append(f"{source}: source row {row} calls it {called}, kept {kept}")
    if total > len(renames):
        warnings.append(f"{source}: and {total - len(renames)} more renames")
    if total:
        cur.execute(_RENAME_CLASH)
        clash = cur.fetchone()
        if clash is not None:
            row, called, kept, other_row, other_token = clash
            raise RegistryError(
                f"{source}: source row {row} calls it {called}, but its exchange token belongs"
                f" to {kept}, which source row {other_row} lists with exchange token"
                f" {other_token}"
            )
        cur.execute(_RENAME_TOKENS)
    return total


def _register_feeds(
    cur: psycopg.Cursor[tuple[Any, ...]], staged: _Staged, source: str, dsn: str
) -> None:
    """Register the feeds the ingest uses, refusing one whose broker or kind would change."""
    wanted = {
        feed: (broker, "int" if broker in staged.int_brokers else "str")
        for feed, broker in staged.feed_broker.items()
    }
    cur.execute(_REGISTERED_FEEDS, (list(wanted),))
    for feed, broker, kind in cur.fetchall():
        if wanted[feed] != (broker, kind):
            new_broker, new_kind = wanted[feed]
            raise RegistryError(
                f"{redact_dsn(dsn)}: feed {feed} holds {kind} tokens of broker {broker};"
                f" {source} gives it {new_kind} tokens of broker {new_broker}"
            )
    feeds = sorted(wanted)
    cur.execute(_ADD_FEEDS, (feeds, [wanted[f][0] for f in feeds], [wanted[f][1] for f in feeds]))


def _changed_under_others(
    cur: psycopg.Cursor[tuple[Any, ...]], brokers: list[str], source: str, warnings: list[str]
) -> None:
    cur.execute(_CHANGED_UNDER_OTHERS, {"brokers": brokers, "limit": MAX_LISTED})
    changes = cur.fetchall()
    for _, row, key, old_lot, new_lot, old_expiry, new_expiry, others in changes:
        what = []
        if old_lot != new_lot:
            what.append(f"lot size {old_lot} -> {new_lot}")
        if old_expiry != new_expiry:
            what.append(f"expiry {old_expiry or 'none'} -> {new_expiry or 'none'}")
        warnings.append(
            f"{source}: source row {row} changes {key}: {', '.join(what)}; {others} also lists it"
        )
    total = int(changes[0][0]) if changes else 0
    if total > len(changes):
        warnings.append(f"{source}: and {total - len(changes)} more such changes")
