"""Small registries for tests: hand-written ones and a hypothesis strategy of random ones."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from resolverd import BrokerToken, Instrument

KEY_ALPHABET = st.characters(
    whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=":-_&é", max_codepoint=0x24F
)


def instrument(key: str, kite: int | None = None, **tokens: tuple[str, int | str]) -> Instrument:
    """An equity-like instrument with the given tokens (`broker=(feed, value)`)."""
    pairs = [] if kite is None else [BrokerToken("kite", "kite", kite)]
    pairs += [BrokerToken(broker, feed, value) for broker, (feed, value) in tokens.items()]
    exchange = key.partition(":")[0] or "NSE"
    return Instrument(
        key=key,
        exchange=exchange,
        segment=exchange,
        instrument_type="EQ",
        name=key[-6:],
        expiry=None,
        strike=0.0,
        tick_size=0.05,
        lot_size=1,
        isin="",
        exchange_token=0,
        tokens=tuple(sorted(pairs)),
    )


def sample_instruments() -> list[Instrument]:
    """Three brokers: Kite (one int feed), Angel (int tokens, one feed per segment, the same
    number reused in two segments) and Upstox (string tokens)."""
    return [
        Instrument(
            "NSE:INFY",
            "NSE",
            "NSE",
            "EQ",
            "INFOSYS",
            None,
            0.0,
            0.05,
            1,
            "INE009A01021",
            1594,
            (
                BrokerToken("angel", "angel:NSE", 1594),
                BrokerToken("kite", "kite", 408065),
                BrokerToken("upstox", "upstox", "NSE_EQ|INE009A01021"),
            ),
        ),
        Instrument(
            "NFO:NIFTY24APR22500CE",
            "NFO",
            "NFO-OPT",
            "CE",
            "NIFTY",
            dt.date(2024, 4, 25),
            22500.0,
            0.05,
            50,
            "",
            68114,
            (
                BrokerToken("angel", "angel:NFO", 1594),
                BrokerToken("kite", "kite", 17437186),
                BrokerToken("upstox", "upstox", "NSE_FO|68114"),
            ),
        ),
        Instrument(
            "BSE:INFY",
            "BSE",
            "BSE",
            "EQ",
            "INFOSYS",
            None,
            0.0,
            0.05,
            1,
            "INE009A01021",
            500209,
            (BrokerToken("kite", "kite", 128053508),),
        ),
    ]


@st.composite
def instrument_sets(draw: st.DrawFn, max_size: int = 40) -> list[Instrument]:
    """Random registries: unique keys; Kite tokens unique; Angel tokens unique per segment
    feed but free to repeat across feeds; Upstox string tokens unique; any broker may be
    absent from a row."""
    keys = draw(
        st.lists(
            st.text(KEY_ALPHABET, min_size=1, max_size=40),
            min_size=1,
            max_size=max_size,
            unique=True,
        )
    )
    n = len(keys)
    kite = draw(st.lists(st.integers(0, 2**64 - 2), min_size=n, max_size=n, unique=True))
    angel = draw(st.lists(st.integers(0, 2**31), min_size=n, max_size=n))
    upstox = draw(
        st.lists(
            st.text(KEY_ALPHABET, min_size=1, max_size=20), min_size=n, max_size=n, unique=True
        )
    )
    present = draw(
        st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=n, max_size=n)
    )
    rows = []
    seen_angel: set[tuple[str, int]] = set()
    for i, key in enumerate(keys):
        segment = "NFO" if i % 2 else "NSE"
        tokens = []
        if present[i][0]:
            tokens.append(BrokerToken("kite", "kite", kite[i]))
        if present[i][1] and (segment, angel[i]) not in seen_angel:
            seen_angel.add((segment, angel[i]))
            tokens.append(BrokerToken("angel", f"angel:{segment}", angel[i]))
        if present[i][2]:
            tokens.append(BrokerToken("upstox", "upstox", upstox[i]))
        rows.append(
            Instrument(
                key=key,
                exchange=segment,
                segment=segment,
                instrument_type="CE" if i % 3 else "EQ",
                name=key[:5],
                expiry=dt.date(2024, 4, 25) if i % 2 else None,
                strike=float(i * 50),
                tick_size=0.05,
                lot_size=1 + i,
                isin="",
                exchange_token=angel[i],
                tokens=tuple(sorted(tokens)),
            )
        )
    return rows
