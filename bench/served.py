"""`resolverd serve` as a subprocess for the daemon benchmarks, in a scratch directory.

The daemon runs exactly as an operator starts it (``python -m resolverd serve SOURCE... --name
NAME --dir DIR --metrics ''``), with its settings overridden by ``RESOLVERD__`` environment
variables: files polled every 50 ms, no debounce, no daily schedule, no retry storm. Any
``RESOLVERD__`` variable of the caller's environment is dropped, so that a figure never depends
on the shell it was run from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from resolverd.daemon.control import request
from resolverd.errors import UnavailableError

SHM = Path("/dev/shm")
START_TIMEOUT_S = 60.0


def scratch_directory() -> Path:
    """A new empty directory in memory (under /dev/shm, as the daemon publishes by default),
    or under the temporary directory where there is no /dev/shm."""
    parent = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="resolverd-bench-", dir=parent))


class Served:
    """One `resolverd serve` process publishing registry `name` from `sources` in `directory`.

    `watch` polls the source files every 50 ms; without it only reload requests build. `grace`
    overrides how long a replaced generation stays linked. The daemon's log goes to `log`. Use
    as a context manager: it starts, waits until the first generation is published, and stops
    the daemon on exit (an exit code other than 0 is then an error).
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        sources: list[str],
        *,
        trade_date: str | None,
        watch: bool,
        log: Path,
        grace: float | None = None,
    ) -> None:
        self.directory, self.name, self.sources, self.log = directory, name, sources, log
        self.trade_date = trade_date
        prefix = f"RESOLVERD__REGISTRIES__{name.upper()}__"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RESOLVERD__")}
        self.env |= {
            f"{prefix}WATCH": "true" if watch else "false",
            f"{prefix}WATCH_INTERVAL_SECONDS": "0.05",
            f"{prefix}DEBOUNCE_SECONDS": "0",
            f"{prefix}SCHEDULE": "[]",
            f"{prefix}LISTEN": "false",
            f"{prefix}RETRY_SECONDS": "3600",
        }
        if grace is not None:
            self.env["RESOLVERD__DAEMON__GRACE_SECONDS"] = str(grace)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def publish(self) -> str:
        return f"ipc://{self.directory / 'resolverd.pub'}"

    @property
    def control(self) -> str:
        return f"ipc://{self.directory / 'resolverd.control'}"

    def __enter__(self) -> Served:
        return self.start()

    def start(self) -> Served:
        """Start the daemon (again, after `stop` or a kill: it adopts the directory) and wait
        until it serves."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "resolverd", "serve", *self.sources, "--name", self.name]
        command += ["--dir", str(self.directory), "--metrics", "", "--log-format", "text"]
        if self.trade_date:
            command += ["--trade-date", self.trade_date]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._check_running()
            try:
                # The control socket answers once the first generation is published.
                request(self.control, "status", timeout=0.5)
                return
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the daemon did not answer within {START_TIMEOUT_S:g} s\n{self.tail()}"
                    ) from None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        code = self.stop()
        if kind is None and code != 0:
            raise RuntimeError(f"the daemon exited with {code} on SIGTERM\n{self.tail()}")

    def _check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.process.returncode}\n{self.tail()}")

    def status(self) -> dict[str, Any]:
        """The registry's entry of the daemon's status."""
        self._check_running()
        result: dict[str, Any] = request(self.control, "status")["registries"][self.name]
        return result

    def reload(self, *, wait: bool = True, timeout: float = 120.0) -> Any:
        """A ``resolverd reload NAME`` request: with `wait`, the registry's status after the
        reload; without, as soon as it is triggered."""
        self._check_running()
        result = request(self.control, "reload", self.name, wait=wait, timeout=timeout)
        return result[self.name]

    def stop(self) -> int | None:
        """SIGTERM, as systemd stops it; the exit code (None if it had to be killed)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return None
        return process.returncode

    def tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, for an error message."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
