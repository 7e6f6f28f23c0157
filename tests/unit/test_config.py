"""The daemon's configuration: the TOML file, its validation and the environment overrides."""

from __future__ import annotations

import datetime as dt
import grp
import os
import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from resolverd import client as client_module
from resolverd.config import (
    Config,
    DaemonConfig,
    RegistryConfig,
    load_config,
    parse_host_port,
    parse_time_of_day,
    resolve_group,
    resolve_paths,
    simple_config,
)
from resolverd.errors import EX_CONFIG, ConfigError
from resolverd.sources import INDIA

MINIMAL = """
[registries.universe]
sources = ["synthetic=100"]
"""

FULL = """
[daemon]
runtime_dir = "/srv/resolverd/shm"
socket_dir = "/srv/resolverd/sockets"
group = "trading"
mode = 0o600
grace_seconds = 2.5
publish = "tcp://127.0.0.1:5556"
control = "ipc:///srv/resolverd/sockets/control"
heartbeat_seconds = 0.5
metrics = "[::1]:9100"
log_format = "text"
log_level = "debug"

[registries.universe]
sources = ["kite=/data/kite.csv", "/data/fyers.csv", "postgresql://reader@db/registry"]
mappings = ["/data/desk_csv.toml"]
trade_date = "2024-04-03"
max_drop = 0.35
watch = false
watch_interval_seconds = 3.0
debounce_seconds = 0.0
schedule = ["08:30", "15:45"]
listen = false
retry_seconds = 12.0

[registries."equity.cash"]
sources = ["synthetic=1000"]
schedule = []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resolverd.toml"
    path.write_text(text)
    return path


def refused(path: Path, environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError loading `path` raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return str(caught.value)


def test_every_setting_of_a_full_file_comes_back_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), {})
    as_plain = msgspec.json.decode(msgspec.json.encode(config))
    expected = tomllib.loads(FULL)
    expected["registries"]["equity.cash"] = msgspec.json.decode(
        msgspec.json.encode(RegistryConfig(sources=("synthetic=1000",), schedule=()))
    )
    assert as_plain == expected
    assert msgspec.convert(as_plain, Config) == config


def test_a_minimal_file_gets_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert config == Config(
        daemon=DaemonConfig(), registries={"universe": RegistryConfig(sources=("synthetic=100",))}
    )
    daemon, registry = config.daemon, config.registries["universe"]
    assert (daemon.mode, daemon.grace_seconds, daemon.heartbeat_seconds) == (0o640, 10.0, 1.0)
    assert (daemon.metrics, daemon.log_format, daemon.log_level) == (
        "127.0.0.1:9469",
        "json",
        "info",
    )
    assert (registry.max_drop, registry.schedule, registry.retry_seconds) == (0.2, ("08:45",), 30.0)
    assert registry.watch and registry.listen
    assert (registry.trade_date, registry.mappings) == ("", ())


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("colour = 'red'\n" + MINIMAL, "resolverd.toml: colour: unknown key"),
        ("[daemon]\ncolour = 'red'\n" + MINIMAL, "resolverd.toml: daemon.colour: unknown key"),
        (MINIMAL + "colour = 'red'\n", "resolverd.toml: registries.universe.colour: unknown key"),
    ],
)
def test_an_unknown_key_in_any_section_is_refused_by_its_path(
    tmp_path: Path, text: str, where: str
) -> None:
    assert where in refused(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[daemon]\ngrace_seconds = '10'\n" + MINIMAL, "daemon.grace_seconds: Expected `float`"),
        ("[daemon]\nmode = true\n" + MINIMAL, "daemon.mode: Expected `int`, got `bool`"),
        ("[daemon]\nlog_level = 'loud'\n" + MINIMAL, "daemon.log_level: Invalid enum value"),
        ("daemon = 3\n" + MINIMAL, "daemon: Expected `object`"),
        (MINIMAL + "watch = 'yes'\n", "registries.universe.watch: Expected `bool`"),
        (
            "[registries.universe]\nsources = 'kite.csv'\n",
            "registries.universe.sources: Expected `array`",
        ),
        (MINIMAL + "schedule = ['08:45', 9]\n", "registries.universe.schedule[1]: Expected `str`"),
        ("[registries]\nuniverse = 3\n", "registries.universe: Expected `object`"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_by_its_path(
    tmp_path: Path, text: str, where: str
) -> None:
    assert f"resolverd.toml: {where}" in refused(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[daemon]\nmode = 0o660\n", "daemon.mode: 0o660 is not within 0o640"),
        ("[daemon]\nmode = 0o750\n", "daemon.mode: 0o750 is not within 0o640"),
        ("[daemon]\nmode = 0o4640\n", "daemon.mode: 0o4640 is not within 0o640"),
        ("[daemon]\ngrace_seconds = -1\n", "daemon.grace_seconds: Expected `float` >= 0.0, got -1"),
        ("[daemon]\nheartbeat_seconds = 0\n", "daemon.heartbeat_seconds: Expected `float` > 0.0"),
        ("[daemon]\nheartbeat_seconds = inf\n", "daemon.heartbeat_seconds: inf is not a finite"),
        (
            "[daemon]\npublish = 'http://x'\n",
            "daemon.publish: 'http://x' is not an ipc:// or tcp://",
        ),
        ("[daemon]\ncontrol = 'ipc://'\n", "daemon.control: 'ipc://' is not an ipc:// or tcp://"),
        (
            "[daemon]\nmetrics = 'localhost:65536'\n",
            "daemon.metrics: 'localhost:65536' is not HOST:PORT",
        ),
        ("[daemon]\nmetrics = ':9469'\n", "daemon.metrics: ':9469' is not HOST:PORT"),
    ],
)
def test_a_daemon_setting_out_of_bounds_is_refused_by_its_path(
    tmp_path: Path, text: str, where: str
) -> None:
    assert f"resolverd.toml: {where}" in refused(write(tmp_path, text + MINIMAL))


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("max_drop = 1.5", "registries.universe.max_drop: Expected `float` <= 1.0, got 1.5"),
        ("max_drop = -0.1", "registries.universe.max_drop: Expected `float` >= 0.0, got -0.1"),
        ("schedule = ['08:45', '25:00']", "registries.universe.schedule[1]: '25:00' is not a time"),
        ("schedule = ['8:45']", "registries.universe.schedule[0]: '8:45' is not a time"),
        ("trade_date = '2024-02-30'", "registries.universe.trade_date: '2024-02-30' is not a date"),
        ("trade_date = '20240203'", "registries.universe.trade_date: '20240203' is not a date"),
        ("retry_seconds = 0", "registries.universe.retry_seconds: Expected `float` > 0.0"),
        ("debounce_seconds = -0.5", "registries.universe.debounce_seconds: Expected `float` >="),
        ("mappings = ['']", "registries.universe.mappings[0]: is empty"),
    ],
)
def test_a_registry_setting_out_of_bounds_is_refused_by_its_path(
    tmp_path: Path, setting: str, where: str
) -> None:
    assert f"resolverd.toml: {where}" in refused(write(tmp_path, f"{MINIMAL}{setting}\n"))


def test_the_failing_registry_is_named_among_several(tmp_path: Path) -> None:
    text = MINIMAL + "[registries.second]\nsources = ['synthetic=5']\nmax_drop = 2\n"
    assert "registries.second.max_drop: Expected `float` <= 1.0, got 2" in refused(
        write(tmp_path, text)
    )


@pytest.mark.parametrize("name", ["bad name", ".hidden", "-dash", "x" * 65, "ünïcode"])
def test_a_registry_name_outside_the_pattern_is_refused(tmp_path: Path, name: str) -> None:
    text = f'[registries."{name}"]\nsources = ["synthetic=5"]\n'
    assert f"resolverd.toml: registries.{name}: not a registry name" in refused(
        write(tmp_path, text)
    )


def test_a_registry_without_sources_is_refused(tmp_path: Path) -> None:
    empty = refused(write(tmp_path, "[registries.universe]\nsources = []\n"))
    assert "resolverd.toml: registries.universe.sources: Expected `array` of length >= 1" in empty
    missing = refused(write(tmp_path, "[registries.universe]\nwatch = false\n"))
    assert "resolverd.toml: registries.universe.sources: required key is missing" in missing


@pytest.mark.parametrize("text", ["[daemon]\n", "[registries]\n", ""])
def test_a_file_without_a_registry_is_refused(tmp_path: Path, text: str) -> None:
    assert "resolverd.toml: registries: no registry" in refused(write(tmp_path, text))


def test_an_error_is_a_config_error_with_the_config_exit_code(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[daemon]\ncolour = 1\n" + MINIMAL), {})
    assert caught.value.exit_code == EX_CONFIG == 78


def test_a_daemon_config_built_in_python_refuses_a_bad_mode_too() -> None:
    with pytest.raises(ConfigError, match=r"^mode: 0o777 is not within 0o640"):
        DaemonConfig(mode=0o777)


def test_relative_sources_and_mappings_are_taken_from_the_files_directory(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    text = """
[registries.universe]
sources = [
    "kite=data/kite.csv",
    "fyers.csv",
    "/abs/upstox.json",
    "dhan=/abs/dhan.csv",
    "postgresql://reader@db/registry",
    "postgres://reader@db/registry",
    "host=db dbname=registry",
]
mappings = ["maps/desk_csv.toml", "/abs/oms.toml"]
[registries.synthetic]
sources = ["synthetic=100"]
"""
    config = load_config(write(conf_dir, text), {})
    assert config.registries["universe"].sources == (
        f"kite={conf_dir / 'data/kite.csv'}",
        str(conf_dir / "fyers.csv"),
        "/abs/upstox.json",
        "dhan=/abs/dhan.csv",
        "postgresql://reader@db/registry",
        "postgres://reader@db/registry",
        "host=db dbname=registry",
    )
    assert config.registries["universe"].mappings == (
        str(conf_dir / "maps/desk_csv.toml"),
        "/abs/oms.toml",
    )
    assert config.registries["synthetic"].sources == ("synthetic=100",)


def test_a_relative_config_path_still_anchors_sources_to_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", '[registries.u]\nsources = ["kite=kite.csv"]\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/resolverd.toml"), {})
    assert config.registries["u"].sources == (f"kite={tmp_path / 'etc' / 'kite.csv'}",)


def test_a_trade_date_written_as_a_toml_date_is_that_date(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "trade_date = 2024-04-03\n"), {})
    assert config.registries["universe"].trade_date == "2024-04-03"


def test_environment_overrides_every_kind_of_value(tmp_path: Path) -> None:
    environ = {
        "RESOLVERD__DAEMON__GRACE_SECONDS": "2",
        "RESOLVERD__DAEMON__MODE": "0o600",
        "RESOLVERD__DAEMON__GROUP": "trading",
        "RESOLVERD__DAEMON__LOG_FORMAT": '"text"',
        "RESOLVERD__DAEMON__METRICS": "0.0.0.0:9100",
        "RESOLVERD__REGISTRIES__UNIVERSE__MAX_DROP": "0.3",
        "RESOLVERD__REGISTRIES__UNIVERSE__WATCH": "false",
        "RESOLVERD__REGISTRIES__UNIVERSE__SCHEDULE": '["09:00", "15:30"]',
        "RESOLVERD__REGISTRIES__UNIVERSE__SOURCES": '["kite=/data/kite.csv"]',
    }
    config = load_config(write(tmp_path, MINIMAL), environ)
    daemon, registry = config.daemon, config.registries["universe"]
    assert daemon.grace_seconds == 2.0
    assert daemon.mode == 0o600
    assert daemon.group == "trading"
    assert daemon.log_format == "text"
    assert daemon.metrics == "0.0.0.0:9100"
    assert registry.max_drop == 0.3
    assert registry.watch is False
    assert registry.schedule == ("09:00", "15:30")
    assert registry.sources == ("kite=/data/kite.csv",)


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    text = "[daemon]\ngrace_seconds = 30\n" + MINIMAL + "max_drop = 0.9\n"
    environ = {
        "RESOLVERD__DAEMON__GRACE_SECONDS": "1.5",
        "RESOLVERD__REGISTRIES__UNIVERSE__MAX_DROP": "0.1",
    }
    config = load_config(write(tmp_path, text), environ)
    assert config.daemon.grace_seconds == 1.5
    assert config.registries["universe"].max_drop == 0.1


def test_a_string_setting_takes_the_variables_text_even_when_it_looks_like_toml(
    tmp_path: Path,
) -> None:
    environ = {
        "RESOLVERD__DAEMON__GROUP": "1000",
        "RESOLVERD__REGISTRIES__UNIVERSE__TRADE_DATE": "2024-05-02",
        "RESOLVERD__DAEMON__METRICS": '""',
    }
    config = load_config(write(tmp_path, MINIMAL), environ)
    assert config.daemon.group == "1000"
    assert config.registries["universe"].trade_date == "2024-05-02"
    assert config.daemon.metrics == ""


def test_a_value_is_one_toml_value_which_may_span_lines(tmp_path: Path) -> None:
    environ = {"RESOLVERD__REGISTRIES__UNIVERSE__SCHEDULE": '[\n  "09:00",\n  "15:30",\n]'}
    config = load_config(write(tmp_path, MINIMAL), environ)
    assert config.registries["universe"].schedule == ("09:00", "15:30")


def test_a_value_followed_by_more_toml_is_text_not_a_second_setting(tmp_path: Path) -> None:
    environ = {"RESOLVERD__DAEMON__GRACE_SECONDS": "2\nheartbeat_seconds = 5"}
    message = refused(write(tmp_path, MINIMAL), environ)
    assert message.startswith(
        "environment RESOLVERD__DAEMON__GRACE_SECONDS: daemon.grace_seconds: Expected `float`, "
        "got `str`"
    )


def test_a_registry_is_matched_by_name_in_any_case(tmp_path: Path) -> None:
    text = '[registries."Equity.Cash"]\nsources = ["synthetic=5"]\n'
    environ = {"RESOLVERD__REGISTRIES__equity.cash__Max_Drop": "0.5"}
    assert load_config(write(tmp_path, text), environ).registries["Equity.Cash"].max_drop == 0.5


def test_sources_from_the_environment_are_not_moved_to_the_files_directory(
    tmp_path: Path,
) -> None:
    environ = {"RESOLVERD__REGISTRIES__UNIVERSE__SOURCES": '["kite=kite.csv"]'}
    config = load_config(write(tmp_path, MINIMAL), environ)
    assert config.registries["universe"].sources == ("kite=kite.csv",)


def test_variables_with_one_underscore_after_the_prefix_are_not_overrides(tmp_path: Path) -> None:
    environ = {
        "RESOLVERD_SHM_DIR": "/somewhere",
        "RESOLVERD_DSN": "postgresql://x/y",
        "resolverd__daemon__mode": "0o777",
        "PATH": "/bin",
    }
    assert load_config(write(tmp_path, MINIMAL), environ) == load_config(
        write(tmp_path, MINIMAL), {}
    )


@pytest.mark.parametrize(
    "variable",
    [
        "RESOLVERD__DAEMON__COLOUR",
        "RESOLVERD__DAEMON__",
        "RESOLVERD__DAEMON",
        "RESOLVERD__LOGGING__LEVEL",
        "RESOLVERD__REGISTRIES__UNIVERSE__COLOUR",
        "RESOLVERD__REGISTRIES__MAX_DROP",
        "RESOLVERD__",
    ],
)
def test_a_variable_that_names_no_setting_is_refused_by_name(tmp_path: Path, variable: str) -> None:
    message = refused(write(tmp_path, MINIMAL), {variable: "1"})
    assert message.startswith(f"environment {variable}: not a setting")


def test_a_variable_for_a_registry_not_in_the_file_is_refused_by_name(tmp_path: Path) -> None:
    message = refused(write(tmp_path, MINIMAL), {"RESOLVERD__REGISTRIES__OTHER__MAX_DROP": "0.1"})
    assert message.startswith("environment RESOLVERD__REGISTRIES__OTHER__MAX_DROP: no registry")


@pytest.mark.parametrize(
    ("variable", "value", "where"),
    [
        ("RESOLVERD__DAEMON__MODE", "0o777", "daemon.mode: 0o777 is not within 0o640"),
        ("RESOLVERD__DAEMON__MODE", "640", "daemon.mode: 0o1200 is not within 0o640"),
        ("RESOLVERD__DAEMON__GRACE_SECONDS", "soon", "daemon.grace_seconds: Expected `float`"),
        ("RESOLVERD__DAEMON__PUBLISH", "http://x", "daemon.publish: 'http://x' is not an"),
        (
            "RESOLVERD__REGISTRIES__UNIVERSE__MAX_DROP",
            "1.5",
            "registries.universe.max_drop: Expected `float` <= 1.0, got 1.5",
        ),
        (
            "RESOLVERD__REGISTRIES__UNIVERSE__SCHEDULE",
            '["08:45", "24:00"]',
            "registries.universe.schedule[1]: '24:00' is not a time",
        ),
        (
            "RESOLVERD__REGISTRIES__UNIVERSE__SOURCES",
            "kite.csv",
            "registries.universe.sources: Expected `array`, got `str`",
        ),
    ],
)
def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, variable: str, value: str, where: str
) -> None:
    message = refused(write(tmp_path, MINIMAL), {variable: value})
    assert message.startswith(f"environment {variable}: {where}")


def test_a_bad_value_in_the_file_is_blamed_on_the_file_despite_other_overrides(
    tmp_path: Path,
) -> None:
    text = "[daemon]\nmode = 0o777\n" + MINIMAL
    message = refused(write(tmp_path, text), {"RESOLVERD__DAEMON__GRACE_SECONDS": "1"})
    assert message.startswith(f"{tmp_path / 'resolverd.toml'}: daemon.mode: 0o777")


def test_a_missing_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert refused(path) == f"{path}: configuration file not found"


def test_a_directory_is_not_a_configuration(tmp_path: Path) -> None:
    assert refused(tmp_path).startswith(f"{tmp_path}: cannot read the configuration")


def test_invalid_toml_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "[daemon]\nmode = 0o640\ngrace_seconds = = 2\n" + MINIMAL))
    assert message.startswith(f"{tmp_path / 'resolverd.toml'}: not valid TOML:")
    assert "line 3, column 17" in message


def test_no_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config(None, {})


def test_a_simple_config_is_one_registry_with_the_daemons_defaults() -> None:
    config = simple_config("universe", ["kite=k.csv", "fyers.csv"], {})
    assert config == Config(
        registries={"universe": RegistryConfig(sources=("kite=k.csv", "fyers.csv"))}
    )


def test_a_simple_config_applies_the_environment_and_its_own_settings_over_it() -> None:
    environ = {
        "RESOLVERD__DAEMON__GRACE_SECONDS": "3",
        "RESOLVERD__REGISTRIES__UNIVERSE__MAX_DROP": "0.4",
        "RESOLVERD__REGISTRIES__UNIVERSE__WATCH": "false",
    }
    config = simple_config("universe", ["synthetic=5"], environ, max_drop=0.6)
    assert config.daemon.grace_seconds == 3.0
    assert config.registries["universe"].max_drop == 0.6
    assert config.registries["universe"].watch is False


def test_a_simple_configs_bad_setting_or_name_is_refused_by_its_path() -> None:
    with pytest.raises(ConfigError, match=re.escape("registries.u.max_drop: Expected `float` <=")):
        simple_config("u", ["synthetic=5"], {}, max_drop=1.5)
    with pytest.raises(ConfigError, match=re.escape("registries.u.colour: unknown key")):
        simple_config("u", ["synthetic=5"], {}, colour="red")
    with pytest.raises(ConfigError, match=re.escape("registries.a b: not a registry name")):
        simple_config("a b", ["synthetic=5"], {})
    with pytest.raises(ConfigError, match=re.escape("registries.u.sources: Expected `array` of")):
        simple_config("u", [], {})
    with pytest.raises(ConfigError, match=re.escape("environment RESOLVERD__REGISTRIES__V__WATCH")):
        simple_config("u", ["synthetic=5"], {"RESOLVERD__REGISTRIES__V__WATCH": "false"})


def test_a_simple_configs_bad_setting_is_blamed_on_the_command_line_not_the_environment() -> None:
    environ = {"RESOLVERD__REGISTRIES__U__MAX_DROP": "0.3"}
    with pytest.raises(ConfigError, match=r"^command line: registries\.u\.max_drop: Expected"):
        simple_config("u", ["synthetic=5"], environ, max_drop=1.5)


def test_paths_default_to_the_shm_variable_and_sockets_beside_the_segments() -> None:
    config = simple_config("u", ["synthetic=5"], {})
    paths = resolve_paths(config, {"RESOLVERD_SHM_DIR": "/shm/test"})
    assert paths.runtime_dir == paths.socket_dir == Path("/shm/test")
    assert paths.publish == "ipc:///shm/test/resolverd.pub"
    assert paths.control == "ipc:///shm/test/resolverd.control"


def test_sockets_go_to_systemds_runtime_directory(tmp_path: Path) -> None:
    config = simple_config("u", ["synthetic=5"], {})
    environ = {"RESOLVERD_SHM_DIR": "/shm/test", "RUNTIME_DIRECTORY": "/run/rd:/run/other"}
    paths = resolve_paths(config, environ)
    assert paths.runtime_dir == Path("/shm/test")
    assert paths.socket_dir == Path("/run/rd")
    assert paths.publish == "ipc:///run/rd/resolverd.pub"


def test_settings_in_the_file_win_over_the_variables(tmp_path: Path) -> None:
    text = (
        "[daemon]\nruntime_dir = '/a'\nsocket_dir = '/b'\npublish = 'tcp://127.0.0.1:5556'\n"
        + MINIMAL
    )
    config = load_config(write(tmp_path, text), {})
    environ = {"RESOLVERD_SHM_DIR": "/shm/test", "RUNTIME_DIRECTORY": "/run/rd"}
    paths = resolve_paths(config, environ)
    assert (paths.runtime_dir, paths.socket_dir) == (Path("/a"), Path("/b"))
    assert paths.publish == "tcp://127.0.0.1:5556"
    assert paths.control == "ipc:///b/resolverd.control"


def test_without_settings_or_variables_the_system_runtime_dir_is_used_if_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = simple_config("u", ["synthetic=5"], {})
    monkeypatch.setattr(client_module, "SYSTEM_RUNTIME_DIR", tmp_path)
    assert resolve_paths(config, {}).runtime_dir == tmp_path
    monkeypatch.setattr(client_module, "SYSTEM_RUNTIME_DIR", tmp_path / "absent")
    assert resolve_paths(config, {}).runtime_dir == Path("/dev/shm")
    (tmp_path / "file").touch()
    monkeypatch.setattr(client_module, "SYSTEM_RUNTIME_DIR", tmp_path / "file")
    assert resolve_paths(config, {}).socket_dir == Path("/dev/shm")


def test_a_time_of_day_is_hours_and_minutes_in_india() -> None:
    assert parse_time_of_day("08:45") == dt.time(8, 45, tzinfo=INDIA)
    assert parse_time_of_day("23:59") == dt.time(23, 59, tzinfo=INDIA)
    for text in ("24:00", "12:60", "8:45", "08:45:00", "0845", ""):
        with pytest.raises(ConfigError, match=re.escape(repr(text))):
            parse_time_of_day(text)


def test_host_and_port_are_split_with_ipv6_unbracketed() -> None:
    assert parse_host_port("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_host_port("[::1]:65535") == ("::1", 65535)
    for text in ("localhost:-1", "localhost:65536", "::1:80", "localhost", "host:port"):
        with pytest.raises(ConfigError, match=re.escape(repr(text))):
            parse_host_port(text)


def test_a_group_is_a_gid_by_number_or_by_name() -> None:
    assert resolve_group("") is None
    assert resolve_group("4242") == 4242
    own = grp.getgrgid(os.getgid())
    assert resolve_group(own.gr_name) == own.gr_gid


def test_an_unknown_group_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^daemon\.group: no group named 'no-such-group-\w+'"):
        resolve_group("no-such-group-c7f1e2")
