"""A throwaway PostgreSQL database for the registry's integration tests.

The server is the first of these that answers:

1. ``$RESOLVERD_TEST_DSN``, as given. Set, it is the only candidate: failing to reach it
   is an error, not a skip.
2. libpq's defaults and the ``PG*`` environment variables (``PGHOST``, ``PGPORT``,
   ``PGUSER``...), in database ``$PGDATABASE`` or ``postgres``.
3. ``host=127.0.0.1 dbname=postgres``, unless ``PGHOST`` or ``PGPORT`` point elsewhere.
4. A server of the session's own: ``initdb`` and ``pg_ctl`` from ``PATH`` or
   ``/usr/lib/postgresql/*/bin``, trust authentication, listening only on a unix socket in a
   temporary directory, stopped and deleted at the end. initdb refuses to run as root, so
   under root this one is not tried.

If none answers, the tests that need a database skip, saying what was tried. Each session
creates a database ``resolverd_test_<random>`` on the server and drops it at the end, so the
tests never see real data and can run again and again; each test gets a freshly initialized
registry schema in it (`registry_dsn`).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .daemons import daemon, directory, kite  # noqa: F401  (shared fixtures)

_PROBE_TIMEOUT_S = 3


def _reachable(dsn: str) -> str | None:
    """None if `dsn` connects, else why not."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=_PROBE_TIMEOUT_S, autocommit=True):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server program from PATH, else from the newest /usr/lib/postgresql."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parts[-3]))

    return max(candidates, key=version) if candidates else None


def _own_server() -> tuple[str, Callable[[], None]] | str:
    """Start a server on a unix socket in a temporary directory: (dsn, stop), or why not."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "no server of our own: initdb refuses to run as root"
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        return "no server of our own: initdb/pg_ctl not on PATH nor in /usr/lib/postgresql"
    # A unix socket path is limited to about 100 bytes, so a short directory of its own.
    home = Path(tempfile.mkdtemp(prefix="rdpg-"))
    data, log = home / "data", home / "server.log"
    try:
        subprocess.run(
            [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-k {home} -c listen_addresses='' -F"
        subprocess.run(
            [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(home, ignore_errors=True)
        return f"no server of our own: {exc} {detail.decode(errors='replace').strip()}"

    def stop() -> None:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(home, ignore_errors=True)

    return f"host={home} dbname=postgres user=postgres", stop


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A connection string for a maintenance database of a server we may create databases on."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    given = os.environ.get("RESOLVERD_TEST_DSN")
    if given is not None:
        why = _reachable(given)
        if why is not None:
            pytest.fail(f"RESOLVERD_TEST_DSN is set but does not connect: {why}")
        yield given
        return
    candidates = ["" if "PGDATABASE" in os.environ else "dbname=postgres"]
    if "PGHOST" not in os.environ and "PGPORT" not in os.environ:
        candidates.append("host=127.0.0.1 dbname=postgres")
    tried = []
    for dsn in candidates:
        why = _reachable(dsn)
        if why is None:
            yield dsn
            return
        tried.append(f"{dsn or 'libpq defaults'!r}: {why}")
    own = _own_server()
    if isinstance(own, str):
        pytest.skip(f"no PostgreSQL server: {'; '.join(tried)}; {own}")
    dsn, stop = own
    try:
        yield dsn
    finally:
        stop()


@pytest.fixture(scope="session")
def pg_database(pg_server: str) -> Iterator[str]:
    """A connection string for a database created for this session, dropped at its end."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"resolverd_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'"
                    " LC_COLLATE 'C' LC_CTYPE 'C'"
                ).format(sql.Identifier(name))
            )
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a test database: {str(exc).strip()}")
    try:
        yield make_conninfo(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def registry_dsn(pg_database: str) -> str:
    """The session's database with a fresh, empty registry schema."""
    import psycopg

    from resolverd import db

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute(f"DROP SCHEMA IF EXISTS {db.SCHEMA} CASCADE")
    db.init_schema(pg_database)
    return pg_database
