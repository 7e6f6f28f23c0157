"""Type stub of the compiled lookups (resolverd/_speedups.c)."""

from collections.abc import Callable
from typing import Any

class Lookups:
    sequence: int
    def __init__(
        self,
        memory: Any,
        strict: bool,
        unknown: Callable[[str, str, Any], Exception],
        *,
        control: Any = None,
        sequence: int = 0,
        follow: Callable[[], Any] | None = None,
    ) -> None: ...
    def token(self, key: str, broker: str) -> Any: ...
    def get_token(self, key: str, broker: str, default: Any = None) -> Any: ...
    def key(self, token: Any, feed: str) -> Any: ...
    def get_key(self, token: Any, feed: str, default: Any = None) -> Any: ...
    def feed_ordinals_into(
        self, tokens: Any, feed: str, ordinals: Any, rows: Any = None, /
    ) -> None: ...
    def release(self) -> None: ...
