"""A synthetic, deterministic Indian instrument universe of any size, built straight into columns.

`generate_universe(n, seed=...)` returns a `Registry` of exactly `n` instruments: the demo's
built-in default and the benchmarks' input. The same `n`, `seed` and `trade_date` always give
the same registry, byte for byte; another seed gives other names, prices and tokens.

What it contains, in this row order (each family's share of `n` is fixed, so the mix stays
roughly that of the real market at every size, and the bulk of a large universe is options):

====================  =====  ============================================================
family                share  contents
====================  =====  ============================================================
NSE cash                 8%  equities; most in the EQ series, some ``-BE``, ``-SM``, ``-ST``,
                             ``-BZ``
BSE cash                11%  half listed on NSE too (same symbol and ISIN), half BSE-only
NFO index               12%  NIFTY, BANKNIFTY, FINNIFTY, MIDCPNIFTY: 3 monthly futures,
                             weekly and monthly options; NIFTY also quarterly and long-dated
NFO stock               41%  3 monthly futures and options on NSE EQ-series stocks
BFO                     12%  SENSEX, BANKEX: 3 monthly futures, weekly and monthly options
MCX                      8%  CRUDEOIL, GOLD, SILVER, NATURALGAS, COPPER, ...: futures on the
                             commodity's own contract months, options on the nearest ones
CDS                      8%  USDINR (12 monthly futures, weekly and monthly options),
                             EURINR, GBPINR, JPYINR
====================  =====  ============================================================

Indices themselves (Kite's ``INDICES`` segment) are not listed.

A family takes its underlyings in order, futures first and then one option chain per expiry,
until it has its share of rows; the last chain is cut where the share ends. Strikes per chain
grow with ``sqrt(n / 100,000)`` (capped at four times the base count, and never below 20% of
the underlying's price), so a universe larger than the real market gets more underlyings, never
impossible strikes: past the real names come invented ones made of pronounceable syllables
(``KALOMIR``, ``NIFTYBEDASU``, ``DIVUKINEX``, ``VOJINR``).

Formats follow Kite's instrument dump: keys are ``EXCHANGE:TRADINGSYMBOL``; options are
``NIFTY24APR22500CE`` on a monthly expiry and ``NIFTY2441122500CE`` on a weekly one (year,
month as 1-9 or O/N/D, day), futures ``NIFTY24APRFUT``; segments are Kite's (``NFO-OPT``...).
Expiries are the real weekday rules of April 2024 (NIFTY Thursday, BANKNIFTY Wednesday,
FINNIFTY Tuesday, MIDCPNIFTY and BANKEX Monday, SENSEX Friday, stocks the last Thursday),
without exchange holidays; none is before `trade_date`. Real underlyings' prices and lot sizes
are approximate figures of that date, used only to place strikes.

Exchange tokens are unique within each exchange segment (one Kite segment id), allocated in
consecutive runs per option chain, as exchanges do, with the runs shuffled and small gaps
between them. Broker tokens, all row-aligned and every broker listing every instrument:

- ``kite``: ``exchange_token << 8 | segment_id`` (NSE=1, NFO=2, CDS=3, BSE=4, BFO=5, MCX=7),
  below 2**32 as Kite's are; one feed, ``kite``.
- ``fyers``: the Fytoken, the decimal digits of exchange code and segment code (NSE CM 1010,
  NSE FO 1011, NSE CD 1012, MCX 1120, BSE CM 1210, BSE FO 1211), then the expiry as YYMMDD
  (``000000`` for cash), then the exchange token, read as one integer. This is Fyers' documented
  Fytoken, and the cash form ``1010`` + ``000000`` + scrip code holds on every row of the real
  NSE_CM master in ``shared/data``: NSE:RELIANCE with token 2885 is 10100000002885, a derivative
  expiring 2024-04-25 with token 67904 is 101124042567904. One feed, ``fyers``.
- ``angel``: the exchange token itself, so one feed per exchange segment (``angel:NFO``).
- ``upstox``: ``NSE_EQ|<ISIN>`` and ``BSE_EQ|<ISIN>`` for equities, ``NSE_FO|<token>``,
  ``BSE_FO|``, ``MCX_FO|``, ``NCD_FO|`` for derivatives; one feed, ``upstox``.

Speed: columns are numpy arrays built per option chain and repeated per row; Python touches a
row only to make its key, and the string token columns are made in bulk from byte arrays.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .errors import UnknownNameError
from .model import Categorical, Registry, TokenColumn, date_to_days

__all__ = ["BROKERS", "DEFAULT_TRADE_DATE", "generate_universe"]

BROKERS = ("kite", "fyers", "angel", "upstox")
DEFAULT_TRADE_DATE = dt.date(2024, 4, 3)

EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "MCX", "CDS")
NSE, BSE, NFO, BFO, MCX, CDS = range(len(EXCHANGES))
SEGMENTS = (
    "NSE",
    "BSE",
    "NFO-FUT",
    "NFO-OPT",
    "BFO-FUT",
    "BFO-OPT",
    "MCX-FUT",
    "MCX-OPT",
    "CDS-FUT",
    "CDS-OPT",
)
# Each exchange's futures and options segments, as codes into SEGMENTS.
FUT_SEGMENT = {NFO: 2, BFO: 4, MCX: 6, CDS: 8}
OPT_SEGMENT = {NFO: 3, BFO: 5, MCX: 7, CDS: 9}
INSTRUMENT_TYPES = ("EQ", "FUT", "CE", "PE")
EQ, FUT, CE = 0, 1, 2

KITE_SEGMENT_ID = (1, 4, 2, 5, 7, 3)  # by exchange code
FYERS_PREFIX = (1010, 1210, 1011, 1211, 1120, 1012)
UPSTOX_PREFIX = (b"NSE_EQ|", b"BSE_EQ|", b"NSE_FO|", b"BSE_FO|", b"MCX_FO|", b"NCD_FO|")
# Where each exchange's tokens start, and the largest gap left between two runs of them.
TOKEN_BASE = (1, 500_001, 35_001, 800_001, 230_001, 1_001)
TOKEN_GAP = (6, 3, 2, 2, 5, 2)

# Shares of n, in per mille, in the order the families are built; NFO stock takes the rest.
SHARES = {"nse": 80, "bse": 110, "nfo_index": 120, "bfo": 120, "mcx": 80, "cds": 80}

REAL_MARKET_SIZE = 100_000  # instruments: strikes per chain are the base counts at this n
MAX_STRIKE_SCALE = 4.0
SCALE = 10_000  # strikes are handled as integers in units of 1/SCALE so text and value agree

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKLY_MONTHS = "123456789OND"
MON, TUE, WED, THU, FRI = range(5)

# symbol, company name, price, lot size, strike step: F&O stocks, priced around April 2024.
REAL_STOCKS = (
    ("RELIANCE", "RELIANCE INDUSTRIES", 2950, 250, 20),
    ("TCS", "TATA CONSULTANCY SERV LT", 3950, 175, 50),
    ("HDFCBANK", "HDFC BANK", 1450, 550, 10),
    ("INFY", "INFOSYS", 1490, 400, 20),
    ("ICICIBANK", "ICICI BANK", 1090, 700, 10),
    ("SBIN", "STATE BANK OF INDIA", 760, 1500, 5),
    ("BHARTIARTL", "BHARTI AIRTEL", 1220, 950, 20),
    ("ITC", "ITC", 430, 1600, 5),
    ("KOTAKBANK", "KOTAK MAHINDRA BANK", 1780, 400, 20),
    ("LT", "LARSEN & TOUBRO", 3780, 150, 50),
    ("AXISBANK", "AXIS BANK", 1060, 625, 10),
    ("HINDUNILVR", "HINDUSTAN UNILEVER", 2250, 300, 20),
    ("BAJFINANCE", "BAJAJ FINANCE", 7300, 125, 100),
    ("MARUTI", "MARUTI SUZUKI INDIA", 12600, 50, 100),
    ("TATAMOTORS", "TATA MOTORS", 1000, 1425, 10),
    ("TATASTEEL", "TATA STEEL", 158, 5500, 2.5),
    ("SUNPHARMA", "SUN PHARMACEUTICAL IND L", 1610, 700, 20),
    ("M&M", "MAHINDRA & MAHINDRA", 1950, 700, 20),
    ("WIPRO", "WIPRO", 480, 1500, 5),
    ("ADANIENT", "ADANI ENTERPRISES", 3200, 300, 50),
    ("ADANIPORTS", "ADANI PORT & SEZ", 1350, 800, 20),
    ("ONGC", "OIL AND NATURAL GAS CORP", 270, 3850, 2.5),
    ("NTPC", "NTPC", 340, 1500, 5),
    ("POWERGRID", "POWER GRID CORP", 280, 3600, 2.5),
    ("BAJAJ-AUTO", "BAJAJ AUTO", 9000, 75, 100),
    ("ASIANPAINT", "ASIAN PAINTS", 2850, 200, 20),
    ("TITAN", "TITAN COMPANY", 3800, 175, 50),
    ("ULTRACEMCO", "ULTRATECH CEMENT", 9800, 100, 100),
    ("HCLTECH", "HCL TECHNOLOGIES", 1550, 700, 20),
    ("TECHM", "TECH MAHINDRA", 1250, 600, 20),
    ("COALINDIA", "COAL INDIA", 450, 2100, 5),
    ("DLF", "DLF", 900, 1650, 10),
    ("HINDALCO", "HINDALCO INDUSTRIES", 560, 1400, 10),
    ("JSWSTEEL", "JSW STEEL", 830, 1350, 10),
    ("IDEA", "VODAFONE IDEA", 13.5, 80000, 1),
    ("PNB", "PUNJAB NATIONAL BANK", 125, 8000, 1),
    ("AARTIIND", "AARTI INDUSTRIES", 650, 1000, 10),
    ("ABCAPITAL", "ADITYA BIRLA CAPITAL", 180, 5400, 2.5),
    ("ACC", "ACC", 2500, 300, 20),
    ("ABB", "ABB INDIA", 6400, 125, 100),
)
# name, price, strike step, lot size, expiry weekday, long-dated chains.
NFO_INDICES = (
    ("NIFTY", 22450, 50, 50, THU, True),
    ("BANKNIFTY", 47600, 100, 15, WED, False),
    ("FINNIFTY", 21200, 50, 40, TUE, False),
    ("MIDCPNIFTY", 10350, 25, 75, MON, False),
)
BFO_INDICES = (
    ("SENSEX", 73900, 100, 10, FRI, False),
    ("BANKEX", 54000, 100, 15, MON, False),
)
# name, price, strike step (0: no options), lot size, tick size, contract months (empty:
# every month), day of the month the future expires (moved back to a weekday).
COMMODITIES = (
    ("CRUDEOIL", 6900, 50, 100, 1.0, (), 19),
    ("GOLD", 69000, 100, 100, 1.0, (2, 4, 6, 8, 10, 12), 5),
    ("SILVER", 78000, 250, 30, 1.0, (3, 5, 7, 9, 12), 5),
    ("NATURALGAS", 150, 5, 1250, 0.1, (), 25),
    ("COPPER", 780, 5, 2500, 0.05, (), 31),
    ("CRUDEOILM", 6900, 50, 10, 1.0, (), 19),
    ("GOLDM", 69000, 100, 10, 1.0, (), 5),
    ("SILVERM", 78000, 250, 5, 1.0, (2, 4, 6, 8, 11), 30),
    ("NATGASMINI", 150, 5, 250, 0.1, (), 25),
    ("ZINC", 225, 2.5, 5000, 0.05, (), 31),
    ("ALUMINIUM", 210, 2.5, 5000, 0.05, (), 31),
    ("LEAD", 180, 1, 5000, 0.05, (), 31),
    ("NICKEL", 1500, 0, 1500, 0.1, (), 31),
    ("MENTHAOIL", 950, 0, 360, 0.1, (), 31),
    ("SILVERMIC", 78000, 0, 1, 1.0, (2, 4, 6, 8, 11), 30),
)
# name, price, USDINR-style schedule (12 monthly futures, weekly options).
CURRENCIES = (
    ("USDINR", 83.4, True),
    ("EURINR", 90.1, False),
    ("GBPINR", 105.3, False),
    ("JPYINR", 55.1, False),
)
CURRENCY_CODES = ("AUD", "CAD", "CHF", "SGD", "HKD", "CNH", "AED", "SAR", "NZD", "ZAR", "SEK")
SERIES = ("", "-BE", "-SM", "-ST", "-BZ")
SERIES_WEIGHTS = (0.80, 0.08, 0.07, 0.03, 0.02)
COMPANY_WORDS = (
    "INDUSTRIES",
    "FINANCE",
    "PHARMA",
    "TEXTILES",
    "CHEMICALS",
    "STEEL",
    "POWER",
    "INFRA",
    "LABS",
    "MOTORS",
    "FOODS",
    "TECH",
    "CAPITAL",
    "ENERGY",
    "CEMENT",
    "AGRO",
    "HOLDINGS",
    "SYSTEMS",
    "PAPERS",
    "POLYMERS",
)
# NSE's usual strike interval below each price.
STRIKE_STEPS = (
    (25, 0.5),
    (100, 1.0),
    (250, 2.5),
    (500, 5.0),
    (1000, 10.0),
    (2500, 20.0),
    (5000, 50.0),
    (10_000, 100.0),
    (20_000, 250.0),
)
# Base strikes per near chain at the real market's size.
INDEX_STRIKES, STOCK_STRIKES, COMMODITY_STRIKES, CURRENCY_STRIKES = 90, 20, 30, 40

# Invented names: three (or four) consonant-vowel syllables and an optional closing consonant.
# "CH" and "SH" are the only two-letter onsets and H never starts a syllable alone, so every
# name splits into syllables one way only: distinct numbers give distinct names.
ONSETS = ("B", "D", "G", "K", "L", "M", "N", "P", "R", "S", "T", "V", "J", "CH", "SH")
SYLLABLES = tuple(c + v for c in ONSETS for v in "AEIOU")
CODAS = ("", "N", "R", "S")
SHORT_NAMES = len(CODAS) * len(SYLLABLES) ** 3
RESERVED_NAMES = 10_000  # the top of the short names, kept for invented indices and commodities


def generate_universe(
    n: int,
    *,
    seed: int = 0,
    trade_date: dt.date = DEFAULT_TRADE_DATE,
    brokers: Sequence[str] = BROKERS,
) -> Registry:
    """A registry of exactly `n` synthetic instruments, the same for the same arguments.

    `brokers` chooses the token columns, in that order, from ``kite``, ``fyers``, ``angel`` and
    ``upstox``; every instrument has a token in each. Sizes from 1,000 to 5,000,000 are the
    intended range. Raises ValueError for ``n < 1`` and `UnknownNameError` for an unknown
    broker.
    """
    if n < 1:
        raise ValueError(f"a universe needs at least one instrument, not {n}")
    for broker in brokers:
        if broker not in BROKERS:
            raise UnknownNameError(f"unknown broker {broker!r}; choose from {', '.join(BROKERS)}")
    rng = np.random.default_rng(seed)
    names = _Names(rng)
    budget = {family: n * share // 1000 for family, share in SHARES.items()}
    budget["nfo_stock"] = n - sum(budget.values())
    scale = min(MAX_STRIKE_SCALE, math.sqrt(n / REAL_MARKET_SIZE))

    cash = _cash(budget["nse"], budget["bse"], names, rng)
    chains = _Chains(scale)
    td = trade_date
    chains.fill(budget["nfo_index"], _indices(td, NFO, NFO_INDICES, "NIFTY{}", names, rng))
    chains.fill(budget["nfo_stock"], _stocks(td, cash.fno_symbols, names, rng))
    chains.fill(budget["bfo"], _indices(td, BFO, BFO_INDICES, "{}EX", names, rng))
    chains.fill(budget["mcx"], _commodities(td, names, rng))
    chains.fill(budget["cds"], _currencies(td, names, rng))
    derived = chains.columns()

    exchange = np.concatenate([cash.exchange, derived.exchange])
    sizes = np.concatenate([np.ones(len(cash.keys), np.int64), derived.group_size])
    group_exchange = np.concatenate([cash.exchange, derived.group_exchange])
    exchange_token = _exchange_tokens(group_exchange, sizes, rng)
    expiry = np.concatenate([np.zeros(len(cash.keys), np.int32), derived.expiry])
    isin = np.concatenate([cash.isin, np.zeros(len(derived.exchange), "S12")])
    make = {
        "kite": lambda: _kite(exchange, exchange_token),
        "fyers": lambda: _fyers(exchange, exchange_token, expiry),
        "angel": lambda: _angel(exchange, exchange_token),
        "upstox": lambda: _upstox(exchange, exchange_token, isin),
    }
    return Registry(
        keys=cash.keys + chains.keys,
        exchange=_compact(exchange, EXCHANGES),
        segment=_compact(np.concatenate([cash.segment, derived.segment]), SEGMENTS),
        instrument_type=_compact(
            np.concatenate([np.full(len(cash.keys), EQ, np.uint32), derived.instrument_type]),
            INSTRUMENT_TYPES,
        ),
        name=_merge_names((cash.name, cash.name_table), (derived.name, derived.name_table)),
        expiry_days=expiry,
        strike=np.concatenate([np.zeros(len(cash.keys)), derived.strike]),
        tick_size=np.concatenate([np.full(len(cash.keys), 0.05), derived.tick_size]),
        lot_size=np.concatenate([np.ones(len(cash.keys), np.uint32), derived.lot_size]),
        isin=isin,
        exchange_token=exchange_token,
        tokens=tuple(make[broker]() for broker in brokers),
        trade_date=trade_date,
    )


class _Names:
    """Invented names, a bijection from a number to a pronounceable word that depends on the
    seed. Numbers below `SHORT_NAMES` give three syllables (6 to 9 letters), the rest four."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._shuffles = [_affine(rng, SHORT_NAMES), _affine(rng, 4 * len(SYLLABLES) ** 4)]
        self._real = {s[0] for s in REAL_STOCKS} | {c[0] for c in COMMODITIES}
        self.next_stock = 0  # the next number for a stock's symbol
        self.next_other = SHORT_NAMES - RESERVED_NAMES

    def words(self, numbers: NDArray[np.int64]) -> list[str]:
        short = numbers < SHORT_NAMES
        out: list[str] = [""] * len(numbers)
        for tier, (a, b, size) in enumerate(self._shuffles):
            rows = np.flatnonzero(short if tier == 0 else ~short)
            x = ((numbers[rows] - tier * SHORT_NAMES) * a + b) % size
            parts = [[CODAS[c] for c in (x % len(CODAS)).tolist()]]
            x //= len(CODAS)
            for _ in range(3 + tier):
                parts.append([SYLLABLES[d] for d in (x % len(SYLLABLES)).tolist()])
                x //= len(SYLLABLES)
            for row, *pieces in zip(rows.tolist(), *reversed(parts), strict=True):
                out[row] = "".join(pieces)
        return out

    def stocks(self, count: int) -> list[str]:
        """`count` new stock symbols; they skip the numbers kept for other names."""
        out: list[str] = []
        while len(out) < count:
            want = count - len(out)
            first = self.next_stock
            numbers = np.arange(first, first + want, dtype=np.int64)
            numbers[numbers >= SHORT_NAMES - RESERVED_NAMES] += RESERVED_NAMES
            self.next_stock += want
            out += [w for w in self.words(numbers) if w not in self._real]
        return out

    def other(self) -> str:
        """One new name for an invented index, commodity or currency."""
        while True:
            self.next_other += 1
            if self.next_other > SHORT_NAMES:
                raise ValueError("out of invented names")
            word = self.words(np.array([self.next_other - 1], dtype=np.int64))[0]
            if word not in self._real:
                return word


def _affine(rng: np.random.Generator, size: int) -> tuple[int, int, int]:
    """x -> (a*x + b) mod size, a bijection of range(size) chosen by the seed."""
    while True:
        a = int(rng.integers(size // 3, size))
        if math.gcd(a, size) == 1:
            return a, int(rng.integers(size)), size


@dataclass
class _Cash:
    keys: list[str]
    exchange: NDArray[np.uint32]
    segment: NDArray[np.uint32]
    name: NDArray[np.uint32]
    name_table: list[str]
    isin: NDArray[np.bytes_]
    fno_symbols: list[str]  # NSE EQ-series symbols, the stock derivatives' underlyings


def _cash(n_nse: int, n_bse: int, names: _Names, rng: np.random.Generator) -> _Cash:
    """NSE and BSE equities. A dual-listed company has one symbol, one name and one ISIN on both
    exchanges (and so two distinct Upstox tokens, ``NSE_EQ|`` and ``BSE_EQ|``)."""
    real = REAL_STOCKS[:n_nse]
    symbols = [s[0] for s in real] + names.stocks(n_nse - len(real))
    companies = [s[1] for s in real] + _company_names(symbols[len(real) :], rng)
    series = np.concatenate(
        [
            np.zeros(len(real), np.intp),
            rng.choice(len(SERIES), size=n_nse - len(real), p=SERIES_WEIGHTS),
        ]
    )
    nse_keys = [f"NSE:{s}{SERIES[k]}" for s, k in zip(symbols, series.tolist(), strict=True)]
    # BSE lists the mainboard companies (EQ and BE series), not NSE's SME platform.
    mainboard = np.flatnonzero(series <= 1)
    dual = mainboard[: min(len(mainboard), n_bse // 2)].tolist()
    bse_only = names.stocks(n_bse - len(dual))
    bse_symbols = [symbols[i] for i in dual] + bse_only
    bse_keys = [f"BSE:{s}" for s in bse_symbols]
    table = companies + _company_names(bse_only, rng)
    name = np.concatenate(
        [
            np.arange(n_nse, dtype=np.uint32),
            np.array(dual, dtype=np.uint32),
            np.arange(n_nse, len(table), dtype=np.uint32),
        ]
    )
    isins = _isins(len(table), rng)
    return _Cash(
        keys=nse_keys + bse_keys,
        exchange=np.repeat(np.array([NSE, BSE], np.uint32), [n_nse, n_bse]),
        segment=np.repeat(np.array([0, 1], np.uint32), [n_nse, n_bse]),  # "NSE", "BSE"
        name=name,
        name_table=table,
        isin=isins[name],
        fno_symbols=[symbols[i] for i in np.flatnonzero(series == 0).tolist()],
    )


def _company_names(symbols: list[str], rng: np.random.Generator) -> list[str]:
    suffix = rng.integers(len(COMPANY_WORDS), size=len(symbols)).tolist()
    return [f"{s} {COMPANY_WORDS[k]}" for s, k in zip(symbols, suffix, strict=True)]


def _isins(count: int, rng: np.random.Generator) -> NDArray[np.bytes_]:
    """`count` distinct ISINs of Indian companies' equity: ``INE``, a 4-character issuer code
    (3 digits and a letter), security type ``01``, a 2-digit serial, a Luhn check digit."""
    a, b, size = _affine(rng, 26_000 * 99)
    q = (np.arange(count, dtype=np.int64) * a + b) % size
    issuer, serial = q % 26_000, q // 26_000 + 1
    chars = np.zeros((count, 12), np.uint8)
    chars[:, :3] = np.frombuffer(b"INE", np.uint8)
    number, letter = issuer // 26, issuer % 26
    chars[:, 3] = 48 + number // 100
    chars[:, 4] = 48 + number // 10 % 10
    chars[:, 5] = 48 + number % 10
    chars[:, 6] = 65 + letter
    chars[:, 7:9] = np.frombuffer(b"01", np.uint8)
    chars[:, 9] = 48 + serial // 10
    chars[:, 10] = 48 + serial % 10
    chars[:, 11] = 48 + _luhn_check(chars[:, :11])
    return chars.view("S12").reshape(count)


def _luhn_check(chars: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """ISIN check digits (ISO 6166): letters become two digits (A=10 ... Z=35), then Luhn over
    the digits with the doubling starting at the rightmost one."""
    total = np.zeros(len(chars), np.int64)
    position = np.zeros(len(chars), np.int64)  # digits already taken, counted from the right
    for column in range(chars.shape[1] - 1, -1, -1):
        c = chars[:, column].astype(np.int64)
        value = np.where(c >= 65, c - 55, c - 48)
        pieces = [(value % 10, np.ones(len(c), bool)), (value // 10, value >= 10)]
        for digit, present in pieces:
            doubled = digit * 2
            doubled = np.where(doubled > 9, doubled - 9, doubled)
            total += np.where(present, np.where(position % 2 == 0, doubled, digit), 0)
            position += present
    return ((10 - total % 10) % 10).astype(np.uint8)


_Chain = tuple[dt.date, bool, float, float]  # expiry, monthly, strikes, step factor


@dataclass
class _Underlying:
    """One underlying's contracts: its futures' expiries and its option chains."""

    exchange: int
    name: str
    price: float
    step: float  # strike step of near chains; 0 when it has no options
    lot: int
    tick: float
    futures: list[dt.date]
    chains: list[_Chain]


@dataclass
class _Columns:
    exchange: NDArray[np.uint32]
    segment: NDArray[np.uint32]
    instrument_type: NDArray[np.uint32]
    name: NDArray[np.uint32]
    name_table: list[str]
    expiry: NDArray[np.int32]
    strike: NDArray[np.float64]
    tick_size: NDArray[np.float64]
    lot_size: NDArray[np.uint32]
    group_size: NDArray[np.int64]
    group_exchange: NDArray[np.uint32]


@dataclass
class _Chains:
    """Derivative rows, gathered one group at a time: a future (one row) or an option chain
    (strike by strike, CE then PE). Rows of a group differ only in key, strike and type."""

    scale: float
    keys: list[str] = field(default_factory=list)
    groups: list[tuple[int, int, int, int, int, float, int, int, int, int]] = field(
        default_factory=list
    )
    names: dict[str, int] = field(default_factory=dict)
    _grids: dict[tuple[int, int], tuple[int, list[str]]] = field(default_factory=dict)

    def fill(self, budget: int, underlyings: Iterator[_Underlying]) -> None:
        """Add the underlyings' contracts in order until exactly `budget` rows are added."""
        left = budget
        for u in underlyings:
            if left <= 0:
                return
            left = self._add(u, left)

    def _add(self, u: _Underlying, left: int) -> int:
        prefix = f"{EXCHANGES[u.exchange]}:{u.name}"
        name = self.names.setdefault(u.name, len(self.names))
        for expiry in u.futures:
            if left <= 0:
                return left
            self.keys.append(f"{prefix}{_monthly_code(expiry)}FUT")
            segment = FUT_SEGMENT[u.exchange]
            days = date_to_days(expiry)
            self.groups.append((u.exchange, segment, name, days, u.lot, u.tick, 0, 0, 0, 1))
            left -= 1
        for expiry, monthly, base, factor in u.chains:
            if left <= 0:
                return left
            step = round(u.step * factor * SCALE)
            atm = round(u.price * SCALE / step) * step
            strikes = max(2, round(base * self.scale))
            strikes = min(strikes, 2 * int(0.8 * atm / step))  # never below 20% of the price
            tails = self._tails(atm, step, strikes)[:left]
            head = prefix + (_monthly_code(expiry) if monthly else _weekly_code(expiry))
            self.keys += [head + tail for tail in tails]
            low = atm - strikes // 2 * step
            segment = OPT_SEGMENT[u.exchange]
            days = date_to_days(expiry)
            self.groups.append(
                (u.exchange, segment, name, days, u.lot, u.tick, low, step, 1, len(tails))
            )
            left -= len(tails)
        return left

    def _tails(self, atm: int, step: int, strikes: int) -> list[str]:
        """``22400CE``, ``22400PE``, ``22450CE``...: the ends of a chain's keys, `strikes`
        strikes centred on `atm`. One list per (atm, step) serves every narrower chain."""
        half = strikes // 2
        widest, tails = self._grids.get((atm, step), (-1, []))
        if half > widest:
            widest = half
            tails = [
                _strike_text(atm + k * step) + kind
                for k in range(-half, half + 1)
                for kind in ("CE", "PE")
            ]
            self._grids[(atm, step)] = (widest, tails)
        first = 2 * (widest - half)
        return tails[first : first + 2 * strikes]

    def columns(self) -> _Columns:
        g = np.array(self.groups, dtype=_GROUP_DTYPE).reshape(len(self.groups))
        size = g["rows"]
        within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        is_option = np.repeat(g["option"], size).astype(bool)
        strike = np.repeat(g["low"], size) + within // 2 * np.repeat(g["step"], size)
        return _Columns(
            exchange=np.repeat(g["exchange"], size),
            segment=np.repeat(g["segment"], size),
            instrument_type=np.where(is_option, CE + within % 2, FUT).astype(np.uint32),
            name=np.repeat(g["name"], size),
            name_table=list(self.names),
            expiry=np.repeat(g["expiry"], size),
            strike=strike / SCALE,
            tick_size=np.repeat(g["tick"], size),
            lot_size=np.repeat(g["lot"], size),
            group_size=size.astype(np.int64),
            group_exchange=g["exchange"],
        )


_GROUP_DTYPE = np.dtype(
    [
        ("exchange", np.uint32),
        ("segment", np.uint32),
        ("name", np.uint32),
        ("expiry", np.int32),
        ("lot", np.uint32),
        ("tick", np.float64),
        ("low", np.int64),  # the lowest strike, in 1/SCALE units; 0 for a future
        ("step", np.int64),
        ("option", np.uint8),
        ("rows", np.int64),
    ]
)


def _strike_text(units: int) -> str:
    whole, frac = divmod(units, SCALE)
    return str(whole) if frac == 0 else f"{whole}.{frac:04d}".rstrip("0")


def _monthly_code(day: dt.date) -> str:
    return f"{day.year % 100:02d}{MONTHS[day.month - 1]}"


def _weekly_code(day: dt.date) -> str:
    return f"{day.year % 100:02d}{WEEKLY_MONTHS[day.month - 1]}{day.day:02d}"


def _months(start: dt.date, count: int) -> Iterator[tuple[int, int]]:
    for k in range(count):
        yield start.year + (start.month - 1 + k) // 12, (start.month - 1 + k) % 12 + 1


def _last_day(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = _last_day(year, month)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _weekday_on_or_before(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=max(0, day.weekday() - FRI))


def _business_days_before(day: dt.date, count: int) -> dt.date:
    for _ in range(count):
        day = _weekday_on_or_before(day - dt.timedelta(days=1))
    return day


def _index_schedule(
    td: dt.date, weekday: int, long_dated: bool
) -> tuple[list[dt.date], list[_Chain]]:
    """Futures and option chains of an index: weekly expiries for five weeks, three monthly
    ones (the last `weekday` of the month), and for NIFTY three quarterly and half-yearly ones
    to five years out, with fewer and wider strikes the further out they are."""
    monthly = [d for y, m in _months(td, 4) if (d := _last_weekday(y, m, weekday)) >= td][:3]
    first = td + dt.timedelta(days=(weekday - td.weekday()) % 7)
    weekly = [first + dt.timedelta(weeks=k) for k in range(5)]
    near = sorted(set(monthly) | set(weekly))
    chains: list[_Chain] = [(d, d in monthly, INDEX_STRIKES, 1.0) for d in near if d <= monthly[-1]]
    if long_dated:
        later = [
            (y, m)
            for y, m in _months(monthly[-1], 55)
            if m % 3 == 0 and _last_weekday(y, m, weekday) > monthly[-1]
        ]
        chains += [
            (_last_weekday(y, m, weekday), True, INDEX_STRIKES / 3, 2.0) for y, m in later[:3]
        ]
        chains += [
            (_last_weekday(y, m, weekday), True, 12, 20.0) for y, m in later[3:] if m % 6 == 0
        ]
    return monthly, chains


def _indices(
    td: dt.date,
    exchange: int,
    real: tuple[tuple[str, float, float, int, int, bool], ...],
    pattern: str,
    names: _Names,
    rng: np.random.Generator,
) -> Iterator[_Underlying]:
    """The exchange's real indices, then invented ones named by `pattern`."""

    def underlying(
        name: str, price: float, step: float, lot: int, wd: int, long: bool
    ) -> _Underlying:
        futures, chains = _index_schedule(td, wd, long)
        return _Underlying(exchange, name, price, step, lot, 0.05, futures, chains)

    for spec in real:
        yield underlying(*spec)
    while True:
        price = float(rng.uniform(8_000, 60_000))
        step = 25 if price < 12_000 else 50 if price < 30_000 else 100
        lot = _round_lot(float(rng.uniform(6e5, 1.2e6)) / price)
        yield underlying(
            pattern.format(names.other()), price, step, lot, int(rng.integers(5)), False
        )


def _stocks(
    td: dt.date, symbols: list[str], names: _Names, rng: np.random.Generator
) -> Iterator[_Underlying]:
    """Stock futures and options: three monthly expiries (the last Thursday), fewer strikes on
    the later ones, on NSE's EQ-series symbols, then on new ones if those run out."""
    symbols = list(symbols)
    expiries = [d for y, m in _months(td, 4) if (d := _last_weekday(y, m, THU)) >= td][:3]
    fewer = (1, 0.85, 0.45)
    chains = [(d, True, STOCK_STRIKES * f, 1.0) for d, f in zip(expiries, fewer, strict=True)]
    real = {s[0]: s for s in REAL_STOCKS}
    k = 0
    while True:
        if k == len(symbols):
            symbols += names.stocks(64)
        symbol = symbols[k]
        k += 1
        if symbol in real:
            _, _, price, lot, step = real[symbol]
        else:
            price = float(np.clip(rng.lognormal(math.log(600), 1.1), 10, 30_000))
            step = _stock_step(price)
            lot = _round_lot(float(rng.uniform(5e5, 1e6)) / price)
        yield _Underlying(NFO, symbol, price, step, lot, 0.05, expiries, chains)


def _commodities(td: dt.date, names: _Names, rng: np.random.Generator) -> Iterator[_Underlying]:
    """MCX: futures on each commodity's contract months (up to 6, or 3 for bimonthly ones),
    options on the nearest 3, expiring 3 business days before their future."""
    specs: Iterator[tuple[str, float, float, int, float, tuple[int, ...], int]] = iter(COMMODITIES)
    while True:
        spec = next(specs, None)
        if spec is None:
            price = float(np.clip(rng.lognormal(math.log(2_000), 1.5), 50, 100_000))
            step = _stock_step(price)
            tick = 1.0 if price >= 10_000 else 0.1 if price >= 500 else 0.05
            lot = _round_lot(float(rng.uniform(3e5, 1e6)) / price)
            spec = (names.other(), price, step, lot, tick, (), int(rng.integers(5, 29)))
        name, price, step, lot, tick, months, day = spec
        futures = []
        for y, m in _months(td, 14):
            if months and m not in months:
                continue
            last = _last_day(y, m)
            expiry = _weekday_on_or_before(last.replace(day=min(day, last.day)))
            if expiry >= td:
                futures.append(expiry)
        futures = futures[: 3 if months else 6]
        chains: list[_Chain] = []
        if step:
            seen = set()
            for future in futures[:3]:
                expiry = _business_days_before(future, 3)
                if expiry >= td and (expiry.year, expiry.month) not in seen:
                    seen.add((expiry.year, expiry.month))
                    chains.append((expiry, True, COMMODITY_STRIKES, 1.0))
        yield _Underlying(MCX, name, price, step, lot, tick, futures, chains)


def _currencies(td: dt.date, names: _Names, rng: np.random.Generator) -> Iterator[_Underlying]:
    """NSE currency derivatives: monthly contracts expire two business days before the month's
    last business day; USDINR has 12 of them and weekly options on Fridays."""
    monthly = [
        d
        for y, m in _months(td, 13)
        if (d := _business_days_before(_weekday_on_or_before(_last_day(y, m)), 2)) >= td
    ][:12]
    first_friday = td + dt.timedelta(days=(FRI - td.weekday()) % 7)
    weekly = [first_friday + dt.timedelta(weeks=k) for k in range(4)]
    codes = iter(CURRENCY_CODES)
    used = {c[0][:3] for c in CURRENCIES}
    specs = iter(CURRENCIES)
    while True:
        spec = next(specs, None)
        if spec is None:
            code = next(codes, None)
            while code is None or code in used:
                code = names.other()[:3]
            used.add(code)
            spec = (f"{code}INR", float(rng.uniform(20, 150)), False)
        name, price, usd = spec
        near = monthly[:3] + ([d for d in weekly if d not in monthly] if usd else [])
        chains: list[_Chain] = [(d, d in monthly, CURRENCY_STRIKES, 1.0) for d in sorted(near)]
        yield _Underlying(CDS, name, price, 0.25, 1000, 0.0025, monthly[: 12 if usd else 3], chains)


def _stock_step(price: float) -> float:
    """NSE's usual strike interval for a price."""
    for limit, step in STRIKE_STEPS:
        if price < limit:
            return step
    return 500.0


def _round_lot(value: float) -> int:
    """A lot size as exchanges set them: two significant figures."""
    magnitude: int = 10 ** max(0, int(math.log10(max(value, 1))) - 1)
    return max(1, round(value / magnitude) * magnitude)


def _exchange_tokens(
    group_exchange: NDArray[np.uint32], sizes: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.uint64]:
    """Exchange tokens, unique within each exchange: consecutive within a group (a chain's
    strikes, CE then PE), the groups of an exchange in shuffled order with small gaps."""
    starts = np.empty(len(sizes), np.int64)
    for exchange in range(len(EXCHANGES)):
        groups = np.flatnonzero(group_exchange == exchange)
        order = groups[rng.permutation(len(groups))]
        span = sizes[order] + rng.integers(0, TOKEN_GAP[exchange] + 1, size=len(order))
        starts[order] = TOKEN_BASE[exchange] + np.cumsum(span) - span
    row_group = np.repeat(np.arange(len(sizes)), sizes)
    within = np.arange(len(row_group)) - (np.cumsum(sizes) - sizes)[row_group]
    return (starts[row_group] + within).astype(np.uint64)


def _kite(exchange: NDArray[np.uint32], token: NDArray[np.uint64]) -> TokenColumn:
    segment_id = np.array(KITE_SEGMENT_ID, np.uint64)[exchange]
    values = (token << np.uint64(8)) | segment_id
    return TokenColumn("kite", "int", values, Categorical.constant("kite", len(token)))


def _fyers(
    exchange: NDArray[np.uint32], token: NDArray[np.uint64], expiry: NDArray[np.int32]
) -> TokenColumn:
    prefix = np.array(FYERS_PREFIX, np.uint64)[exchange]
    shift = _POWERS_OF_TEN[_digits(token)]
    values = (prefix * np.uint64(1_000_000) + _yymmdd(expiry)) * shift + token
    return TokenColumn("fyers", "int", values, Categorical.constant("fyers", len(token)))


def _yymmdd(expiry: NDArray[np.int32]) -> NDArray[np.uint64]:
    """Each expiry as the integer YYMMDD, 0 for none; looked up in a table of the days the
    column spans, a few thousand, rather than computed row by row."""
    days = np.arange(int(expiry.max(initial=0)) + 1).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype(np.int64) // 12 + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    table = (year % 100 * 10_000 + month * 100 + day).astype(np.uint64)
    table[0] = 0
    yymmdd: NDArray[np.uint64] = table[expiry]
    return yymmdd


def _angel(exchange: NDArray[np.uint32], token: NDArray[np.uint64]) -> TokenColumn:
    feeds = _compact(exchange, tuple(f"angel:{e}" for e in EXCHANGES))
    return TokenColumn("angel", "int", token.copy(), feeds)


def _upstox(
    exchange: NDArray[np.uint32], token: NDArray[np.uint64], isin: NDArray[np.bytes_]
) -> TokenColumn:
    """Built as one byte matrix, a line per row with NULs where a line is shorter than the
    widest, then decoded and split in one piece: several times faster than a string per row."""
    width = max(12, int(_digits(token).max(initial=1)))
    lines = np.zeros((len(token), 7 + width + 1), np.uint8)
    lines[:, :7] = np.frombuffer(b"".join(UPSTOX_PREFIX), np.uint8).reshape(-1, 7)[exchange]
    cash = exchange <= BSE
    lines[cash, 7:19] = isin[cash].view(np.uint8).reshape(-1, 12)
    lines[~cash, 7 : 7 + width] = _decimal(token[~cash], width)
    lines[:, -1] = ord("\n")
    values = lines[lines != 0].tobytes().decode("ascii").split("\n")[:-1]
    return TokenColumn("upstox", "str", values, Categorical.constant("upstox", len(token)))


_POWERS_OF_TEN = np.array([10**k for k in range(20)], np.uint64)


def _digits(values: NDArray[np.uint64]) -> NDArray[np.intp]:
    """How many decimal digits each value (at least 1) has."""
    return np.searchsorted(_POWERS_OF_TEN, values, side="right")


def _decimal(values: NDArray[np.uint64], width: int) -> NDArray[np.uint8]:
    """The values (at least 1) as ASCII digits, right-aligned in `width` columns, NUL-filled."""
    chars = np.zeros((len(values), width), np.uint8)
    small = values.max(initial=0) < 2**32  # 32-bit division is about three times faster
    rest: NDArray[np.unsignedinteger] = values.astype(np.uint32 if small else np.uint64)
    column = width - 1
    while column >= 0 and rest.any():
        quotient = rest // 10
        digit = (rest - quotient * 10).astype(np.uint8) + 48
        digit[rest == 0] = 0
        chars[:, column] = digit
        rest = quotient
        column -= 1
    return chars


def _compact(codes: NDArray[np.uint32], table: Sequence[str]) -> Categorical:
    """A categorical column of the values of `table` that `codes` use, in table order."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(table)))
    if len(used) == len(table):
        return Categorical(codes, tuple(table))
    renumber = np.zeros(len(table), np.uint32)
    renumber[used] = np.arange(len(used), dtype=np.uint32)
    return Categorical(renumber[codes], tuple(table[i] for i in used.tolist()))


def _merge_names(
    cash: tuple[NDArray[np.uint32], list[str]], derived: tuple[NDArray[np.uint32], list[str]]
) -> Categorical:
    """One categorical column from two coded against their own tables, the second one small.
    A value in both tables (the company ITC and the underlying ITC) gets the first's code."""
    (cash_codes, cash_table), (derived_codes, derived_table) = cash, derived
    common = set(derived_table).intersection(cash_table)
    position = {value: cash_table.index(value) for value in common}
    table = cash_table + [value for value in derived_table if value not in common]
    lookup = np.empty(len(derived_table), np.uint32)
    fresh = len(cash_table)
    for code, value in enumerate(derived_table):
        if value in common:
            lookup[code] = position[value]
        else:
            lookup[code] = fresh
            fresh += 1
    return Categorical(np.concatenate([cash_codes, lookup[derived_codes]]), tuple(table))
