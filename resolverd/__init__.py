"""resolverd: a low-latency shared-memory instrument token resolver.

The public surface is what this module exports; every other module may change freely.
"""

from .client import Resolver
from .compiler import compile_snapshot
from .errors import (
    ConfigError,
    LayoutError,
    RegistryError,
    ResolverError,
    SourceError,
    SourceMissingError,
    UnavailableError,
    UnknownNameError,
    UntrustedError,
)
from .model import BrokerToken, Instrument, Registry
from .shm_layout import NO_TOKEN

__all__ = [
    "NO_TOKEN",
    "BrokerToken",
    "ConfigError",
    "Instrument",
    "LayoutError",
    "Registry",
    "RegistryError",
    "Resolver",
    "ResolverError",
    "SourceError",
    "SourceMissingError",
    "UnavailableError",
    "UnknownNameError",
    "UntrustedError",
    "compile_snapshot",
]
