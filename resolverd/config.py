"""The daemon's configuration: a TOML file validated with msgspec, overridable from the environment.

The file (every key optional unless said otherwise; the values shown are the defaults)::

    [daemon]
    runtime_dir = ""            # where segments are published; "" = $RESOLVERD_SHM_DIR, else
                                # /run/resolverd if it is a directory, else /dev/shm
    socket_dir = ""             # where ipc:// sockets go; "" = $RUNTIME_DIRECTORY (systemd's
                                # RuntimeDirectory=), else runtime_dir
    group = ""                  # group name or numeric gid owning the segments; "" = ours
    mode = 0o640                # segment file mode, within 0o640: the group reads, only the
                                # owner writes (readers refuse files others can write)
    grace_seconds = 10.0        # how long an old generation stays linked after a swap (>= 0)
    publish = ""                # ZeroMQ PUB endpoint, ipc:// or tcp://;
                                # "" = ipc://<socket_dir>/resolverd.pub
    control = ""                # ZeroMQ REP endpoint; "" = ipc://<socket_dir>/resolverd.control
    heartbeat_seconds = 1.0     # > 0
    metrics = "127.0.0.1:9469"  # HOST:PORT of the Prometheus endpoint, port 1..65535;
                                # "" disables it. Any host may be named, but none is implied.
    log_format = "json"         # json | text
    log_level = "info"          # debug | info | warning | error

    [registries.NAME]           # required, at least one; NAME is [A-Za-z0-9_][A-Za-z0-9_.-]{0,63}
    sources = ["kite=instruments.csv"]  # required, non-empty: FORMAT=PATH, PATH, a PostgreSQL
                                # DSN or synthetic=N
    mappings = []               # the generic loader's TOML mapping files
    trade_date = ""             # "" = today in India at each reload; else YYYY-MM-DD (a TOML
                                # date is accepted too)
    max_drop = 0.2              # 0..1: the largest fall in a broker's count a reload accepts
    watch = true                # reload when a source file changes
    watch_interval_seconds = 1.0  # > 0
    debounce_seconds = 0.5      # >= 0
    schedule = ["08:45"]        # daily reload times, HH:MM in Asia/Kolkata; [] for none
    listen = true               # LISTEN for NOTIFY on PostgreSQL sources
    retry_seconds = 30.0        # a failed reload is retried after this (> 0)

Relative source and mapping paths in the file are taken relative to the file's directory, so a
configuration reads the same whatever the daemon's working directory is.

Every setting can be overridden by an environment variable, ``RESOLVERD__DAEMON__<KEY>`` or
``RESOLVERD__REGISTRIES__<NAME>__<KEY>`` (the registry must be in the file; its name and the key
are matched case-insensitively). The value is read as a TOML value (``2``, ``0.3``, ``true``,
``["a", "b"]``, ``0o640``, ``"x"``); text that is not one is a plain string, and so is any value
given to a string setting unless it is quoted, so that ``RESOLVERD__DAEMON__GROUP=1000`` or
``RESOLVERD__REGISTRIES__U__TRADE_DATE=2024-05-02`` mean the text. A ``RESOLVERD__`` variable
that names no setting is an error; ``RESOLVERD_SHM_DIR`` and the like (one underscore) are not
overrides.

Every mistake is a `ConfigError` whose message says where it is and which key:
``resolverd.toml: registries.universe.max_drop: Expected `float` <= 1.0, got 1.5``, or
``environment RESOLVERD__DAEMON__MODE: daemon.mode: 0o777 is not within 0o640 ...``.
"""

from __future__ import annotations

import datetime as dt
import grp
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect

from .client import shm_dir
from .errors import ConfigError
from .loaders.postgres import is_dsn
from .sources import INDIA

__all__ = [
    "Config",
    "DaemonConfig",
    "RegistryConfig",
    "ResolvedPaths",
    "load_config",
    "parse_host_port",
    "parse_time_of_day",
    "resolve_group",
    "resolve_paths",
    "simple_config",
]

# The daemon's sockets, in its socket directory unless the endpoints are configured.
PUBLISH_SOCKET = "resolverd.pub"
CONTROL_SOCKET = "resolverd.control"

MAX_MODE = 0o640
ENV_PREFIX = "RESOLVERD__"
REGISTRY_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"

_NAME = re.compile(REGISTRY_NAME)
_FORMAT_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TIME_OF_DAY = re.compile(r"([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ENDPOINT = re.compile(r"(?:ipc|tcp)://\S+")
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]\s]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})")

Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
RegistryName = Annotated[str, msgspec.Meta(pattern=f"^{REGISTRY_NAME}$")]


class _Invalid(ConfigError, ValueError):
    """A value a Struct's ``__post_init__`` refuses. A ValueError so that msgspec.convert turns
    it into a ValidationError carrying the Struct's path; `key` is relative to that Struct."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"{key}: {detail}")


def _check_finite(struct: msgspec.Struct, *names: str) -> None:
    # Meta(ge=...) lets inf through, and an infinite sleep or grace period is a typo, not a plan.
    for name in names:
        value = getattr(struct, name)
        if not math.isfinite(value):
            raise _Invalid(name, f"{value} is not a finite number of seconds")


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``[daemon]`` table: where and how the daemon publishes (see the module docstring)."""

    runtime_dir: str = ""
    socket_dir: str = ""
    group: str = ""
    mode: Annotated[int, msgspec.Meta(ge=0)] = 0o640
    grace_seconds: NonNegativeSeconds = 10.0
    publish: str = ""
    control: str = ""
    heartbeat_seconds: Seconds = 1.0
    metrics: str = "127.0.0.1:9469"
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def __post_init__(self) -> None:
        if self.mode & ~MAX_MODE:
            raise _Invalid(
                "mode",
                f"{self.mode:#o} is not within {MAX_MODE:#o}: only the owner writes segments "
                "(readers refuse files others can write), the group may read, nothing for "
                "others, no execute, no setuid, setgid or sticky bit",
            )
        _check_finite(self, "grace_seconds", "heartbeat_seconds")
        for key in ("publish", "control"):
            endpoint = getattr(self, key)
            if endpoint and not _ENDPOINT.fullmatch(endpoint):
                raise _Invalid(key, f"{endpoint!r} is not an ipc:// or tcp:// ZeroMQ endpoint")
        if self.metrics:
            try:
                parse_host_port(self.metrics)
            except ConfigError as exc:
                raise _Invalid("metrics", str(exc)) from None


class RegistryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One ``[registries.NAME]`` table: a registry's sources and when it reloads."""

    sources: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    mappings: tuple[str, ...] = ()
    trade_date: str = ""
    max_drop: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    watch: bool = True
    watch_interval_seconds: Seconds = 1.0
    debounce_seconds: NonNegativeSeconds = 0.5
    schedule: tuple[str, ...] = ("08:45",)
    listen: bool = True
    retry_seconds: Seconds = 30.0

    def __post_init__(self) -> None:
        for key in ("sources", "mappings"):
            for index, spec in enumerate(getattr(self, key)):
                if not spec:
                    raise _Invalid(f"{key}[{index}]", "is empty")
        if self.trade_date:
            _check_trade_date(self.trade_date)
        for index, text in enumerate(self.schedule):
            try:
                parse_time_of_day(text)
            except ConfigError as exc:
                raise _Invalid(f"schedule[{index}]", str(exc)) from None
        _check_finite(self, "watch_interval_seconds", "debounce_seconds", "retry_seconds")


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole configuration: the daemon's settings and the registries it serves, by name."""

    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    registries: Annotated[dict[RegistryName, RegistryConfig], msgspec.Meta(min_length=1)]


class ResolvedPaths(msgspec.Struct, kw_only=True, frozen=True):
    """Where the daemon actually publishes, every "" of the file replaced by its default."""

    runtime_dir: Path
    socket_dir: Path
    publish: str
    control: str


def _check_trade_date(text: str) -> None:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        dt.date.fromisoformat(text)
    except ValueError:
        raise _Invalid("trade_date", f"{text!r} is not a date YYYY-MM-DD") from None


def parse_time_of_day(text: str) -> dt.time:
    """``HH:MM`` (00:00 to 23:59) as a time in India's zone, as `schedule` holds it.

    Raises `ConfigError` for anything else.
    """
    match = _TIME_OF_DAY.fullmatch(text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ConfigError(f"{text!r} is not a time of day HH:MM from 00:00 to 23:59")
    return dt.time(int(match[1]), int(match[2]), tzinfo=INDIA)


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for an IPv6 address) as (host, port), the host unbracketed.

    Raises `ConfigError` unless both are there and the port is 0..65535 (0: any free port,
    which `resolverd status` then shows): an empty host would
    mean every interface, and exposing the endpoint must be a choice someone wrote down.
    """
    match = _HOST_PORT.fullmatch(text)
    if not match or not 0 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{text!r} is not HOST:PORT with a port from 0 to 65535")
    return match["v6"] or match["host"], int(match["port"])


def resolve_group(group: str) -> int | None:
    """The gid `group` (a name or a number) names, or None for "" (the process's own group).

    Raises `ConfigError` naming ``daemon.group`` for a group this host does not have.
    """
    if not group:
        return None
    if group.isascii() and group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"daemon.group: no group named {group!r} on this host") from None


def resolve_paths(config: Config, environ: Mapping[str, str] | None = None) -> ResolvedPaths:
    """The runtime and socket directories and the two endpoints the daemon uses.

    `environ` (default `os.environ`) supplies RESOLVERD_SHM_DIR and RUNTIME_DIRECTORY.
    """
    env = os.environ if environ is None else environ
    daemon = config.daemon
    runtime_dir = shm_dir(daemon.runtime_dir or None, env)
    if daemon.socket_dir:
        socket_dir = Path(daemon.socket_dir)
    elif env.get("RUNTIME_DIRECTORY"):
        # systemd joins several RuntimeDirectory= entries with ':'; the first is the unit's own.
        socket_dir = Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    else:
        socket_dir = runtime_dir
    return ResolvedPaths(
        runtime_dir=runtime_dir,
        socket_dir=socket_dir,
        publish=daemon.publish or f"ipc://{socket_dir / PUBLISH_SOCKET}",
        control=daemon.control or f"ipc://{socket_dir / CONTROL_SOCKET}",
    )


def load_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """The configuration in the TOML file at `path`, with `environ`'s (default `os.environ`)
    ``RESOLVERD__`` overrides applied.

    Raises `ConfigError` if `path` is None (serving without a file is `simple_config`), if the
    file cannot be read or is not TOML, or for any unknown key or bad value.
    """
    if path is None:
        raise ConfigError("no configuration file given")
    label = os.fspath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read the configuration: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    _resolve_relative_paths(raw, Path(path).absolute().parent)
    origins = _apply_environment(raw, os.environ if environ is None else environ, label)
    return _validate(raw, label, origins)


def simple_config(
    name: str,
    sources: Sequence[str],
    environ: Mapping[str, str] | None = None,
    **registry_settings: Any,
) -> Config:
    """One registry `name` serving `sources`, the daemon's defaults, for
    ``resolverd serve SOURCE... --name NAME``.

    `environ`'s (default `os.environ`) ``RESOLVERD__`` overrides apply; `registry_settings`
    (the command line's flags: pass only those the operator gave) win over them. Raises
    `ConfigError` for a bad name, setting or override.
    """
    label = "command line"
    raw: dict[str, Any] = {"registries": {name: {"sources": list(sources)}}}
    origins = _apply_environment(raw, os.environ if environ is None else environ, label)
    for key, value in registry_settings.items():
        raw["registries"][name][key] = value
        origins.pop(("registries", name, key), None)
    return _validate(raw, label, origins)


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the file's relative source and mapping paths relative to `base`, in place.

    Values of the wrong type are left for validation to report.
    """
    registries = raw.get("registries")
    if not isinstance(registries, dict):
        return
    for table in registries.values():
        if not isinstance(table, dict):
            continue
        for key, resolve in (("sources", _resolve_spec), ("mappings", _resolve_path)):
            specs = table.get(key)
            if isinstance(specs, list):
                table[key] = [resolve(s, base) if isinstance(s, str) else s for s in specs]


def source_path(spec: str) -> str | None:
    """The file a source spec reads (the PATH of FORMAT=PATH or a bare PATH); None for a DSN
    or ``synthetic=N``."""
    if not spec or is_dsn(spec) or spec.startswith("synthetic="):
        return None
    word, sep, rest = spec.partition("=")
    return rest if sep and _FORMAT_WORD.fullmatch(word) else spec


def _resolve_spec(spec: str, base: Path) -> str:
    path = source_path(spec)
    if path is None:
        return spec
    resolved = _resolve_path(path, base)
    return resolved if path == spec else f"{spec.partition('=')[0]}={resolved}"


def _resolve_path(path: str, base: Path) -> str:
    if not path or os.path.isabs(path):
        return path
    return os.path.join(base, path)


def _string_settings(struct: type[msgspec.Struct]) -> frozenset[str]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return frozenset(f.name for f in info.fields if isinstance(f.type, msgspec.inspect.StrType))


_DAEMON_KEYS = frozenset(DaemonConfig.__struct_fields__)
_REGISTRY_KEYS = frozenset(RegistryConfig.__struct_fields__)
_DAEMON_STRINGS = _string_settings(DaemonConfig)
_REGISTRY_STRINGS = _string_settings(RegistryConfig)


def _apply_environment(
    raw: dict[str, Any], environ: Mapping[str, str], label: str
) -> dict[tuple[str, ...], str]:
    """Write `environ`'s overrides into `raw`; return which variable set which setting, so that
    a bad value is blamed on the variable rather than the file."""
    origins: dict[tuple[str, ...], str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        section, _, rest = variable[len(ENV_PREFIX) :].partition("__")
        section = section.lower()
        if section == "daemon":
            key = rest.lower()
            if key not in _DAEMON_KEYS:
                raise _unknown_variable(variable, "daemon", _DAEMON_KEYS)
            table = raw.setdefault("daemon", {})
            setting: tuple[str, ...] = ("daemon", key)
            strings = _DAEMON_STRINGS
        elif section == "registries":
            wanted, _, key = rest.rpartition("__")
            key = key.lower()
            if not wanted or key not in _REGISTRY_KEYS:
                raise _unknown_variable(variable, "a registry", _REGISTRY_KEYS)
            name = _registry_named(raw, wanted, variable, label)
            table = raw["registries"][name]
            setting = ("registries", name, key)
            strings = _REGISTRY_STRINGS
        else:
            raise ConfigError(
                f"environment {variable}: not a setting; overrides are "
                f"{ENV_PREFIX}DAEMON__<KEY> and {ENV_PREFIX}REGISTRIES__<NAME>__<KEY>"
            )
        if isinstance(table, dict):  # else the file's own type error is reported
            table[key] = _env_value(environ[variable], key in strings)
            origins[setting] = variable
    return origins


def _unknown_variable(variable: str, owner: str, keys: frozenset[str]) -> ConfigError:
    return ConfigError(
        f"environment {variable}: not a setting of {owner}; "
        f"the settings are {', '.join(sorted(k.upper() for k in keys))}"
    )


def _registry_named(raw: dict[str, Any], wanted: str, variable: str, label: str) -> str:
    registries = raw.get("registries")
    names: list[str] = [
        name
        for name in (registries if isinstance(registries, dict) else ())
        if name.lower() == wanted.lower()
    ]
    if len(names) != 1:
        problem = "more than one registry is" if names else "no registry is"
        raise ConfigError(f"environment {variable}: {problem} named {wanted!r} in {label}")
    return names[0]


def _env_value(text: str, is_string: bool) -> Any:
    """An environment variable's value as TOML, else as the text itself."""
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # One value, not a document: text after a newline must not be a setting silently dropped.
    if document.keys() != {"v"} or (is_string and not isinstance(document["v"], str)):
        return text
    return document["v"]


def _validate(raw: dict[str, Any], label: str, origins: dict[tuple[str, ...], str]) -> Config:
    registries = raw.get("registries")
    if registries is None or registries == {}:
        raise ConfigError(f"{label}: registries: no registry; add a [registries.NAME] table")
    if isinstance(registries, dict):
        for name in registries:
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"{label}: registries.{name}: not a registry name: use letters, digits, "
                    "'_', '.' and '-', at most 64, not starting with '.' or '-'"
                )
        for table in registries.values():
            # TOML has dates, and a trade date written as one means just that.
            if isinstance(table, dict) and type(table.get("trade_date")) is dt.date:
                table["trade_date"] = table["trade_date"].isoformat()
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        steps, detail = _explain(exc)
    if steps[:2] == ["registries", "[...]"]:
        # msgspec does not name a dict's key in its path: find the registry that fails alone.
        for name, table in registries.items():
            try:
                msgspec.convert(table, RegistryConfig)
            except msgspec.ValidationError as exc:
                inner, detail = _explain(exc)
                steps = ["registries", name, *inner]
                break
    setting = tuple(steps[:3] if steps[:1] == ["registries"] else steps[:2])
    if setting in origins:
        label = f"environment {origins[setting]}"
    value = _value_at(raw, steps)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and detail.startswith("Expected") and ", got" not in detail:
        detail += f", got {value!r}"
    where = "".join(s if s.startswith("[") else f".{s}" for s in steps).lstrip(".")
    raise ConfigError(f"{label}: {where}: {detail}")


_MSGSPEC_ERROR = re.compile(r"(?P<detail>.*?)(?: - at `(?P<path>[^`]*)`)?", re.DOTALL)
_PATH_STEP = re.compile(r"\.([^.\[]+)|(\[[^\]]*\])")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")
_MISSING = re.compile(r"Object missing required field `(.*)`")


def _explain(exc: msgspec.ValidationError) -> tuple[list[str], str]:
    """msgspec's message as the steps of its path (``$.a.b[1]`` -> a, b, [1]) and the detail."""
    match = _MSGSPEC_ERROR.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    detail = match["detail"]
    steps = [name or index for name, index in _PATH_STEP.findall(match["path"] or "$")]
    cause = exc.__cause__
    if isinstance(cause, _Invalid):
        steps += [name or index for name, index in _PATH_STEP.findall(f".{cause.key}")]
        detail = cause.detail
    elif unknown := _UNKNOWN.fullmatch(detail):
        steps.append(unknown[1])
        detail = "unknown key"
    elif missing := _MISSING.fullmatch(detail):
        steps.append(missing[1])
        detail = "required key is missing"
    return steps, detail


def _value_at(raw: Any, steps: list[str]) -> Any:
    for step in steps:
        if isinstance(raw, dict) and step in raw:
            raw = raw[step]
        elif isinstance(raw, list) and step.strip("[]").isdigit():
            raw = raw[int(step.strip("[]"))] if int(step.strip("[]")) < len(raw) else None
        else:
            return None
    return raw
