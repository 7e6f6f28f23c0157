"""A Kite master whose answers are a function of the generation that serves them.

The daemon benchmarks swap generations while readers resolve, and every answer must be checked
against the generation it came from. So the master is a synthetic Kite universe (static: its
answers never change) plus `Moving.count` instruments ``NSE:MOVING<i>`` whose tokens encode the
generation: in generation g, instrument i has Kite exchange token ``base + g * count + i`` and
instrument token ``exchange token << 8 | 1`` (Kite's identity, segment byte 1). Any token a
lookup returns therefore names the generation it was read from (`Moving.decode`), and a token
of generation g is in no other generation.

The harness writes the file for generation g just before it asks the daemon for generation g,
and checks the daemon's reply names g, so "the file's g" and "the daemon's g" are one number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resolverd.synthetic import generate_universe

from .data import BROKER, kite_column
from .masters.kite import write_kite

SEGMENT = 1


@dataclass(frozen=True)
class Moving:
    """The generation-encoded instruments (see the module docstring)."""

    base: int
    count: int

    def key(self, i: int) -> str:
        return f"NSE:MOVING{i}"

    def token(self, generation: int, i: int) -> int:
        """Instrument i's Kite token in `generation`."""
        return (self.base + generation * self.count + i) << 8 | SEGMENT

    def decode(self, token: int) -> tuple[int, int]:
        """(generation, i) of a token `token` returned; nonsense for a token it never made."""
        generation, i = divmod((token >> 8) - self.base, self.count)
        return generation, i

    def rows(self, generation: int) -> str:
        """Kite CSV rows of every moving instrument in `generation`."""
        lines = []
        for i in range(self.count):
            token = self.token(generation, i)
            lines.append(f"{token},{token >> 8},MOVING{i},MOVING {i},0,,0,0.05,1,EQ,NSE,NSE\n")
        return "".join(lines)


@dataclass(frozen=True)
class MovingSource:
    """A Kite CSV at `path`: the static universe's rows, then `moving`'s rows for a generation.

    `static` is a sample of the static instruments as (key, Kite token), for readers to check.
    """

    path: Path
    header_and_static: str
    moving: Moving
    static: list[tuple[str, int]]
    instruments: int

    @classmethod
    def create(cls, path: Path, size: int, count: int, *, sample: int = 512) -> MovingSource:
        """A synthetic Kite universe of `size` instruments plus `count` moving ones, written
        for generation 1."""
        registry = generate_universe(size, brokers=(BROKER,))
        written = write_kite(registry.instruments(), path)
        text = path.read_text()
        keys, tokens = kite_column(registry)
        base = int(tokens.max() >> 8) + 1
        picks = np.linspace(0, len(keys) - 1, min(sample, len(keys))).astype(np.intp)
        static = [(keys[i], int(tokens[i])) for i in picks.tolist()]
        source = cls(path, text, Moving(base, count), static, written + count)
        source.write(1)
        return source

    def write(self, generation: int) -> None:
        """Replace the file atomically with its content for `generation`."""
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(self.header_and_static + self.moving.rows(generation))
        os.replace(temporary, self.path)
