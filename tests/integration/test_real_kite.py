"""The real Kite instruments file, end to end: load, compile, map from a file, resolve."""

from __future__ import annotations

import base64
import datetime as dt
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resolverd import NO_TOKEN, Instrument, Registry, Resolver, compile_snapshot
from resolverd.loaders import load_kite
from resolverd.ticker import decode_kite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(kite_file: Path) -> list[Instrument]:
    return load_kite(kite_file)


@pytest.fixture(scope="module")
def snapshot_path(real: list[Instrument], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kite") / "kite.snap"
    registry = Registry.from_instruments(real, trade_date=dt.date(2024, 4, 3))
    path.write_bytes(compile_snapshot(registry))
    return path


def test_every_row_round_trips_both_ways(real: list[Instrument], snapshot_path: Path) -> None:
    with Resolver.open(snapshot_path, strict=True) as resolver:
        assert len(resolver) == len(real) == 31_373
        for row in real:
            (kite,) = row.tokens
            assert resolver.token(row.key, "kite") == kite.value
            assert resolver.key(kite.value, "kite") == row.key
            assert resolver.record(row.key) == row


def test_batches_agree_with_the_file(real: list[Instrument], snapshot_path: Path) -> None:
    keys = [row.key for row in real]
    tokens = np.array([row.tokens[0].value for row in real], dtype=np.uint64)
    with Resolver.open(snapshot_path) as resolver:
        assert (resolver.tokens(keys, "kite") == tokens).all()
        assert resolver.keys(tokens, "kite").astype(str).tolist() == keys
        unknown = tokens + np.uint64(1 << 40)
        assert (resolver.keys(unknown, "kite") == b"").all()
        assert (resolver.tokens([k + "X" for k in keys[:100]], "kite") == NO_TOKEN).all()


def test_a_kite_ticker_frame_maps_to_keys_in_one_call(
    kite_mocks: Path, snapshot_path: Path
) -> None:
    packets = [
        base64.b64decode((kite_mocks / f"ticker_{m}.packet").read_text()) for m in ("full", "quote")
    ]
    frame = struct.pack(">H", len(packets)) + b"".join(
        struct.pack(">H", len(p)) + p for p in packets
    )
    ticks = decode_kite(frame)
    with Resolver.open(snapshot_path) as resolver:
        assert resolver.keys(ticks["instrument_token"], "kite").tolist() == [b"NSE:INFY"] * 2


def test_the_command_line_compiles_and_resolves_the_real_file(
    kite_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli.snap"
    command = [sys.executable, "-m", "resolverd"]
    compiled = subprocess.run(
        [*command, "compile", f"kite={kite_file}", "--out", str(out), "--trade-date", "2024-04-03"],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    lookup = subprocess.run(
        [*command, "lookup", "NSE:INFY", "NFO:NIFTY24APR22500CE", "-b", "kite", "-s", str(out)],
        capture_output=True,
        text=True,
    )
    assert lookup.stdout == "NSE:INFY\t408065\nNFO:NIFTY24APR22500CE\t17437186\n"
    reverse = subprocess.run(
        [*command, "reverse", "408065", "1", "-f", "kite", "-s", str(out)],
        capture_output=True,
        text=True,
    )
    assert (reverse.returncode, reverse.stdout) == (1, "408065\tNSE:INFY\n1\t(not found)\n")
