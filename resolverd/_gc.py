"""The cycle collector paused for a block that builds millions of small acyclic objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Loading a million rows makes millions of records, tuples and strings, none of them in a
    cycle; with the collector on, it rescans the growing heap again and again, which cost a
    third to a half of such a load (a COPY from PostgreSQL, five broker masters joined)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
