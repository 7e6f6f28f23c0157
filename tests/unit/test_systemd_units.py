"""The shipped unit files: the settings that keep readers' shared memory alive and the daemon
restartable."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from resolverd.errors import EX_CONFIG, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_USAGE

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
PLAIN = SYSTEMD / "resolverd.service"
TEMPLATE = SYSTEMD / "resolverd@.service"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections -> key -> every value assigned, in order (unit files allow repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: assignment before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def command(value: str) -> list[str]:
    # Exec lines may carry the prefixes "-", "@", "+", "!", ":" before the path.
    return shlex.split(value.lstrip("-@+!:"))


@pytest.fixture(params=[PLAIN, TEMPLATE], ids=["plain", "template"])
def unit(request: pytest.FixtureRequest) -> Unit:
    path: Path = request.param
    return parse_unit(path)


def test_daemon_reports_readiness_and_is_watched(unit: Unit) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    watchdog = one(unit, "WatchdogSec")
    assert watchdog not in ("", "0", "infinity")


def test_reload_sends_sighup_to_the_main_process(unit: Unit) -> None:
    argv = command(one(unit, "ExecReload"))
    assert Path(argv[0]).name == "kill"
    assert argv[1:] == ["-HUP", "$MAINPID"]


def test_bad_config_input_or_usage_stop_the_restart_loop_but_outages_retry(unit: Unit) -> None:
    assert one(unit, "Restart") == "on-failure"
    prevented = {int(code) for code in one(unit, "RestartPreventExitStatus").split()}
    assert {EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_CONFIG} <= prevented
    assert EX_UNAVAILABLE not in prevented


def test_stopping_the_unit_never_deletes_published_segments(unit: Unit) -> None:
    assert "DynamicUser" not in unit["Service"]
    assert one(unit, "RemoveIPC") == "no"
    assert one(unit, "RuntimeDirectory") == "resolverd"
    assert one(unit, "RuntimeDirectoryPreserve") == "yes"


def test_segments_are_readable_by_the_resolverd_group_and_nobody_else(unit: Unit) -> None:
    assert one(unit, "User") == "resolverd"
    assert one(unit, "Group") == "resolverd"
    umask = int(one(unit, "UMask"), 8)
    assert umask & 0o040 == 0
    assert umask & 0o007 == 0o007
    mode = int(one(unit, "RuntimeDirectoryMode"), 8)
    assert (mode & 0o050, mode & 0o007) == (0o050, 0)


def test_dev_shm_stays_writable_under_the_hardening(unit: Unit) -> None:
    assert "/dev/shm" in " ".join(unit["Service"].get("ReadWritePaths", [])).split()
    for key in ("InaccessiblePaths", "ReadOnlyPaths", "TemporaryFileSystem"):
        assert not any("/dev" in value for value in unit["Service"].get(key, []))
    assert unit["Service"].get("PrivateIPC", ["no"])[-1] == "no"


def test_every_exec_start_runs_resolverd_serve_with_a_config(unit: Unit) -> None:
    starts = unit["Service"]["ExecStart"]
    assert starts
    for value in starts:
        argv = command(value)
        assert Path(argv[0]).name == "resolverd"
        assert argv[1] == "serve"
        assert argv[argv.index("--config") + 1].startswith("/etc/resolverd/")


def test_plain_unit_reads_the_default_config() -> None:
    argv = command(one(parse_unit(PLAIN), "ExecStart"))
    assert argv[argv.index("--config") + 1] == "/etc/resolverd/resolverd.toml"


def test_template_reads_the_config_named_by_its_instance() -> None:
    argv = command(one(parse_unit(TEMPLATE), "ExecStart"))
    assert argv[argv.index("--config") + 1] == "/etc/resolverd/%i.toml"


def test_template_differs_from_the_plain_unit_only_in_config_and_description() -> None:
    plain, template = parse_unit(PLAIN), parse_unit(TEMPLATE)
    assert plain.keys() == template.keys()
    for section in plain:
        differ = {
            key
            for key in plain[section].keys() | template[section].keys()
            if plain[section].get(key) != template[section].get(key)
        }
        assert differ <= {"ExecStart", "Description"}, f"[{section}] differs in {sorted(differ)}"


def test_sysusers_declares_resolverd_as_a_system_user() -> None:
    lines = [
        shlex.split(line)
        for line in (SYSTEMD / "sysusers.d-resolverd.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["u", "resolverd", "-", "resolverd instrument resolver", "/var/lib/resolverd"] in lines
