"""What each section of the peer comparison (`python -m bench compare`) returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Section:
    """One part of the report: a title, a markdown table (rows of equal keys, in order), notes
    under it, contenders skipped with their reason, and raw figures for the JSON file and the
    charts (`data`, free-form, JSON-serialisable)."""

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
