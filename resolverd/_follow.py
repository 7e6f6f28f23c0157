"""A resolver that follows a named registry from one generation to the next.

`Resolver.open(NAME)` returns a `Following`: it maps the registry's control segment read-only
and resolves through the current generation's `Resolver`, whose single lookups are bound with
a check of the control segment's ``sequence`` (one 8-byte read; see `shm_layout`). When the
sequence moved, the lookup first calls `_refresh`, which reads the control segment under its
seqlock and, if a new generation is current, maps it and makes it current; the lookup is then
made by that generation. So a lookup never mixes two generations: each generation's lookups
and tables belong to one immutable snapshot, and a batch call takes the current generation
once, at its start.

A replaced generation is not closed: a lookup in another thread may still be running in it,
and a caller may still hold a function bound to it. Its mapping is released when the last
reference goes; the daemon unlinks its file after the grace period, which does not disturb a
mapping.

When the daemon dies the control file and the current generation stay, so lookups go on; when
it comes back it rewrites the control file in place and the next lookup notices. A control file
retired (generation 0: renewed by the publisher, or purged) sends the refresh to the control
file's name, which it maps and follows from then on if it names a generation (a file still at
the name that was set to no generation in place is simply watched on). Until one does
(the registry was purged and is not served again yet, or the file at the name cannot be mapped)
the follower keeps its generation and looks at the name again at most every `RETRY_SECONDS`,
from a lookup: the retired file's sequence never moves again, so waiting for it would strand the
follower for good. Its lookups pay for two calls and a clock read meanwhile. A refresh that fails
in a live control file (file gone, bad file, a control segment left odd by a killed writer)
keeps the current generation and is not retried until the sequence moves again.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

from . import _hot
from .client import Resolver, _map_file, _unmap
from .errors import LayoutError, ResolverError, UnavailableError
from .shm_layout import CONTROL_SEQUENCE_OFFSET, ControlState, control_file_name, read_control

__all__ = ["Following"]

assert CONTROL_SEQUENCE_OFFSET == 8 * _hot.SEQUENCE_WORD

_log = logging.getLogger("resolverd.client")

# How often a follower whose control file was retired looks for a successor at its name.
RETRY_SECONDS = 1.0
# A sequence no control file holds: a lookup's check then always calls `_refresh`.
_NEVER = -1

# Resolver methods and properties that a Following answers from its current generation.
_METHODS = (
    "ordinals",
    "tokens",
    "feed_ordinals",
    "keys",
    "record",
    "record_at",
    "string",
    "feed_size",
    "feed_broker",
    "feed_kind",
    "broker_kind",
    "__len__",
    "__contains__",
    "__iter__",
)
_PROPERTIES = (
    "header",
    "records",
    "generation",
    "checksum",
    "trade_date",
    "brokers",
    "feeds",
    "strict",
    "compiled",
)


class Following(Resolver):
    """The current generation of registry `name` in `directory`, followed across swaps."""

    def __init__(self, name: str, directory: Path, trusted: frozenset[int], **options: Any) -> None:
        # Resolver.__init__ is not called: every table lives in the current generation.
        self.name = name
        self.directory = directory
        self._trusted = trusted
        self.control_path = directory / control_file_name(name)
        self.swaps = 0
        self.failed_refreshes = 0
        self.last_error: str | None = None
        self._options = options
        self._callbacks: list[Callable[[int, int], object]] = []
        self._lock = threading.Lock()
        self._retry_at: float | None = None  # set while retired with no successor to follow
        # The lookups reach back to this object only through a weak reference, so a dropped
        # Following is freed (and unmapped) by reference counting, not by the cycle collector.
        ref = weakref.ref(self)

        def follow() -> Any:
            following = ref()
            if following is None:
                raise ValueError("the resolver is closed")
            retry_at = following._retry_at
            if retry_at is not None and monotonic() < retry_at:
                return following._current._unchecked  # its checks would only come back here
            current = following._refresh()
            if following._retry_at is None:
                return current
            return current._unchecked

        self._follow = follow
        try:
            control, self._publisher = _map_file(self.control_path, populate=False, trusted=trusted)
        except FileNotFoundError:
            raise UnavailableError(
                f"registry {name!r} is not published in {directory} "
                f"(no {self.control_path.name}); is `resolverd serve` running?"
            ) from None
        self._control: mmap.mmap | None = control
        self._words: memoryview | None = memoryview(control).cast("Q")
        self._control_id = _file_id(self.control_path)
        for _ in range(5):
            state = read_control(self._control)
            if state.generation == 0:
                self.close()
                raise UnavailableError(f"registry {name!r}: no generation published yet")
            try:
                self._install(self._open_generation(state))
                return
            except FileNotFoundError:
                continue  # swapped and unlinked between the two reads: read the control again
            except BaseException:
                self.close()
                raise
        self.close()
        raise UnavailableError(f"registry {name!r}: its generation kept changing while opening")

    def _open_generation(
        self, state: ControlState, words: memoryview | None = None, owner: int | None = None
    ) -> Resolver:
        """Map the generation `state` names, with lookups that check `state.sequence` in
        `words` and files owned by `owner` (by default: the followed control file's)."""
        if os.sep in state.snapshot or not state.snapshot:
            raise LayoutError(
                f"{self.control_path}: field snapshot {state.snapshot!r} is not a file name"
            )
        path = self.directory / state.snapshot
        options = dict(self._options)
        owner = self._publisher if owner is None else owner
        populate = options.pop("populate")
        mapped, _ = _map_file(path, populate=populate, trusted=self._trusted, owner=owner)
        words = self._words if words is None else words
        follow = {"control": words, "sequence": state.sequence, "follow": self._follow}
        try:
            current = Resolver(mapped, _owned=True, _follow=follow, **options)
        except LayoutError as exc:
            raise LayoutError(f"{path}: {exc}") from None
        if current.generation != state.generation:
            raise LayoutError(
                f"{state.snapshot}: generation {current.generation} in the snapshot, "
                f"{state.generation} in the control segment"
            )
        return current

    def _install(self, current: Resolver) -> None:
        self._current = current
        self._retry_at = None
        self._sequence = current._checked_sequence
        self.token, self.get_token = current.token, current.get_token
        self.key, self.get_key = current.key, current.get_key

    def _keep(self, current: Resolver, sequence: int) -> Resolver:
        """Stay on `current` and stop checking until the sequence moves past `sequence`."""
        current._check_against(sequence)
        self._sequence = sequence
        return current

    def _refresh(self) -> Resolver:
        """The generation to resolve from now, switching to a new one if one was published."""
        with self._lock:
            current, words, control = self._current, self._words, self._control
            if words is None or control is None:
                raise ValueError("the resolver is closed")
            seen = words[_hot.SEQUENCE_WORD]
            if seen == self._sequence:
                return current  # another thread switched while this one waited
            if self._retry_at is not None and monotonic() < self._retry_at:
                return current
            try:
                state = read_control(control, retries=100)
            except LayoutError as exc:
                return self._failed(current, seen, f"{self.control_path}: {exc}")
            if _names(state, current):
                return self._keep(current, state.sequence)  # repaired or adopted
            if state.generation == 0:
                if _file_id(self.control_path) == self._control_id:
                    # Not retired: the very file, set to no generation in place (a daemon
                    # that found nothing to adopt). Its sequence moves when it names one.
                    return self._keep(current, state.sequence)
                renewed = self._renewed()
                if renewed is None:
                    return self._orphaned(current)
                fresh = renewed
            else:
                try:
                    fresh = self._open_generation(state)
                except FileNotFoundError:
                    gone = f"{state.snapshot}: generation {state.generation} is gone"
                    return self._failed(current, state.sequence, gone)
                except (ResolverError, OSError) as exc:
                    return self._failed(current, state.sequence, str(exc))
            self._install(fresh)
            if fresh.generation == current.generation and fresh.checksum == current.checksum:
                return fresh  # the same generation, named by a renewed control file
            self.swaps += 1
        for callback in list(self._callbacks):
            try:
                callback(current.generation, fresh.generation)
            except Exception:  # a callback's failure must not fail the lookup that ran it
                _log.exception("on_swap callback %r failed", callback)
        return fresh

    def _renewed(self) -> Resolver | None:
        """The followed control file was retired: map the one at its name and, if it names a
        generation, follow it from now on and return that generation; else None."""
        for _ in range(5):
            try:
                control, owner = _map_file(self.control_path, populate=False, trusted=self._trusted)
            except FileNotFoundError:
                return None
            except (ResolverError, OSError) as exc:
                self._unrenewed(str(exc))
                return None
            words = memoryview(control).cast("Q")
            fresh = None
            try:
                state = read_control(control, retries=100)
                if state.generation == 0:
                    return None
                fresh = self._open_generation(state, words, owner)
            except FileNotFoundError:
                continue  # swapped and unlinked between the two reads: read the name again
            except (ResolverError, OSError) as exc:
                self._unrenewed(f"{self.control_path}: {exc}")
                return None
            finally:
                if fresh is None:
                    _unmap(words, control)
            # The retired file stays mapped until the last lookup bound to it is gone.
            self._control, self._words, self._publisher = control, words, owner
            self._control_id = _file_id(self.control_path)
            return fresh
        return None

    def _orphaned(self, current: Resolver) -> Resolver:
        """Stay on `current`, its control file retired with no successor to follow yet, and
        look at the control file's name again in `RETRY_SECONDS`."""
        self._retry_at = monotonic() + RETRY_SECONDS
        return self._keep(current, _NEVER)

    def _unrenewed(self, error: str) -> None:
        self.failed_refreshes += 1
        if error != self.last_error:  # retried every RETRY_SECONDS: say it once
            _log.warning(
                "registry %s: cannot follow the renewed control file: %s", self.name, error
            )
        self.last_error = error

    def _failed(self, current: Resolver, sequence: int, error: str) -> Resolver:
        self.failed_refreshes += 1
        self.last_error = error
        _log.warning(
            "registry %s: staying on generation %d: %s", self.name, current.generation, error
        )
        return self._keep(current, sequence)

    def _now(self) -> Resolver:
        """The current generation, after switching if the sequence moved."""
        words = self._words
        if words is None:
            raise ValueError("the resolver is closed")
        if words[_hot.SEQUENCE_WORD] != self._sequence:
            return self._refresh()
        return self._current

    @property
    def following(self) -> bool:
        return True

    def refresh(self) -> bool:
        generation = self._current.generation
        return self._now().generation != generation

    def on_swap(self, callback: Callable[[int, int], object]) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        """Unmap the control segment and the current generation; lookups then raise."""
        self._retry_at = None  # so a lookup bound before reaches `_refresh`, which refuses it
        current = self.__dict__.pop("_current", None)
        if current is not None:
            current.close()
            self.token, self.get_token = current.token, current.get_token
            self.key, self.get_key = current.key, current.get_key
        words, self._words = self._words, None
        control, self._control = self._control, None
        _unmap(words, control)

    def __repr__(self) -> str:
        current = self.__dict__.get("_current")
        generation = current.generation if current is not None else "closed"
        return f"<Following {self.name!r} in {self.directory} at generation {generation}>"


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None if there is none. Read just after mapping
    it: a file renamed into its place in between only sends a refresh the longer way."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _names(state: ControlState, current: Resolver) -> bool:
    """Whether the control state names `current`. The checksum too: a registry purged and
    served again numbers its generations from 1 again."""
    return state.generation == current.generation and state.payload_checksum == current.checksum


def _method(name: str) -> Callable[..., Any]:
    def method(self: Following, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._now(), name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(Resolver, name).__doc__
    return method


def _property(name: str) -> property:
    return property(
        lambda self: getattr(self._now(), name), doc=f"The current generation's {name}."
    )


for _name in _METHODS:
    setattr(Following, _name, _method(_name))
for _name in _PROPERTIES:
    setattr(Following, _name, _property(_name))
