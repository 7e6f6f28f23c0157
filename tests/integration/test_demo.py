"""`resolverd demo`, the README's main job: a real daemon serves the universe, a second process
follows it across a swap, and nothing is left behind."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from resolverd.demo import kite_csv_lines
from resolverd.loaders.kite import parse_kite
from resolverd.synthetic import generate_universe

TIMEOUT_S = 60


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # The daemon's ipc:// sockets live in the demo's directory, and a unix socket's path must
    # fit in about 107 bytes, which pytest's tmp_path does not promise.
    with tempfile.TemporaryDirectory(prefix="rd-") as directory:
        yield Path(directory)


def run_demo(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``resolverd demo``; on a timeout stop it with SIGTERM, which it cleans up after (a
    SIGKILL would leave its daemon running), and fail."""
    command = [sys.executable, "-m", "resolverd", "demo", *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"the demo took over {TIMEOUT_S} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.integration
def test_demo_serves_the_universe_and_a_second_process_follows_the_swap(short_dir: Path) -> None:
    result = run_demo("--size", "2000", "--dir", str(short_dir))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    written = re.search(r"^change .* now has Kite token (\d+) \(was (\d+)\)", out, re.M)
    followed = re.search(r"^  reader \| token\(.*\) = (\d+) \(was (\d+)\)", out, re.M)
    assert written is not None, out
    assert followed is not None, out
    assert followed.groups() == written.groups()
    assert written[1] != written[2]
    assert "  reader | swap: generation 1 -> 2, noticed" in out
    assert "SIGTERM: the daemon exited with code 0" in out
    assert re.search(r"^after .* generation 2 in place", out, re.M), out
    assert list(short_dir.iterdir()) == []


def test_the_served_file_reads_back_as_the_universes_kite_columns() -> None:
    registry = generate_universe(2000)
    lines, rows = kite_csv_lines(registry)
    parsed = list(parse_kite(io.StringIO("".join(lines), newline=""), "kite=demo.csv"))

    expected = [
        msgspec.structs.replace(
            instrument, isin="", tokens=tuple(t for t in instrument.tokens if t.broker == "kite")
        )
        for instrument in registry.instruments()
    ]
    assert parsed == expected
    assert [parsed[rows[key] - 1].key for key in registry.keys] == list(registry.keys)
