"""Angel One scrip master writer: instruments -> ``OpenAPIScripMaster.json`` (the format is
documented in `resolverd.loaders.angel`).

Every instrument with an ``angel`` token is written, as one object of nine string values in
Angel's key order, the whole array on one line as Angel serves it. ``exch_seg`` is the token's
feed less its ``angel:`` prefix, ``token`` the token's value. What it writes for the fields Angel
fills from data this writer does not have:

- ``symbol``: the key's symbol as it is, so that the key reads back unchanged; on NSE cash an
  ``-EQ`` is added unless the symbol already ends in a series tag (``-BE``, ``-SM``, ``-SG``: a dash
  and two letters or digits), as Angel writes NSE cash symbols. Derivatives keep the key's
  (Kite-style) symbol rather than Angel's own ``NIFTY25APR2422500CE``; the loader reads only the
  CE/PE at its end.
- ``instrumenttype``: empty on cash, ``AMXIDX`` on an index; ``FUTIDX``/``OPTIDX`` on NFO and
  BFO when the underlying is not a cash symbol among the same instruments, ``FUTSTK``/``OPTSTK``
  when it is; ``FUTCUR``/``OPTCUR`` on CDS and BCD, ``FUTCOM``/``OPTFUT`` on MCX and NCO.
- ``strike`` times 100 (times 10**7 for a currency option) with six decimals; ``-1.000000``
  where there is no strike, ``0.000000`` on an index. ``tick_size`` in paise, six decimals.

Angel serves the master as plain JSON; a path ending in ``.gz`` is gzipped all the same, for
benchmarks of the gzip path.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from pathlib import Path

import msgspec

from resolverd.model import Instrument

__all__ = ["write_angel"]

_CURRENCY = frozenset({"CDS", "BCD"})
_COMMODITY = frozenset({"MCX", "NCO"})
_SERIES = re.compile(r"-[A-Z0-9]{2}$")  # NSE's series tags are two characters: -BE, -SM, -N1


class _Row(msgspec.Struct, gc=False):
    token: str
    symbol: str
    name: str
    expiry: str
    strike: str
    lotsize: str
    instrumenttype: str
    exch_seg: str
    tick_size: str


def write_angel(instruments: Iterable[Instrument], path: Path) -> int:
    """Write the instruments that carry an Angel token to `path`; returns the rows written."""
    listed = [
        (instrument, token)
        for instrument in instruments
        for token in instrument.tokens
        if token.broker == "angel"
    ]
    stocks = {i.key.partition(":")[2] for i, _ in listed if i.segment in ("NSE", "BSE")}
    rows = []
    for instrument, token in listed:
        seg = token.feed.partition(":")[2]
        symbol = instrument.key.partition(":")[2]
        itype = instrument.instrument_type
        expiry = "" if instrument.expiry is None else instrument.expiry.strftime("%d%b%Y").upper()
        if instrument.segment == "INDICES":
            kind, strike = "AMXIDX", "0.000000"
        elif itype in ("FUT", "CE", "PE"):
            kind = _derivative_kind(seg, itype, instrument.name in stocks)
            if itype == "FUT":
                strike = "-1.000000"
            else:
                scale = 1e7 if seg in _CURRENCY else 100.0
                strike = f"{instrument.strike * scale:.6f}"
        else:
            kind, strike = "", "-1.000000"
            if seg == "NSE" and not _SERIES.search(symbol):
                symbol += "-EQ"
        rows.append(
            _Row(
                token=str(token.value),
                symbol=symbol,
                name=instrument.name,
                expiry=expiry,
                strike=strike,
                lotsize=str(instrument.lot_size),
                instrumenttype=kind,
                exch_seg=seg,
                tick_size=f"{instrument.tick_size * 100:.6f}",
            )
        )
    data = msgspec.json.encode(rows)
    path.write_bytes(gzip.compress(data, compresslevel=6) if path.name.endswith(".gz") else data)
    return len(rows)


def _derivative_kind(seg: str, itype: str, on_a_stock: bool) -> str:
    option = itype != "FUT"
    if seg in _CURRENCY:
        return "OPTCUR" if option else "FUTCUR"
    if seg in _COMMODITY:
        return "OPTFUT" if option else "FUTCOM"
    tail = "STK" if on_a_stock else "IDX"
    return f"OPT{tail}" if option else f"FUT{tail}"
