"""Which files a reader may resolve from: the check that stops a planted snapshot.

``/dev/shm`` is writable by every user, so anyone on the host can create a file named like a
registry's control segment or generation before the daemon does, or beside it. A reader therefore
maps a file only if

- it is a regular file, opened without following a symbolic link;
- its owner is trusted: the reader's own user, root, the owner of the directory it lies in when
  no one else may write that directory (systemd's ``RuntimeDirectory``, owned by the daemon's
  user), or a user named by the caller (``owner=``) or by ``$RESOLVERD_OWNER``;
- no one but its owner can write it (no group or other write bit), so nobody can change it
  under the readers after the daemon verified it;
- for a generation named by a control segment: the same owner as that control segment.

The checks run on the opened descriptor (``fstat``), so the file checked is the file mapped.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import LayoutError, UntrustedError

OWNER_VARIABLE = "RESOLVERD_OWNER"
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH

Owner = int | str


def user_id(owner: Owner) -> int:
    """A user name or numeric id as a uid; UntrustedError naming it if there is no such user."""
    if isinstance(owner, int):
        return owner
    text = owner.strip()
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise UntrustedError(f"trusted owner {text!r}: no such user on this host") from None


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def trusted_owners(
    directory: Path,
    owners: Iterable[Owner] = (),
    environ: Mapping[str, str] | None = None,
) -> frozenset[int]:
    """The users whose files a reader resolves from in `directory` (see the module docstring).
    `$RESOLVERD_OWNER` may list several users, separated by commas."""
    env = os.environ if environ is None else environ
    trusted = {os.geteuid(), 0}
    trusted.update(user_id(owner) for owner in owners)
    trusted.update(user_id(name) for name in env.get(OWNER_VARIABLE, "").split(",") if name.strip())
    try:
        folder = os.stat(directory)
    except OSError:
        return frozenset(trusted)  # opening the file will say what is wrong
    if not folder.st_mode & _WRITABLE_BY_OTHERS:
        trusted.add(folder.st_uid)
    return frozenset(trusted)


def check_file(
    path: Path, status: os.stat_result, trusted: frozenset[int], owner: int | None = None
) -> None:
    """Refuse a file a reader must not resolve from (UntrustedError; LayoutError for one that is
    not a regular file); `owner`, when given, is the one user that may own it (a generation
    must belong to whoever owns its control segment)."""
    if not stat.S_ISREG(status.st_mode):
        raise LayoutError(f"{path}: not a regular file")
    if owner is not None and status.st_uid != owner:
        raise UntrustedError(
            f"{path}: owned by {_user_name(status.st_uid)}, not by {_user_name(owner)} who owns "
            "the control segment: refusing a file someone else planted"
        )
    if status.st_uid not in trusted:
        names = ", ".join(_user_name(uid) for uid in sorted(trusted))
        raise UntrustedError(
            f"{path}: owned by {_user_name(status.st_uid)}, who is not trusted to publish "
            f"snapshots here (trusted: {names}; pass owner= or set ${OWNER_VARIABLE} to trust "
            "the daemon's user)"
        )
    if status.st_mode & _WRITABLE_BY_OTHERS:
        raise UntrustedError(
            f"{path}: mode {stat.S_IMODE(status.st_mode):#o} lets users other than its owner "
            "write it: refusing to resolve from a file that can change under its readers"
        )
