"""Publishing a registry's generations in a memory-backed directory, and the swap.

The files and the control-segment protocol are specified in `resolverd.shm_layout`; this module
is the one writer. Its rules:

1. A generation is written in full under a temporary name (``.resolverd.NAME.G.tmp``), its
   header and payload checksum are verified, its mode and group are set, and only then is it
   renamed to its published name. A reader can never map a partial file.
2. A published generation file is never written, truncated or resized again: a reader touching
   a mapping past the end of a truncated file dies of SIGBUS.
3. The control file is created under a temporary name, then renamed, and from then on written
   in place, under the seqlock, until its ``sequence`` would pass `CONTROL_SEQUENCE_LIMIT`. Then
   the next swap is written to a new control file (sequence 0) renamed over the name, and only
   after that is the old one retired (generation 0), which sends its followers to the name; a
   second name keeps the old one findable until then, for an instance killed midway.
4. An old generation stays linked for the grace period after a swap, so a reader that has just
   read the control segment still finds the file it names. Unlinking it later does not disturb
   readers that map it: an unlinked mapping stays valid until its last unmap.
5. One publisher per registry and directory: `adopt` takes an exclusive lock on
   ``.resolverd.NAME.lock`` and holds it until `close`, so a second daemon (or `purge`) cannot
   write under a running one.
6. Stopping leaves the control file and the current generation in place, so trading processes
   keep resolving, and start resolving, while the daemon restarts. A new publisher adopts what
   it finds, repairs a seqlock left odd by a killed writer, and removes every other file of that
   registry (older generations and temporary files of a dead instance).

The seqlock's stores are plain stores into a shared mapping. x86-64 keeps stores in program
order (TSO), which is what the protocol needs; a port to a weakly ordered CPU needs fences.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._trust import check_file
from ..errors import LayoutError, UnavailableError, UntrustedError
from ..shm_layout import (
    CONTROL_DTYPE,
    CONTROL_GENERATION_OFFSET,
    CONTROL_MAGIC,
    CONTROL_SEQUENCE_LIMIT,
    CONTROL_SEQUENCE_OFFSET,
    CONTROL_SIZE,
    CONTROL_VERSION,
    ControlState,
    Header,
    control_file_name,
    encode_control,
    field_offset,
    read_control,
    read_header,
    snapshot_file_name,
    verify_payload,
)

__all__ = ["Published", "Publisher", "published", "purge"]

_log = logging.getLogger("resolverd.daemon")

_CHECKSUM_OFFSET = field_offset(CONTROL_DTYPE, "payload_checksum")
_UPDATED_OFFSET = field_offset(CONTROL_DTYPE, "updated_ns")
_PID_OFFSET = field_offset(CONTROL_DTYPE, "publisher_pid")
_SNAPSHOT_OFFSET = field_offset(CONTROL_DTYPE, "snapshot")
_SNAPSHOT_SIZE = CONTROL_DTYPE.fields["snapshot"][0].itemsize  # type: ignore[index]


@dataclass(frozen=True)
class Published:
    """One generation made current."""

    generation: int
    path: Path
    header: Header
    previous: Path | None


def _generation_files(directory: Path, name: str) -> dict[int, Path]:
    """Published generation files of `name` in `directory`, by generation."""
    pattern = re.compile(re.escape(f"resolverd.{name}.") + r"(\d{1,20})\.snap")
    found = {}
    for entry in os.scandir(directory):
        match = pattern.fullmatch(entry.name)
        if match:
            found[int(match[1])] = Path(entry.path)
    return found


def _temporary_files(directory: Path, name: str) -> list[Path]:
    """A dead instance's unfinished files: generations (``.resolverd.NAME.G.tmp``) and control
    files (``.resolverd.NAME.ctl.PID.tmp``)."""
    pattern = re.compile(re.escape(f".resolverd.{name}.") + r"(?:ctl\.)?\d{1,20}\.tmp")
    return [Path(e.path) for e in os.scandir(directory) if pattern.fullmatch(e.name)]


def _open_own(path: Path, flags: int) -> int:
    """Open a file of this registry that this process's user must have created: not a symlink,
    owned by this user, writable by nobody else. Anything else was planted (a world-writable
    /dev/shm lets anyone create these names) and is refused with UntrustedError."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedError(f"{path}: a symbolic link where a file was expected") from None
        raise
    try:
        check_file(path, os.fstat(fd), frozenset({os.geteuid()}))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _checked_file(path: Path, generation: int | None = None) -> Header:
    """The header of a complete, intact snapshot file of ours (payload checksum included)."""
    # Read, not mapped: a view kept alive by an exception's traceback would pin a mapping.
    with os.fdopen(_open_own(path, os.O_RDONLY), "rb") as file:
        data = file.read()
    header = read_header(data)
    if header.file_size != len(data):
        raise LayoutError(f"the header says {header.file_size} bytes, the file has {len(data)}")
    verify_payload(data, header)
    if generation is not None and header.generation != generation:
        raise LayoutError(f"generation {header.generation} in the file, expected {generation}")
    return header


def _remove(path: Path) -> bool:
    """Unlink a stale file; False (logged) for one this user may not remove, which someone
    else planted in a shared directory: it is ignored, never served."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:
        _log.warning("%s: not ours and cannot be removed; ignoring it", path)
        return False
    return True


def create_file(
    path: Path, data: bytes | bytearray | memoryview, mode: int, gid: int | None = None
) -> None:
    """Write a new file with `mode` and group `gid` (None: the process's); the name must be
    unused. A failed write leaves no file behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        if gid is not None:
            os.fchown(fd, -1, gid)
        _write_all(fd, data, path)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview, path: Path) -> None:
    """Write all of `data` with write(2), never through a mapping: on a full tmpfs a write
    fails with ENOSPC, where a store into a mapped, unallocated page would be SIGBUS."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        # write(2)'s error names no file; a full /dev/shm must say which directory is full.
        name = errno.errorcode.get(exc.errno or 0, "?")
        raise OSError(exc.errno, f"{exc.strerror} ({name})", str(path)) from exc


def _write_control(control: mmap.mmap, generation: int, checksum: int, snapshot: str) -> None:
    """One seqlock write: sequence odd, fields, sequence even (generation last but one, so a
    reader that sees the new generation sees the new file name too)."""
    sequence = struct.unpack_from("<Q", control, CONTROL_SEQUENCE_OFFSET)[0]
    odd = sequence | 1
    struct.pack_into("<Q", control, CONTROL_SEQUENCE_OFFSET, odd)
    struct.pack_into(f"{_SNAPSHOT_SIZE}s", control, _SNAPSHOT_OFFSET, snapshot.encode("ascii"))
    struct.pack_into("<Q", control, _CHECKSUM_OFFSET, checksum)
    struct.pack_into("<q", control, _UPDATED_OFFSET, time.time_ns())
    struct.pack_into("<Q", control, _PID_OFFSET, os.getpid())
    struct.pack_into("<Q", control, CONTROL_GENERATION_OFFSET, generation)
    struct.pack_into("<Q", control, CONTROL_SEQUENCE_OFFSET, odd + 1)


class Publisher:
    """The one writer of a registry's files in `directory` (see the module rules).

    `mode` and `gid` (None: the process's group) apply to every file it creates; `grace` is
    how many seconds a replaced generation stays linked.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str,
        *,
        mode: int = 0o640,
        gid: int | None = None,
        grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self.mode, self.gid, self.grace, self._clock = mode, gid, grace, clock
        self.control_path = self.directory / control_file_name(name)
        self._control: mmap.mmap | None = None
        self.current: Path | None = None
        self.header: Header | None = None
        self._next = 1
        self._retiring: list[tuple[float, Path]] = []
        self._lock: int | None = None

    # -- start ----------------------------------------------------------------------------------

    def adopt(self) -> list[Path]:
        """Take over the directory: keep the current generation a previous instance left (or
        the newest intact one), repair the control file, remove the rest. Returns the files
        removed. Raises UnavailableError if the directory is unusable, LayoutError if a file
        of the control file's name is not a control file."""
        if not self.directory.is_dir():
            raise UnavailableError(f"{self.directory}: no such directory to publish in")
        self._lock = _lock(self.directory, self.name, self.mode)
        files = _generation_files(self.directory, self.name)
        removed = self._retire_leftover()
        claimed = self._open_control()
        self._next = max([claimed, *files], default=0) + 1
        current, header = self._pick_current(claimed, files)
        for generation, path in files.items():
            if generation != current and _remove(path):
                removed.append(path)
        for path in _temporary_files(self.directory, self.name):
            if _remove(path):
                removed.append(path)
        if current and header is not None:
            self.current, self.header = files[current], header
            self._write_control(current, header.payload_checksum, files[current].name)
        else:
            self._write_control(0, 0, "")
        return removed

    def _pick_current(self, claimed: int, files: dict[int, Path]) -> tuple[int, Header | None]:
        """The generation to keep serving and its header: the control file's if its file is
        intact, else the newest intact file, else none (0)."""
        candidates = sorted(files, reverse=True)
        if claimed in files:
            candidates.remove(claimed)
            candidates.insert(0, claimed)
        for generation in candidates:
            try:
                return generation, _checked_file(files[generation], generation)
            except (LayoutError, UntrustedError, OSError, ValueError):
                continue
        return 0, None

    def _open_control(self) -> int:
        """Map the control file read-write (creating it if absent); the generation it names."""
        if not self.control_path.exists():
            self._create_control(ControlState(0, 0, 0, 0, 0, ""))
        fd = _open_own(self.control_path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != CONTROL_SIZE:
                raise LayoutError(f"{self.control_path}: not a control file (size)")
            self._control = mmap.mmap(fd, CONTROL_SIZE)
        finally:
            os.close(fd)
        raw = np.frombuffer(self._control[:CONTROL_SIZE], dtype=CONTROL_DTYPE)[0]
        if bytes(raw["magic"]) != CONTROL_MAGIC or int(raw["version"]) != CONTROL_VERSION:
            self.close()
            raise LayoutError(f"{self.control_path}: not a resolverd control file")
        return int(raw["generation"])

    # -- swap -----------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The current generation, 0 while there is none."""
        return self.header.generation if self.header else 0

    @property
    def next_generation(self) -> int:
        return self._next

    def temporary_path(self, generation: int) -> Path:
        """Where a generation is written before it is published (see `publish_file`)."""
        return self.directory / f".resolverd.{self.name}.{generation}.tmp"

    def publish(self, snapshot: bytes | bytearray | memoryview) -> Published:
        """Publish a snapshot stamped with generation `next_generation` (compile it with
        ``compile_snapshot(registry, generation=publisher.next_generation)``)."""
        header = read_header(snapshot)
        temporary = self.temporary_path(header.generation)
        temporary.unlink(missing_ok=True)
        create_file(temporary, snapshot, self.mode, self.gid)
        return self.publish_file(temporary)

    def publish_file(self, temporary: Path) -> Published:
        """Verify a complete snapshot file written at `temporary_path(generation)`, rename it
        to its published name and make it current. On any error the file is removed and the
        current generation stays current."""
        return self.publish_checked(temporary, self.check_file(temporary))

    def check_file(self, temporary: Path) -> Header:
        """`publish_file`'s slow half, which touches nothing but the file: read it whole and
        verify its checksums and generation (removed if it fails). A daemon runs it in a thread,
        so its event loop keeps serving while a large snapshot is read and hashed; nothing else
        may publish in between."""
        try:
            return _checked_file(temporary, self._next)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def publish_checked(self, temporary: Path, header: Header) -> Published:
        """`publish_file`'s other half: rename the file `check_file` passed as `header` to its
        published name and make it current. On any error the file is removed and the current
        generation stays current."""
        assert self._control is not None, "adopt() first"
        if header.generation != self._next:
            temporary.unlink(missing_ok=True)
            raise LayoutError(f"generation {header.generation} is not the next, {self._next}")
        try:
            os.chmod(temporary, self.mode)
            if self.gid is not None:
                os.chown(temporary, -1, self.gid)
            final = self.directory / snapshot_file_name(self.name, header.generation)
            os.rename(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._write_control(header.generation, header.payload_checksum, final.name)
        previous = self.current
        if previous is not None:
            self._retiring.append((self._clock() + self.grace, previous))
        self.current, self.header = final, header
        self._next = header.generation + 1
        return Published(header.generation, final, header, previous)

    def _create_control(self, state: ControlState, *, rename: bool = True) -> Path:
        """Write a control file holding `state` under a temporary name and, with `rename`,
        rename it to the control file's name (rule 3). Returns where it is."""
        temporary = self.directory / f".{self.control_path.name}.{os.getpid()}.tmp"
        try:
            create_file(temporary, encode_control(state), self.mode, self.gid)
            if rename:
                os.rename(temporary, self.control_path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return self.control_path if rename else temporary

    def _write_control(self, generation: int, checksum: int, snapshot: str) -> None:
        if self._control is None:  # a renewal failed after the rename: map what is named
            self._open_control()
        assert self._control is not None
        sequence = struct.unpack_from("<Q", self._control, CONTROL_SEQUENCE_OFFSET)[0]
        if generation and sequence + 2 > CONTROL_SEQUENCE_LIMIT:
            try:
                self._renew_control(generation, checksum, snapshot)
                return
            except (LayoutError, OSError) as exc:
                if self._control is None:
                    raise
                # Writing in place is still correct; followers' checks just cost a little more.
                _log.warning("%s: not renewed, written in place: %s", self.control_path, exc)
        _write_control(self._control, generation, checksum, snapshot)

    def _renew_control(self, generation: int, checksum: int, snapshot: str) -> None:
        """Rule 3. The old file keeps a second name, ``.resolverd.NAME.ctl.retiring``, from
        before the new one takes its name until it is retired, so that an instance killed in
        between leaves it for the next one to retire (`_retire_leftover`): its followers must
        be told, or they would follow a file nobody writes again."""
        old = self._control
        assert old is not None
        state = ControlState(0, generation, checksum, time.time_ns(), os.getpid(), snapshot)
        fresh = self._create_control(state, rename=False)
        retiring = _retiring_path(self.control_path)
        try:
            retiring.unlink(missing_ok=True)
            os.link(self.control_path, retiring)
            os.rename(fresh, self.control_path)
        except BaseException:
            fresh.unlink(missing_ok=True)
            retiring.unlink(missing_ok=True)
            raise
        self._control = None
        try:
            self._open_control()
        finally:
            _write_control(old, 0, 0, "")  # retired: its followers turn to the name
            old.close()
            retiring.unlink(missing_ok=True)

    def _retire_leftover(self) -> list[Path]:
        """Retire the old control file a renewal killed midway left (see `_renew_control`),
        unless it is still the file at the control file's name (killed before the rename),
        which `adopt` then takes over as it is."""
        retiring = _retiring_path(self.control_path)
        try:
            os.close(_open_own(retiring, os.O_RDONLY))  # ours, or UntrustedError: planted
        except FileNotFoundError:
            return []
        _retire(retiring, unless=self.control_path)
        retiring.unlink(missing_ok=True)
        return [retiring]

    # -- retention ------------------------------------------------------------------------------

    def expire(self, *, everything: bool = False) -> list[Path]:
        """Unlink replaced generations whose grace period is over (all of them with
        `everything`, as on a stop). Returns the files unlinked."""
        now = self._clock()
        due = [path for deadline, path in self._retiring if everything or deadline <= now]
        self._retiring = [(d, p) for d, p in self._retiring if p not in due]
        for path in due:
            path.unlink(missing_ok=True)
        return due

    def next_expiry(self) -> float | None:
        """Seconds until the next replaced generation is due for unlinking, if any."""
        if not self._retiring:
            return None
        return max(0.0, min(d for d, _ in self._retiring) - self._clock())

    def linked(self) -> list[Path]:
        """Every generation file of this registry still linked: the current one and those
        in their grace period."""
        paths = [path for _, path in self._retiring]
        return [*paths, self.current] if self.current else paths

    def close(self) -> None:
        """Stop writing: replaced generations are unlinked now; the control file and the
        current generation stay for readers and for the next instance."""
        self.expire(everything=True)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _lock(directory: Path, name: str, mode: int) -> int:
    """Hold the registry's lock file (rule 5); UnavailableError if another process does."""
    path = directory / f".resolverd.{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UnavailableError(
            f"registry {name!r} in {directory} is served by another running process"
        ) from None
    return fd


def purge(directory: str | os.PathLike[str], name: str) -> list[Path]:
    """Remove every file of registry `name`: control file, generations, temporary files.

    The control file is first marked as having no generation, so a following reader that
    checks it keeps the generation it has instead of looking for a file that is gone.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise UnavailableError(f"{folder}: no such directory")
    control_path = folder / control_file_name(name)
    removed = []
    lock = _lock(folder, name, 0o600)
    try:
        removed += _purge(folder, name, control_path)
        (folder / f".resolverd.{name}.lock").unlink()
    finally:
        os.close(lock)
    return removed


def _retiring_path(control_path: Path) -> Path:
    """The second name a control file being renewed keeps until it is retired."""
    return control_path.with_name(f".{control_path.name}.retiring")


def _retire(path: Path, *, unless: Path | None = None) -> bool:
    """Set generation 0 in the control file at `path` (its followers then turn to the name),
    unless it is the file at `unless`. False if there is no such file or it cannot be opened
    for writing (a symlink or a file of another user someone planted): it is left alone. A
    file that is not a control file is not written."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if unless is not None:
            with contextlib.suppress(FileNotFoundError):
                named = os.stat(unless, follow_symlinks=False)
                if (named.st_dev, named.st_ino) == (status.st_dev, status.st_ino):
                    return True
        if status.st_size == CONTROL_SIZE:
            with mmap.mmap(fd, CONTROL_SIZE) as control:
                if control[:8] == CONTROL_MAGIC:
                    _write_control(control, 0, 0, "")
    finally:
        os.close(fd)
    return True


def _purge(folder: Path, name: str, control_path: Path) -> list[Path]:
    removed = []
    for path in (control_path, _retiring_path(control_path)):
        if _retire(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    for path in [*_generation_files(folder, name).values(), *_temporary_files(folder, name)]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def published(directory: str | os.PathLike[str]) -> dict[str, ControlState]:
    """What the control files in `directory` say is current, by registry name; files that are
    not readable control files are left out."""
    pattern = re.compile(r"resolverd\.(.+)\.ctl")
    found = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        try:
            found[match[1]] = read_control(Path(entry.path).read_bytes(), retries=100)
        except (LayoutError, OSError):
            continue
    return found
