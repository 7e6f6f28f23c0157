"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real broker files live beside the repository (`../shared/data`), never inside it.
SHARED_DATA = Path(
    os.environ.get("RESOLVERD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
KITE_FILE = SHARED_DATA / "kite_instruments_2024-04-03.csv"
FYERS_FILE = SHARED_DATA / "fyers_NSE_CM_2024-06-25.csv"
KITE_MOCKS = SHARED_DATA / "kiteconnect-mocks"


# Modules whose every test runs twice: on the compiled lookups (resolverd/_speedups.c) and on
# the pure-Python ones, which a machine without a C compiler gets. Elsewhere, whichever is built.
BOTH_LOOKUPS = {
    "test_client",
    "test_compiler",
    "test_follow",
    "test_layout_fuzz",
    "test_real_kite",
    "test_ticker",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_LOOKUPS:
        metafunc.fixturenames.append("lookups")
        metafunc.parametrize("lookups", ["compiled", "pure"], indirect=True)


@pytest.fixture
def lookups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which single and batch lookups a resolver opened in this test gets, by
    $RESOLVERD_PURE_PYTHON (which subprocesses inherit too): "compiled" or "pure"."""
    from resolverd import client

    kind: str = getattr(request, "param", "compiled" if client._speedups else "pure")
    if kind == "compiled" and client._speedups is None:
        pytest.skip("resolverd._speedups was not built (no C compiler at install time)")
    monkeypatch.setenv("RESOLVERD_PURE_PYTHON", "1" if kind == "pure" else "0")
    return kind


CONFORMANCE_SNAPSHOT = Path(__file__).resolve().parent / "conformance" / "vectors.snap"


@pytest.fixture(scope="session")
def vectors_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed conformance snapshot, copied with mode 0644: a checkout made under umask
    002 is group-writable, and both readers rightly refuse a snapshot others can write."""
    copy = tmp_path_factory.mktemp("conformance") / "vectors.snap"
    copy.write_bytes(CONFORMANCE_SNAPSHOT.read_bytes())
    copy.chmod(0o644)
    return copy


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real broker data not present at {path} (set RESOLVERD_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def kite_file() -> Path:
    return _require(KITE_FILE)


@pytest.fixture(scope="session")
def fyers_file() -> Path:
    return _require(FYERS_FILE)


@pytest.fixture(scope="session")
def kite_mocks() -> Path:
    return _require(KITE_MOCKS)


def hidden_modules(directory: Path, *modules: str) -> dict[str, str]:
    """An environment for a subprocess in which `modules` cannot be imported, as where they
    are not installed: stand-in packages that fail to import come first on PYTHONPATH and hide
    the installed ones."""
    for module in modules:
        stand_in = directory / module
        stand_in.mkdir(parents=True)
        (stand_in / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {module!r}", name={module!r})\n'
        )
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def without_psycopg(tmp_path: Path) -> dict[str, str]:
    """A subprocess environment without the postgres extra."""
    return hidden_modules(tmp_path / "without-psycopg", "psycopg")


@pytest.fixture
def without_daemon_extra(tmp_path: Path) -> dict[str, str]:
    """A subprocess environment without the daemon extra (pyzmq, uvloop)."""
    return hidden_modules(tmp_path / "without-daemon-extra", "zmq", "uvloop")
