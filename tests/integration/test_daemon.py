"""`resolverd serve` as a real subprocess, with real files, sockets, signals and readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from resolverd import Resolver, UnavailableError
from resolverd.daemon import announce
from resolverd.daemon.control import request

from .daemons import (
    AARTI,
    AARTI_RENUMBERED,
    NIFTY_CALL,
    TRADE_DATE,
    Daemon,
    ingest,
    wait_for,
    write_kite,
)

pytestmark = pytest.mark.integration
zmq = pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_a_source_file_change_is_followed_by_a_running_reader_and_announced(
    daemon: Daemon, kite: Path
) -> None:
    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"swap.universe")
    subscriber.connect(f"ipc://{daemon.directory / 'resolverd.pub'}")
    with Resolver.open("universe", directory=daemon.directory) as reader:
        assert reader.token("NSE:AARTIIND", "kite") == 1793
        time.sleep(0.3)  # the subscription reaches the PUB socket (ZeroMQ's slow joiner)
        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
        wait_for(lambda: reader.get_token("NSE:AARTIIND", "kite") == 2049, "the reader to follow")
        assert reader.generation == 2
        assert reader.get_key(1793, "kite") is None
    assert subscriber.poll(5000), "no swap announced"
    swap = announce.decode(subscriber.recv_multipart())
    subscriber.close()
    assert isinstance(swap, announce.Swap)
    assert (swap.registry, swap.generation, swap.previous_generation) == ("universe", 2, 1)
    assert swap.diff is not None
    assert swap.diff.tokens_changed == 1
    assert swap.diff.token_changes[0] == announce.TokenChange("NSE:AARTIIND", "kite", 1793, 2049)
    assert "file changed" in swap.reason


def test_sighup_reloads_every_registry(directory: Path, kite: Path) -> None:
    daemon = Daemon(
        directory, [f"kite={kite}"], RESOLVERD__REGISTRIES__UNIVERSE__WATCH="false"
    ).start()
    try:
        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
        time.sleep(0.3)
        assert daemon.status()["generation"] == 1  # not watched: nothing happened yet
        daemon.send(signal.SIGHUP)
        status = wait_for(lambda: daemon.status()["generation"] == 2 and daemon.status(), "HUP")
        assert status["last_reload"]["trigger"] == "SIGHUP"
    finally:
        assert daemon.stop() == 0


def test_a_daemon_serving_files_runs_without_the_postgres_extra(
    directory: Path, kite: Path, without_psycopg: dict[str, str]
) -> None:
    """psycopg comes with the postgres extra: a daemon whose sources are all files must serve,
    reload and stop without it."""
    path = without_psycopg["PYTHONPATH"]
    daemon = Daemon(directory, [f"kite={kite}"], PYTHONPATH=path).start()
    try:
        with Resolver.open("universe", directory=directory) as reader:
            assert reader.token("NSE:AARTIIND", "kite") == 1793
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
            wait_for(lambda: reader.generation == 2, "the reload of the changed file")
            assert reader.token("NSE:AARTIIND", "kite") == 2049
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert "psycopg" not in daemon.output()


def test_a_daemon_serving_a_database_without_the_postgres_extra_exits_78_saying_so(
    directory: Path, without_psycopg: dict[str, str]
) -> None:
    path = without_psycopg["PYTHONPATH"]
    daemon = Daemon(directory, ["postgresql://127.0.0.1/registry"], PYTHONPATH=path)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(timeout=60) == 78
    assert "needs psycopg: install resolverd[postgres]" in daemon.output()


def test_a_bad_source_keeps_the_last_good_generation_serving(daemon: Daemon, kite: Path) -> None:
    with Resolver.open("universe", directory=daemon.directory) as reader:
        write_kite(kite, AARTI, "12x34,7,BROKEN,,0,,0,0.05,1,EQ,NSE,NSE")
        failed = wait_for(
            lambda: (s := daemon.status())["reloads"]["failed"] and s, "the failed reload"
        )
        last = failed["last_reload"]
        assert last["result"] == "failed"
        assert last["reason"] == "source"
        assert "row 3, field instrument_token" in last["error"]
        assert failed["generation"] == 1
        assert reader.token("NSE:AARTIIND", "kite") == 1793
        result = subprocess.run(
            [sys.executable, "-m", "resolverd", "reload", "--control", daemon.control],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 65
        assert "row 3, field instrument_token" in result.stdout
        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
        wait_for(lambda: reader.get_token("NSE:AARTIIND", "kite") == 2049, "the fixed source")


def test_the_daemon_and_its_worker_keep_no_named_semaphore_in_dev_shm(
    daemon: Daemon, kite: Path
) -> None:
    """multiprocessing's semaphores under spawn are files in /dev/shm that a SIGKILL to the
    whole unit would leave behind for good: the daemon's processes must not hold any."""
    assert daemon.process is not None
    write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
    wait_for(lambda: daemon.status()["generation"] == 2, "the reload of the changed file")
    processes = [daemon.process.pid, *_children(daemon.process.pid)]
    assert len(processes) >= 2  # the daemon and its build worker at least
    for pid in processes:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/dev/shm/sem." not in maps, f"process {pid} maps a named semaphore"


def test_kill_9_leaves_readers_resolving_and_a_restarted_daemon_is_followed(
    daemon: Daemon, kite: Path
) -> None:
    assert daemon.process is not None
    workers = _children(daemon.process.pid)
    assert workers  # the build worker (and multiprocessing's resource tracker)
    with Resolver.open("universe", directory=daemon.directory) as reader:
        daemon.stop(signal.SIGKILL)
        for pid in workers:  # the kernel ends them with the daemon
            wait_for(lambda pid=pid: _gone(pid), f"process {pid} to end", 10)
        assert reader.token("NSE:AARTIIND", "kite") == 1793
        with Resolver.open("universe", directory=daemon.directory) as late:
            assert late.token("NFO:NIFTY24APR22500CE", "kite") == 17437186
        daemon.start()
        assert daemon.status()["generation"] == 1  # adopted, not rebuilt
        checked = wait_for(
            lambda: (s := daemon.status())["reloads"]["unchanged"] and s, "the sources checked"
        )
        assert checked["feeds"] == {"kite": 2}
        assert checked["trade_date"] == TRADE_DATE
        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
        wait_for(lambda: reader.get_token("NSE:AARTIIND", "kite") == 2049, "the restarted one")
        assert reader.generation == 2
    assert "left by a previous instance" in daemon.output()


def test_after_a_clean_stop_a_new_process_resolves_and_purge_leaves_nothing(
    daemon: Daemon,
) -> None:
    assert daemon.stop() == 0
    assert files(daemon.directory) == {
        ".resolverd.universe.lock",
        "resolverd.universe.ctl",
        "resolverd.universe.1.snap",
    }
    code = (
        "from resolverd import Resolver\n"
        f"r = Resolver.open('universe', directory={str(daemon.directory)!r})\n"
        "print(r.token('NSE:AARTIIND', 'kite'))\n"
    )
    reader = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert reader.stdout.strip() == "1793", reader.stderr
    status = subprocess.run(
        [sys.executable, "-m", "resolverd", "status", "--timeout", "0.5"],
        env={**os.environ, "RESOLVERD_SHM_DIR": str(daemon.directory)},
        capture_output=True,
        text=True,
    )
    assert status.returncode == 69
    assert "universe: generation 1 still published" in status.stdout
    assert "not running" in status.stdout
    purge = subprocess.run(
        [sys.executable, "-m", "resolverd", "purge", "universe", "--dir", str(daemon.directory)],
        capture_output=True,
        text=True,
    )
    assert purge.returncode == 0, purge.stderr
    assert files(daemon.directory) == set()


def test_a_first_build_that_fails_exits_with_the_errors_code(
    directory: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    write_kite(bad, "12x34,7,BROKEN,,0,,0,0.05,1,EQ,NSE,NSE")
    daemon = Daemon(directory, [f"kite={bad}"]).start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(timeout=60) == 65
    assert "row 2, field instrument_token" in daemon.output()
    assert files(directory) == {".resolverd.universe.lock", "resolverd.universe.ctl"}


def test_a_second_daemon_for_the_same_registry_is_refused(daemon: Daemon, kite: Path) -> None:
    second = Daemon(daemon.directory, [f"kite={kite}"])
    second.log = daemon.directory.parent / "second.log"
    second.start(wait=False)
    assert second.process is not None
    assert second.process.wait(timeout=60) == 69
    assert "served by another running process" in second.output()
    assert daemon.status()["generation"] == 1


def test_garbage_on_the_control_socket_gets_an_error_reply_and_the_daemon_lives_on(
    daemon: Daemon,
) -> None:
    client = zmq.Context.instance().socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(daemon.control)
    for garbage in (b"", b"\xff\x00garbage", b"\x81\xa7command\xa5purge"):
        client.send(garbage)
        assert client.poll(5000)
        reply = client.recv()
        assert b"malformed request" in reply
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(daemon.control)
    dealer.send_multipart([b"no", b"envelope", b"at all"])
    client.close()
    dealer.close()
    with pytest.raises(UnavailableError, match="unknown registry 'nope'"):
        request(daemon.control, "reload", "nope")
    assert daemon.status()["generation"] == 1


def test_metrics_show_the_generation_and_the_instruments_per_feed(daemon: Daemon) -> None:
    address = request(daemon.control, "status")["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'resolverd_generation{registry="universe"} 1' in text
    assert 'resolverd_instruments{registry="universe",feed="kite"} 2' in text


def test_watch_prints_each_swap_with_its_diff_as_it_comes(directory: Path, kite: Path) -> None:
    daemon = Daemon(directory, [f"kite={kite}"], RESOLVERD__DAEMON__HEARTBEAT_SECONDS="0.1")
    daemon.start()
    command = [sys.executable, "-m", "resolverd", "watch", "universe", "--heartbeats", "--json"]
    watcher = subprocess.Popen(
        [*command, "--control", daemon.control], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    try:
        # A heartbeat says the subscription is live: a swap from now on is not missed.
        assert json.loads(watcher.stdout.readline())["type"] == "heartbeat"
        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
        while (message := json.loads(watcher.stdout.readline()))["type"] != "swap":
            pass
        assert (message["registry"], message["generation"]) == ("universe", 2)
        assert message["diff"]["tokens_changed"] == 1
        assert message["diff"]["token_changes"] == [
            {"key": "NSE:AARTIIND", "broker": "kite", "old": 1793, "new": 2049}
        ]
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        watcher.stdout.close()
        assert daemon.stop() == 0


def test_status_on_the_command_line_in_both_forms(daemon: Daemon) -> None:
    human = subprocess.run(
        [sys.executable, "-m", "resolverd", "status", "--control", daemon.control],
        capture_output=True,
        text=True,
    )
    assert "universe: generation 1, 2 instruments" in human.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "resolverd", "status", "--control", daemon.control, "--json"],
        capture_output=True,
        text=True,
    )
    assert '"generation": 1' in as_json.stdout or '"generation":1' in as_json.stdout


def test_a_notify_from_the_postgresql_registry_produces_a_generation_readers_follow(
    registry_dsn: str, directory: Path, kite: Path
) -> None:
    ingest(registry_dsn, kite)
    daemon = Daemon(directory, [registry_dsn]).start()
    try:
        with Resolver.open("universe", directory=directory) as reader:
            assert reader.token("NSE:AARTIIND", "kite") == 1793
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)
            ingest(registry_dsn, kite)
            wait_for(lambda: reader.get_token("NSE:AARTIIND", "kite") == 2049, "NOTIFY")
        assert "NOTIFY instrument_registry_changed" in daemon.status()["last_reload"]["trigger"]
        assert "password" not in daemon.output()
    finally:
        assert daemon.stop() == 0


def test_systemd_hears_ready_reloading_status_watchdog_and_stopping(
    directory: Path, kite: Path, tmp_path: Path
) -> None:
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(30)
    daemon = Daemon(
        directory,
        [f"kite={kite}"],
        NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
        WATCHDOG_USEC="200000",
    ).start(wait=False)
    heard: list[str] = []

    def hear(wanted: str) -> str:
        while True:
            message = listener.recv(4096).decode()
            heard.append(message)
            if wanted in message.splitlines():
                return message

    try:
        ready = hear("READY=1")
        assert "STATUS=universe generation 1" in ready.splitlines()
        # READY means the control socket is bound: it answers at once.
        assert request(daemon.control, "status", timeout=1)["registries"]["universe"]
        hear("WATCHDOG=1")
        daemon.send(signal.SIGHUP)
        reloading = hear("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.splitlines())
        hear("READY=1")
        daemon.send(signal.SIGTERM)
        hear("STOPPING=1")
        daemon.send(signal.SIGTERM)  # a second one while stopping does not cut the stop short
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.stop(signal.SIGKILL)
        listener.close()


def test_metrics_count_the_subscribers_of_the_announcements(daemon: Daemon) -> None:
    address = request(daemon.control, "status")["metrics"]

    def subscribers() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        return next(line for line in lines if line.startswith("resolverd_subscribers "))

    assert subscribers() == "resolverd_subscribers 0"
    sockets = []
    for _ in range(2):
        subscriber = zmq.Context.instance().socket(zmq.SUB)
        subscriber.setsockopt(zmq.LINGER, 0)
        subscriber.connect(f"ipc://{daemon.directory / 'resolverd.pub'}")
        sockets.append(subscriber)
    wait_for(lambda: subscribers() == "resolverd_subscribers 2", "two subscribers")
    for subscriber in sockets:
        subscriber.close()
    wait_for(lambda: subscribers() == "resolverd_subscribers 0", "no subscribers")


def test_one_daemon_serves_several_registries_from_a_config_file(
    directory: Path, kite: Path, tmp_path: Path
) -> None:
    config = tmp_path / "resolverd.toml"
    config.write_text(
        f"""
[daemon]
runtime_dir = "{directory}"
metrics = ""
heartbeat_seconds = 0.1
grace_seconds = 0.1

[registries.equities]
sources = ["kite=instruments.csv"]
trade_date = "{TRADE_DATE}"
schedule = []
watch_interval_seconds = 0.05
debounce_seconds = 0

[registries.universe]
sources = ["synthetic=500"]
schedule = []
"""
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "resolverd", "serve", "--config", str(config)], stderr=stderr
        )
    control = f"ipc://{directory / 'resolverd.control'}"
    heartbeat = zmq.Context.instance().socket(zmq.SUB)
    heartbeat.setsockopt(zmq.LINGER, 0)
    heartbeat.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    try:
        status = wait_for(lambda: request(control, "status", timeout=0.5), "the daemon")
        assert set(status["registries"]) == {"equities", "universe"}
        with (
            Resolver.open("equities", directory=directory) as equities,
            Resolver.open("universe", directory=directory) as universe,
        ):
            assert equities.token("NSE:AARTIIND", "kite") == 1793
            assert len(universe) == 500
            write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)  # relative to the config file
            wait_for(lambda: equities.get_token("NSE:AARTIIND", "kite") == 2049, "equities")
            assert universe.generation == 1
        wait_for(lambda: not (directory / "resolverd.equities.1.snap").exists(), "the grace")
        heartbeat.connect(f"ipc://{directory / 'resolverd.pub'}")
        assert heartbeat.poll(5000)
        beat = announce.decode(heartbeat.recv_multipart())
        assert isinstance(beat, announce.Heartbeat)
        assert beat.registries == {"equities": 2, "universe": 1}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        heartbeat.close()
        process.kill()
        process.wait()
    assert '"level":"error"' not in log.read_text()


def test_a_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "resolverd.toml"
    config.write_text('[registries.universe]\nsources = ["synthetic=10"]\nmax_drop = 1.5\n')
    result = subprocess.run(
        [sys.executable, "-m", "resolverd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "registries.universe.max_drop" in result.stderr


def test_a_stop_during_the_first_build_ends_the_daemon_and_its_worker(
    directory: Path, tmp_path: Path
) -> None:
    daemon = Daemon(directory, ["synthetic=3000000"]).start(wait=False)
    assert daemon.process is not None
    pid = daemon.process.pid
    workers = wait_for(lambda: _children(pid), "the build worker to start")
    assert daemon.stop() == 0
    assert "stopped during the first build" in daemon.output()
    for pid in workers:
        wait_for(lambda pid=pid: _gone(pid), f"worker {pid} to end", 10)
    assert files(directory) == {".resolverd.universe.lock", "resolverd.universe.ctl"}


def _gone(pid: int) -> bool:
    """The process has exited (a zombie our test process has not reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _children(pid: int) -> list[int]:
    """The processes `pid` started (from /proc; Linux only, like /dev/shm)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found
