"""Loaders: one module per source format, each turning a broker file into `Instrument` records.

A source is named by a *spec*: ``FORMAT=PATH`` (``kite=/data/instruments.csv``), or a bare path
whose format is told from its first line. Each module keeps a pure parser over text lines and a
thin ``load_<format>(path, source)`` that reads the file; `FORMATS` registers the loader with
the test that recognises its first line. Adding a format is one module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, SourceError, SourceMissingError
from ..model import Instrument
from . import kite
from .kite import load_kite, parse_kite

__all__ = ["FORMATS", "SourceFormat", "load_kite", "load_source", "parse_kite"]

# Enough for any header line; a first line longer than this is not one we know.
_SNIFF_BYTES = 64 * 1024


class SourceFormat(NamedTuple):
    """A registered source format."""

    load: Callable[[Path, str], list[Instrument]]
    """Reads a file; the second argument labels it in error messages (``kite=x.csv``)."""
    sniff: Callable[[str], bool]
    """Whether a file whose first line (without BOM or line end) is this is of this format."""


FORMATS: dict[str, SourceFormat] = {
    "kite": SourceFormat(load_kite, lambda line: line.startswith(kite.HEADER_PREFIX)),
}


def load_source(spec: str) -> tuple[str, list[Instrument]]:
    """Load the source named by `spec`: ``FORMAT=PATH`` or a bare ``PATH``.

    Returns the source's label, ``FORMAT=<file name>`` (the one its error messages use), and
    its records.

    Raises `ConfigError` for an unknown ``FORMAT=``, `SourceMissingError` if the file cannot be
    read, and `SourceError` if a bare path's format cannot be told from its first line or the
    file is bad.
    """
    name, sep, rest = spec.partition("=")
    if sep and name in FORMATS:
        path = Path(rest)
        if not rest:
            raise ConfigError(f"source {spec!r} names no file")
    elif sep and name.isidentifier() and not Path(spec).exists():
        raise ConfigError(
            f"source {spec!r}: unknown format {name!r}; known formats: {', '.join(FORMATS)}"
        )
    else:
        path = Path(spec)
        name = _detect(path, spec)
    label = f"{name}={path.name}"
    return label, FORMATS[name].load(path, label)


def _detect(path: Path, spec: str) -> str:
    """The name of the one format whose sniff test accepts the file's first line."""
    try:
        with path.open("rb") as f:
            first = f.readline(_SNIFF_BYTES)
    except OSError as exc:
        raise SourceMissingError(spec, f"cannot read {path}: {exc.strerror or exc}") from exc
    line = first.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")
    for name, fmt in FORMATS.items():
        if fmt.sniff(line):
            return name
    shown = repr(line[:60]) + ("..." if len(line) > 60 else "") if line else "an empty file"
    raise SourceError(
        spec,
        f"cannot tell the format from the first line ({shown}); known formats:"
        f" {', '.join(FORMATS)}; name one as FORMAT=PATH",
        row=1,
    )
