"""Shared by the tests that run `resolverd serve`: a small Kite source and the daemon process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resolverd import UnavailableError
from resolverd.daemon.control import request

HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    "lot_size,instrument_type,segment,exchange"
)
AARTI = "1793,7,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE"
AARTI_RENUMBERED = "2049,8,AARTIIND,AARTI INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE"
NIFTY_CALL = "17437186,68114,NIFTY24APR22500CE,NIFTY,0,25-04-2024,22500,0.05,50,CE,NFO-OPT,NFO"
TRADE_DATE = "2024-04-03"


def write_kite(path: Path, *rows: str) -> None:
    """Replace the file atomically, as a broker dump is replaced."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(f"{line}\n" for line in (HEADER, *rows)))
    os.replace(temporary, path)


def ingest(dsn: str, kite: Path) -> None:
    """`resolverd db ingest kite=KITE` into the registry at `dsn`, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "resolverd", "db", "ingest", f"kite={kite}"],
        env={**os.environ, "RESOLVERD_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (UnavailableError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Daemon:
    """One `resolverd serve` subprocess publishing registry `universe` in `directory`."""

    def __init__(self, directory: Path, sources: list[str], **env: str) -> None:
        self.directory = directory
        self.sources = sources
        self.env = {
            **os.environ,
            "RESOLVERD__REGISTRIES__UNIVERSE__WATCH_INTERVAL_SECONDS": "0.05",
            "RESOLVERD__REGISTRIES__UNIVERSE__DEBOUNCE_SECONDS": "0",
            "RESOLVERD__REGISTRIES__UNIVERSE__RETRY_SECONDS": "3600",
            "RESOLVERD__REGISTRIES__UNIVERSE__SCHEDULE": "[]",
            "RESOLVERD__DAEMON__GRACE_SECONDS": "0.2",
            **env,
        }
        self.log = directory.parent / f"{directory.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> str:
        return f"ipc://{self.directory / 'resolverd.control'}"

    def start(self, *, wait: bool = True) -> Daemon:
        command = [sys.executable, "-m", "resolverd", "serve", *self.sources, "--name"]
        command += ["universe", "--dir", str(self.directory), "--trade-date", TRADE_DATE]
        command += ["--metrics", "127.0.0.1:0"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stderr=log)
        if wait:
            wait_for(self._answers, "the daemon to answer status")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the daemon exited with {self.process.returncode}:\n{self.output()}")
        request(self.control, "status", timeout=0.5)
        return True

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = request(self.control, "status")["registries"]["universe"]
        return result

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# The fixtures most daemon tests share (imported by tests/integration/conftest.py).


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """An empty publishing directory."""
    folder = tmp_path / "shm"
    folder.mkdir()
    return folder


@pytest.fixture
def kite(tmp_path: Path) -> Path:
    """A two-row Kite master: AARTIIND (1793) and a NIFTY call (17437186)."""
    path = tmp_path / "instruments.csv"
    write_kite(path, AARTI, NIFTY_CALL)
    return path


@pytest.fixture
def daemon(directory: Path, kite: Path) -> Iterator[Daemon]:
    """`resolverd serve kite=<kite>` publishing registry `universe` in `directory`."""
    running = Daemon(directory, [f"kite={kite}"]).start()
    yield running
    running.stop()
