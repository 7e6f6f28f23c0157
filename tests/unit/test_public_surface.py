"""The public surface: what `resolverd` exports, and what importing it costs a trading process."""

from __future__ import annotations

import json
import subprocess
import sys

import resolverd

PUBLIC = {
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
}

HEAVY = [
    "zmq",
    "uvloop",
    "psycopg",
    "resolverd.daemon",
    "resolverd.db",
    "resolverd.loaders",
    "resolverd.cli",
]


def test_the_public_names_are_exactly_the_agreed_ones() -> None:
    # Changing this set is changing the product's API: do it on purpose, here.
    assert set(resolverd.__all__) == PUBLIC
    assert len(resolverd.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(resolverd, name) is not None, name


def test_every_public_error_is_a_resolver_error_with_an_exit_code() -> None:
    errors = [getattr(resolverd, n) for n in PUBLIC if n.endswith("Error")]
    for error in errors:
        assert issubclass(error, resolverd.ResolverError), error
        assert isinstance(error.exit_code, int), error


def imported_after(statement: str) -> list[str]:
    """The heavy modules present in sys.modules after `statement` runs in a fresh interpreter."""
    probe = "\n".join(
        [
            "import json, sys",
            statement,
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    found: list[str] = json.loads(result.stdout)
    return found


def test_importing_the_client_pulls_in_no_daemon_loader_or_cli_dependency() -> None:
    assert imported_after("import resolverd, resolverd.client") == []


def test_the_import_probe_sees_a_heavy_module_when_one_is_imported() -> None:
    # Without this, a probe that printed nothing useful would pass the test above.
    assert "resolverd.cli" in imported_after("import resolverd.cli")
