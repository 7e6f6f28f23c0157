"""The command line: output, JSON, and the exit codes scripts rely on."""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resolverd import Registry, _files, cli, compile_snapshot
from resolverd.cli import main
from resolverd.daemon.publish import Publisher
from resolverd.shm_layout import control_file_name, read_header

from ..conftest import hidden_modules
from .registries import sample_instruments

KITE_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange\n"
)


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "s.snap"
    path.write_bytes(compile_snapshot(Registry.from_instruments(sample_instruments())))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lookup_prints_tokens_and_exits_1_when_any_key_is_missing(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "lookup", "NSE:INFY", "-b", "kite", "-s", str(snapshot))
    assert (code, out) == (0, "NSE:INFY\t408065\n")
    code, out, _ = run(
        capsys, "lookup", "NSE:INFY", "NSE:NOPE", "-b", "kite", "-s", str(snapshot), "--json"
    )
    assert code == 1
    assert json.loads(out) == {"NSE:INFY": 408065, "NSE:NOPE": None}


def test_reverse_resolves_integer_and_string_feeds(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "reverse", "408065", "12x", "-f", "kite", "-s", str(snapshot), "--json"
    )
    assert (code, json.loads(out)) == (1, {"408065": "NSE:INFY", "12x": None})
    code, out, _ = run(capsys, "reverse", "NSE_FO|68114", "-f", "upstox", "-s", str(snapshot))
    assert (code, out) == (0, "NSE_FO|68114\tNFO:NIFTY24APR22500CE\n")


def test_record_prints_the_whole_instrument(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "record", "NFO:NIFTY24APR22500CE", "-s", str(snapshot), "--json")
    record = json.loads(out)["NFO:NIFTY24APR22500CE"]
    assert code == 0
    assert (record["expiry"], record["strike"], record["lot_size"]) == ("2024-04-25", 22500.0, 50)


def test_inspect_reports_counts_and_sections(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inspect", str(snapshot), "--verify", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["instruments"] == 3
    assert report["feeds"] == {"angel:NFO": 1, "angel:NSE": 1, "kite": 3, "upstox": 2}
    assert report["sections"]["keys"]["count"] == 3


def test_inspect_of_a_control_file_shows_the_generation_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    registry = Registry.from_instruments(sample_instruments())
    publisher.publish(compile_snapshot(registry, generation=publisher.next_generation))
    publisher.close()
    control = tmp_path / control_file_name("universe")
    code, out, _ = run(capsys, "inspect", str(control), "--json")
    report = json.loads(out)
    assert code == 0
    snapshot = tmp_path / "resolverd.universe.1.snap"
    assert (report["generation"], report["snapshot"]) == (1, str(snapshot))
    header = read_header(snapshot.read_bytes())
    assert report["payload_checksum"] == f"{header.payload_checksum:016x}"
    code, text, _ = run(capsys, "inspect", str(control))
    assert code == 0
    assert "generation             1\n" in text


def test_compile_writes_a_snapshot_from_a_kite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "instruments.csv"
    source.write_text(KITE_HEADER + "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n")
    out = tmp_path / "out.snap"
    code, text, _ = run(capsys, "compile", f"kite={source}", "--out", str(out), "--json")
    assert code == 0
    assert json.loads(text)["instruments"] == 1
    code, text, _ = run(capsys, "lookup", "NSE:INFY", "-b", "kite", "-s", str(out))
    assert (code, text) == (0, "NSE:INFY\t408065\n")


def test_bad_source_data_exits_65_naming_row_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "instruments.csv"
    source.write_text(KITE_HEADER + "12x34,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n")
    code, _, err = run(capsys, "compile", f"kite={source}", "--out", str(tmp_path / "o.snap"))
    assert code == 65
    assert "kite=instruments.csv: row 2, field instrument_token" in err
    assert not (tmp_path / "o.snap").exists()


def test_missing_inputs_and_bad_usage_have_their_own_exit_codes(
    tmp_path: Path, snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            capsys, "compile", f"kite={tmp_path / 'absent.csv'}", "--out", str(tmp_path / "o.snap")
        )[0]
        == 66
    )
    assert run(capsys, "lookup", "X", "-b", "kite", "-s", str(tmp_path / "absent.snap"))[0] == 69
    assert run(capsys, "lookup", "X", "-b", "kitee", "-s", str(snapshot))[0] == 64
    assert (
        run(capsys, "compile", "kite=x.csv", "--out", "o.snap", "--trade-date", "2024-13-01")[0]
        == 78
    )
    with pytest.raises(SystemExit) as exit_:
        main(["lookup"])
    assert exit_.value.code == 64


def test_a_damaged_snapshot_exits_65(
    tmp_path: Path, snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged.snap"
    damaged.write_bytes(snapshot.read_bytes()[:500])
    code, _, err = run(capsys, "inspect", str(damaged))
    assert code == 65
    assert "damaged.snap: truncated" in err


NIFTY_CALL_ROW = (
    "12345666,48225,NIFTY24APR22500CE,NIFTY,0,25-04-2024,22500,0.05,50,CE,NFO-OPT,NFO\n"
)
INFY_ROW = "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n"


def test_compile_drops_expired_contracts_and_says_the_file_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "instruments.csv"
    source.write_text(KITE_HEADER + INFY_ROW + NIFTY_CALL_ROW)
    out = tmp_path / "out.snap"
    code, text, err = run(
        capsys, "compile", f"kite={source}", "--out", str(out), "--trade-date", "2024-05-02"
    )
    assert code == 0
    assert "compiled 1 instruments" in text
    assert "kite=instruments.csv is stale: 1 of its 2 contracts expired" in err
    code, text, _ = run(
        capsys,
        "compile",
        f"kite={source}",
        "--out",
        str(out),
        "--trade-date",
        "2024-04-03",
        "--json",
    )
    assert (code, json.loads(text)["report"]["expired"]) == (0, 0)


def test_compile_refuses_a_source_that_shrank_against_the_snapshot_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "instruments.csv"
    source.write_text(KITE_HEADER + INFY_ROW + NIFTY_CALL_ROW)
    out = tmp_path / "out.snap"
    argv = ("compile", f"kite={source}", "--out", str(out), "--trade-date", "2024-04-03")
    assert run(capsys, *argv)[0] == 0
    before = out.read_bytes()
    source.write_text(KITE_HEADER + INFY_ROW)
    code, _, err = run(capsys, *argv)
    assert code == 65
    assert "broker kite: 1 instruments against 2 in the previous snapshot" in err
    assert out.read_bytes() == before  # the last good snapshot is untouched
    assert run(capsys, *argv, "--max-drop", "0.5")[0] == 0


def test_validate_runs_the_gates_without_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "instruments.csv"
    source.write_text(KITE_HEADER + INFY_ROW + NIFTY_CALL_ROW)
    code, text, _ = run(capsys, "validate", str(source), "--trade-date", "2024-04-03", "--json")
    assert code == 0
    report = json.loads(text)
    assert (report["instruments"], report["brokers"]) == (2, {"kite": 2})
    assert list(tmp_path.iterdir()) == [source]
    source.write_text(KITE_HEADER + INFY_ROW + INFY_ROW.replace("408065,1594", "408321,1595"))
    code, _, err = run(capsys, "validate", str(source), "--trade-date", "2024-04-03")
    assert code == 65
    assert "NSE:INFY is listed twice" in err


def test_a_trade_date_that_is_not_a_date_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "validate", "synthetic=10", "--trade-date", "03/04/2024")
    assert code == 78
    assert "--trade-date '03/04/2024' is not a date" in err


def run_without(
    environment: dict[str, str], cwd: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "resolverd", *argv],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "init", "--dsn", "postgresql://127.0.0.1/registry"],
        ["compile", "postgresql://127.0.0.1/registry", "--out", "registry.snap"],
    ],
)
def test_without_the_postgres_extra_a_database_command_exits_78_saying_what_to_install(
    argv: list[str], without_psycopg: dict[str, str], tmp_path: Path
) -> None:
    result = run_without(without_psycopg, tmp_path, *argv)
    assert result.returncode == 78
    assert "the PostgreSQL registry needs psycopg: install resolverd[postgres]" in result.stderr


@pytest.mark.parametrize(
    ("argv", "needed_by"),
    [
        (["serve", "kite=instruments.csv", "--name", "universe"], "resolverd serve"),
        (["status", "--control", "ipc:///nonexistent/control"], "a request to the daemon"),
        (["reload", "--control", "ipc:///nonexistent/control"], "a request to the daemon"),
        (["watch", "--publish", "ipc:///nonexistent/pub"], "resolverd watch"),
        (["demo", "--size", "10"], "resolverd demo (it serves the universe)"),
    ],
)
def test_without_the_daemon_extra_a_daemon_command_exits_78_saying_what_to_install(
    argv: list[str], needed_by: str, without_daemon_extra: dict[str, str], tmp_path: Path
) -> None:
    result = run_without(without_daemon_extra, tmp_path, *argv)
    assert result.returncode == 78
    assert f"{needed_by} needs zmq: install resolverd[daemon]" in result.stderr


def test_without_any_extra_files_compile_and_resolve(tmp_path: Path) -> None:
    """The base install (numpy, msgspec, xxhash) compiles files and resolves from snapshots."""
    bare = hidden_modules(tmp_path / "bare", "psycopg", "zmq", "uvloop")
    kite = tmp_path / "instruments.csv"
    kite.write_text(KITE_HEADER + "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n")
    argv = ["compile", f"kite={kite}", "--trade-date", "2024-04-03", "--out", "s.snap"]
    assert run_without(bare, tmp_path, *argv).returncode == 0
    result = run_without(bare, tmp_path, "lookup", "NSE:INFY", "-b", "kite", "-s", "s.snap")
    assert (result.returncode, result.stdout) == (0, "NSE:INFY\t408065\n")


def test_status_with_a_config_finds_the_socket_where_the_systemd_unit_binds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's daemon binds its sockets in $RUNTIME_DIRECTORY, which a shell lacks: a config
    with runtime_dir = "/dev/shm" and no socket_dir names a socket that is not there."""
    config = tmp_path / "resolverd.toml"
    config.write_text(
        f'[daemon]\nruntime_dir = "{tmp_path / "shm"}"\n'
        '[registries.universe]\nsources = ["kite=instruments.csv"]\n'
    )
    unit_dir = tmp_path / "run-resolverd"
    unit_dir.mkdir()
    monkeypatch.setattr(cli, "SYSTEM_RUNTIME_DIR", unit_dir)
    args = argparse.Namespace(control=None, config=str(config))
    assert cli._control_endpoint(args) == f"ipc://{tmp_path / 'shm' / 'resolverd.control'}"
    (unit_dir / "resolverd.control").touch()
    assert cli._control_endpoint(args) == f"ipc://{unit_dir / 'resolverd.control'}"
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "resolverd.control").touch()  # the config's own socket comes first
    assert cli._control_endpoint(args) == f"ipc://{tmp_path / 'shm' / 'resolverd.control'}"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errno.EACCES, 77),  # EX_NOPERM
        (errno.ENOSPC, 73),  # EX_CANTCREAT
        (errno.EIO, 74),  # EX_IOERR
    ],
)
def test_a_file_the_os_refuses_is_an_error_line_and_an_exit_code_not_a_traceback(
    error: int,
    code: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kite = tmp_path / "instruments.csv"
    kite.write_text(KITE_HEADER + "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n")
    out = tmp_path / "universe.snap"

    def refused(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(error, os.strerror(error), str(tmp_path / ".universe.snap.x"))

    monkeypatch.setattr(_files.tempfile, "mkstemp", refused)
    argv = ["compile", f"kite={kite}", "--trade-date", "2024-04-03", "--out", str(out)]
    result, _, err = run(capsys, *argv)
    assert result == code
    assert err == f"resolverd: error: {out}: {os.strerror(error)}\n"
