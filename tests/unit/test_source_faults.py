"""A broker dump replaced by rename while a loader reads it: the load is the complete old file
or the complete new one, never the first part of one and the rest of the other.

The replacement is made deterministic: the file object the loader opens is wrapped so that
its read stops halfway, the new dump is renamed over the path, and the read goes on. This holds
because the loader reads through the one descriptor it opened (the old inode), not by name.
The in-place rewrite, which no reader can make atomic, is refused by the daemon's gates; see
``tests/integration/test_faults.py``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from resolverd import Registry
from resolverd.sources import build_registry

HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    "lot_size,instrument_type,segment,exchange"
)


def kite_dump(count: int, first_exchange_token: int) -> str:
    """`count` NSE equities SYM0.., numbered from `first_exchange_token` (token = et << 8 | 1)."""
    rows = [
        f"{(et := first_exchange_token + i) << 8 | 1},{et},SYM{i},SYM {i},0,,0,0.05,1,EQ,NSE,NSE"
        for i in range(count)
    ]
    return "".join(f"{line}\n" for line in (HEADER, *rows))


def kite_tokens(registry: Registry) -> dict[str, int | str]:
    return {i.key: t.value for i in registry.instruments() for t in i.tokens if t.feed == "kite"}


class SwappedHalfway:
    """A binary file whose first `read()` returns its first half, then renames `replacement`
    over the file's path, then reads the rest from the same descriptor."""

    def __init__(self, file: Any, path: Path, replacement: Path) -> None:
        self.file, self.path, self.replacement = file, path, replacement
        self.swapped = False

    def read(self, size: int = -1) -> bytes:
        if self.swapped:
            return bytes(self.file.read(size))
        first = self.file.read(os.fstat(self.file.fileno()).st_size // 2)
        os.replace(self.replacement, self.path)
        self.swapped = True
        return bytes(first + self.file.read(-1 if size < 0 else size - len(first)))

    def __enter__(self) -> SwappedHalfway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def test_a_dump_renamed_over_the_one_being_read_gives_the_whole_old_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump, replacement = tmp_path / "instruments.csv", tmp_path / "instruments.csv.new"
    dump.write_text(kite_dump(300, 1000))
    replacement.write_text(kite_dump(400, 5000))
    opened: list[SwappedHalfway] = []
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, *args, **kwargs)
        if self == dump and not opened:
            opened.append(SwappedHalfway(file, dump, replacement))
            return opened[0]
        return file

    monkeypatch.setattr(Path, "open", open_)
    trade_date = dt.date(2024, 4, 3)

    registry, _ = build_registry([f"kite={dump}"], trade_date=trade_date)

    assert opened and opened[0].swapped, "the loader no longer reads through Path.open"
    assert not replacement.exists()  # the rename happened in the middle of the read
    assert kite_tokens(registry) == {f"NSE:SYM{i}": (1000 + i) << 8 | 1 for i in range(300)}

    registry, _ = build_registry([f"kite={dump}"], trade_date=trade_date)
    assert kite_tokens(registry) == {f"NSE:SYM{i}": (5000 + i) << 8 | 1 for i in range(400)}
