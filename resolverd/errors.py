"""The exception hierarchy.

Every error resolverd raises on purpose is a `ResolverError`. Each class says when it is raised,
whose fault it is, and carries the sysexits(3) code the CLI exits with, so that the mapping from
exception to exit code lives in exactly one place (`cli.main`). A plain miss is not an error of
ours: lookups raise the built-in `KeyError`, like a mapping.
"""

from __future__ import annotations

import errno

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_NOPERM = 77
EX_CONFIG = 78


def os_error_exit_code(exc: OSError) -> int:
    """The sysexits code for an OSError no resolverd error wraps: refused (77), out of space or
    on a read-only file system (73), missing (66), or any other I/O error (74)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return EX_NOPERM
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return EX_CANTCREAT
    if exc.errno == errno.ENOENT:
        return EX_NOINPUT
    return EX_IOERR


class ResolverError(Exception):
    """Base of every deliberate resolverd error."""

    exit_code = EX_SOFTWARE


class LayoutError(ResolverError):
    """A snapshot is not a valid resolverd snapshot: bad magic, unknown layout version,
    truncated file, a lying offset, a checksum mismatch.

    The fault lies with whatever wrote or damaged the file, never with the reader, which refuses
    it before building a single view.
    """

    exit_code = EX_DATAERR


class SourceError(ResolverError):
    """Bad input data: a row of a broker file or registry that cannot be used.

    The caller's data is at fault. The message names the source, the row and the field:
    ``kite=instruments.csv: row 5021, field instrument_token: '12x34' is not an integer``.
    """

    exit_code = EX_DATAERR

    def __init__(
        self, source: str, detail: str, *, row: int | None = None, field: str | None = None
    ) -> None:
        self.source = source
        self.row = row
        self.field = field
        self.detail = detail
        location = source
        if row is not None:
            location += f": row {row}"
        if field is not None:
            location += f"{',' if row is not None else ':'} field {field}"
        super().__init__(f"{location}: {detail}")


class SourceMissingError(SourceError):
    """A source that does not exist or cannot be read (EX_NOINPUT)."""

    exit_code = EX_NOINPUT


class RegistryError(ResolverError):
    """A registry that cannot compile: two instruments with one key, one token claimed twice in
    a feed, a field out of the layout's range. The registry's content is at fault; the message
    names the keys involved."""

    exit_code = EX_DATAERR


class UnknownNameError(ResolverError, ValueError):
    """A broker or feed name the snapshot does not have: the caller's mistake (a typo, or a
    snapshot compiled without that broker). Deliberately not a KeyError, so that `get_token`
    never turns a typo into a quiet miss."""

    exit_code = EX_USAGE


class UnavailableError(ResolverError):
    """A named registry that is not published on this host (no control segment), or whose
    current generation cannot be mapped. Usually the daemon has never run here."""

    exit_code = EX_UNAVAILABLE


class UntrustedError(UnavailableError):
    """A control segment or snapshot a reader refuses to resolve from: owned by a user it does
    not trust, writable by users other than its owner, or not a regular file. Someone else's
    file where the daemon publishes: a planted snapshot must never answer a lookup."""

    exit_code = EX_NOPERM


class ConfigError(ResolverError):
    """A bad setting: unknown key, bad value, bad command-line combination. The operator's fault."""

    exit_code = EX_CONFIG
