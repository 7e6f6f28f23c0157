"""Loaders: one module per source format, each turning a broker file into `Instrument` records.

A source is named by a *spec*: ``FORMAT=PATH`` (``kite=/data/instruments.csv``), or a bare path
whose format is told from its first bytes. Each module keeps a pure parser over text and a thin
``read_<format>(path, source) -> Loaded`` that reads the file (plain or gzip); `FORMATS`
registers it with the test that recognises the start of its text. Adding a format is one module
and one entry here. What the records look like, whatever the broker, is in `_common`.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .._gc import cycle_collector_paused
from ..errors import ConfigError, SourceError, SourceMissingError
from . import angel, dhan, fyers, kite, upstox
from ._common import Loaded, SourceWarning
from .angel import load_angel, read_angel
from .dhan import load_dhan, read_dhan
from .fyers import load_fyers, parse_fyers, read_fyers
from .kite import load_kite, parse_kite, read_kite
from .upstox import load_upstox, read_upstox

__all__ = [
    "FORMATS",
    "Loaded",
    "SourceFormat",
    "SourceWarning",
    "load_angel",
    "load_dhan",
    "load_fyers",
    "load_kite",
    "load_source",
    "load_upstox",
    "parse_fyers",
    "parse_kite",
    "read_angel",
    "read_dhan",
    "read_fyers",
    "read_kite",
    "read_upstox",
]

# Enough for any header line or the first JSON object; a head longer than this is not one we know.
_SNIFF_BYTES = 64 * 1024


class SourceFormat(NamedTuple):
    """A registered source format."""

    read: Callable[[Path, str], Loaded]
    """Reads a file; the second argument labels it in error messages (``kite=x.csv``)."""
    sniff: Callable[[str], bool]
    """Whether a file whose text starts with this (up to 64 KiB, gunzipped, without BOM) is of
    this format."""


FORMATS: dict[str, SourceFormat] = {
    "kite": SourceFormat(read_kite, lambda head: head.startswith(kite.HEADER_PREFIX)),
    "fyers": SourceFormat(read_fyers, fyers.sniff),
    "dhan": SourceFormat(read_dhan, dhan.sniff),
    "angel": SourceFormat(read_angel, angel.sniff),
    "upstox": SourceFormat(read_upstox, upstox.sniff),
}


def _quoted(spec: str) -> str:
    """`spec` for an error message, with any password a mistyped DSN carries taken out."""
    if "://" not in spec and "password" not in spec:
        return repr(spec)
    from ..db import redact_dsn

    name, sep, rest = spec.partition("=")
    if sep and "://" in rest:
        return repr(f"{name}={redact_dsn(rest)}")
    return repr(redact_dsn(spec))


def load_source(spec: str) -> Loaded:
    """Load the source named by `spec`: ``FORMAT=PATH`` or a bare ``PATH``.

    The result's ``source`` is the label its error messages use, ``FORMAT=<file name>``.

    Raises `ConfigError` for an unknown ``FORMAT=``, `SourceMissingError` if the file cannot be
    read, and `SourceError` if a bare path's format cannot be told from its first line or the
    file is bad.
    """
    name, sep, rest = spec.partition("=")
    if sep and name in FORMATS:
        path = Path(rest)
        if not rest:
            raise ConfigError(f"source {_quoted(spec)} names no file")
    elif sep and name.isidentifier() and not Path(spec).exists():
        raise ConfigError(
            f"source {_quoted(spec)}: unknown format {name!r}; known formats: {', '.join(FORMATS)}"
        )
    else:
        path = Path(spec)
        name = _detect(path, spec)
    label = f"{name}={path.name}"
    with cycle_collector_paused():
        return FORMATS[name].read(path, label)


def _detect(path: Path, spec: str) -> str:
    """The name of the one format whose sniff test accepts the start of the file's text."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
            if head[:2] == b"\x1f\x8b":
                f.seek(0)
                with gzip.open(f) as unzipped:
                    head = unzipped.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise SourceMissingError(spec, f"cannot read {path}: {reason}") from exc
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    matches = [name for name, fmt in FORMATS.items() if fmt.sniff(text)]
    if len(matches) == 1:
        return matches[0]
    line = text.partition("\n")[0].rstrip("\r")
    if matches:
        raise SourceError(
            spec,
            f"the start of the file fits several formats ({', '.join(matches)});"
            " name one as FORMAT=PATH",
            row=1,
        )
    shown = repr(line[:60]) + ("..." if len(line) > 60 else "") if line else "an empty file"
    raise SourceError(
        spec,
        f"cannot tell the format from the first line ({shown}); known formats:"
        f" {', '.join(FORMATS)}; name one as FORMAT=PATH",
        row=1,
    )


def register_mapping(path: str | Path) -> str:
    """Register the generic loader's column mapping at `path` as a format of its own name, so
    that ``NAME=PATH`` sources read through it; returns the name. A mapping is never sniffed:
    its sources must be named."""
    from .generic import load_mapping, read_generic

    mapping = load_mapping(Path(path))
    if mapping.name in FORMATS and FORMATS[mapping.name].read.__module__ != __name__:
        raise ConfigError(f"mapping {path}: name {mapping.name!r} is a built-in format")

    def read(source_path: Path, source: str) -> Loaded:
        return read_generic(source_path, mapping, source)

    FORMATS[mapping.name] = SourceFormat(read, lambda head: False)
    return mapping.name
