"""`resolverd serve`: one asyncio (uvloop) process that keeps registries published.

It ties together the publisher (`publish`), the builds (`build`, in a worker process), the
triggers (`reload`), the announcements (`announce`, on a ZeroMQ PUB socket), the control
socket (`control`), the metrics endpoint (`metrics`) and systemd (`notify`). Its rules:

1. The event loop never compiles. A build runs in one worker process: loading and compiling
   hold the GIL for seconds, which here would stall heartbeats, the watchdog and replies.
2. Nothing that serves is lost to a failed reload. A build that fails a gate, a source that is
   unreachable, a snapshot that does not verify: the last good generation stays current, the
   failure is logged, counted and shown in ``status``, and the reload is retried after
   ``retry_seconds``. A reload whose payload equals the current one publishes nothing.
3. A registry with nothing to serve at start (no generation left by a previous instance) must
   build: if that first build fails the daemon exits with the error's code, because there is
   nothing to keep serving. A generation a previous instance left is served at once and
   reloaded in the background.
4. READY reaches systemd only after every registry has a generation, the signal handlers are
   installed and the sockets are bound; the watchdog is pinged from the event loop itself, so
   a wedged loop stops pinging.
5. A stop (SIGTERM, SIGINT) unlinks replaced generations but leaves each registry's control
   file and current generation, so readers keep resolving while the daemon is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from ..config import (
    Config,
    RegistryConfig,
    parse_host_port,
    parse_time_of_day,
    resolve_group,
    resolve_paths,
    source_path,
)
from ..errors import LayoutError, UnavailableError
from ..model import days_to_date
from ..sources import INDIA
from . import announce, control
from .build import Built, Failed, Job, failed
from .metrics import Metrics, serve_metrics
from .notify import Notifier, watchdog_loop
from .publish import Publisher
from .reload import Debouncer, daily, listen_postgres, watch_files
from .worker import BuildWorker

__all__ = ["Daemon", "serve"]

log = logging.getLogger("resolverd.daemon")

# ipc:// sockets: readers in the daemon's group must be able to connect (which needs write).
_SOCKET_MODE = 0o660
# The largest frame a peer may send (ZMQ_MAXMSGSIZE); a larger one drops its connection. A
# frame's length comes first on the wire and libzmq sets that much memory aside for it at once,
# so without a cap one connection claiming 8 GiB holds 8 GiB of the daemon's address space.
# Control requests are a few hundred bytes (16 MiB still answers a huge malformed one with an
# error reply); subscribers send the PUB socket only subscriptions, topic prefixes.
_MAX_REQUEST_BYTES = 16 << 20
_MAX_SUBSCRIPTION_BYTES = 64 << 10


def _source_paths(config: RegistryConfig) -> list[Path]:
    """The files a registry reads, to watch: its file sources and its mapping files."""
    paths = [source_path(spec) for spec in config.sources]
    return [Path(p) for p in paths if p is not None] + [Path(m) for m in config.mappings]


def _shown(spec: str) -> str:
    """A source as `status` shows it: a connection string without its password."""
    from ..loaders.postgres import is_dsn

    if not is_dsn(spec):
        return spec
    from ..db import redact_dsn  # psycopg: imported only by a daemon that serves a database

    return redact_dsn(spec)


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _log_unsent(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("announcement not sent: %s", sent.exception())


class RegistryService:
    """One served registry: its publisher, its triggers and the outcome of its last reload."""

    def __init__(self, daemon: Daemon, name: str, config: RegistryConfig) -> None:
        self.daemon, self.name, self.config = daemon, name, config
        paths = daemon.paths
        self.publisher = Publisher(
            paths.runtime_dir,
            name,
            mode=daemon.config.daemon.mode,
            gid=daemon.gid,
            grace=daemon.config.daemon.grace_seconds,
        )
        # A source that never stops changing is still reloaded, at most this long after its
        # first change.
        max_delay = max(5.0, 10 * config.debounce_seconds)
        self.debouncer = Debouncer(self.reload, config.debounce_seconds, max_delay)
        self.last: dict[str, Any] | None = None
        self.counts = {"ok": 0, "unchanged": 0, "failed": 0}
        self.feeds: dict[str, int] = {}
        self._retry: asyncio.TimerHandle | None = None
        self.retry_at: float | None = None

    # -- reload ---------------------------------------------------------------------------------

    async def reload(self, reasons: list[str]) -> None:
        """Build, verify and publish a new generation (rule 2); the Debouncer's action."""
        reason = "; ".join(reasons) or "reload"
        publisher = self.publisher
        job = Job(
            registry=self.name,
            sources=self.config.sources,
            mappings=self.config.mappings,
            trade_date=dt.date.fromisoformat(self.config.trade_date)
            if self.config.trade_date
            else None,
            max_drop=self.config.max_drop,
            generation=publisher.next_generation,
            out=str(publisher.temporary_path(publisher.next_generation)),
            previous=str(publisher.current) if publisher.current else None,
            previous_checksum=publisher.header.payload_checksum if publisher.header else None,
        )
        started, wall = time.monotonic(), time.time()
        self.daemon.metrics.last_reload_time[self.name] = wall
        result = await self.daemon.worker.build(job)
        if isinstance(result, Built) and not result.unchanged:
            previous = publisher.generation
            try:
                # Reading and hashing a large snapshot takes a while: off the event loop.
                header = await asyncio.to_thread(publisher.check_file, Path(job.out))
                published = publisher.publish_checked(Path(job.out), header)
            except (LayoutError, OSError) as exc:
                result = failed(exc, "publishing: ")
            else:
                seconds = time.monotonic() - started
                self._announce(result, previous, published.path.name, seconds, reason)
        seconds = time.monotonic() - started
        self._record(result, reason, wall, seconds)

    def _announce(
        self, built: Built, previous: int, snapshot: str, seconds: float, reason: str
    ) -> None:
        message = announce.Swap(
            registry=self.name,
            generation=built.generation,
            previous_generation=previous,
            checksum=f"{built.checksum:016x}",
            trade_date=built.trade_date,
            instruments=built.instruments,
            feeds=built.feeds,
            snapshot=snapshot,
            published_ns=time.time_ns(),
            reload_seconds=round(seconds, 6),
            reason=reason,
            diff=built.diff,
        )
        self.daemon.announce(message)
        self.daemon.notifier.status(self.daemon.summary())
        metrics = self.daemon.metrics
        metrics.generation[self.name] = built.generation
        self.daemon.update_segments(self)
        diff = built.diff
        log.info(
            "registry %s: generation %d published",
            self.name,
            built.generation,
            extra={
                "registry": self.name,
                "generation": built.generation,
                "instruments": built.instruments,
                "checksum": message.checksum,
                "reason": reason,
                "added": diff.added if diff else None,
                "removed": diff.removed if diff else None,
                "expired": diff.expired if diff else None,
                "tokens_changed": diff.tokens_changed if diff else None,
                "load_seconds": round(built.load_seconds, 3),
                "compile_seconds": round(built.compile_seconds, 3),
            },
        )

    def _serving(self, built: Built) -> None:
        """Tokens per feed of what is served: a new generation's, or the current one's when
        the build found the same payload (as after a restart that adopted it)."""
        self.feeds = built.feeds
        metrics = self.daemon.metrics
        for key in [k for k in metrics.instruments if k[0] == self.name]:
            del metrics.instruments[key]
        for feed, count in built.feeds.items():
            metrics.instruments[(self.name, feed)] = count

    def _record(self, result: Built | Failed, reason: str, wall: float, seconds: float) -> None:
        metrics = self.daemon.metrics
        metrics.last_reload_duration[self.name] = seconds
        if isinstance(result, Failed):
            outcome = "failed"
            metrics.reload_failures[(self.name, result.reason)] = (
                metrics.reload_failures.get((self.name, result.reason), 0) + 1
            )
            log.error(
                "registry %s: reload failed, generation %d stays: %s",
                self.name,
                self.publisher.generation,
                result.error,
                extra={"registry": self.name, "reason": result.reason, "trigger": reason},
            )
            self._schedule_retry()
        else:
            self._serving(result)
            outcome = "unchanged" if result.unchanged else "ok"
            if result.unchanged:
                log.info("registry %s: sources unchanged (%s)", self.name, reason)
            log.info(
                "registry %s: gates passed",
                self.name,
                extra={"registry": self.name, "report": result.report},
            )
            self._cancel_retry()
        metrics.last_reload_success[self.name] = outcome != "failed"
        metrics.reloads[(self.name, outcome)] = metrics.reloads.get((self.name, outcome), 0) + 1
        self.counts[outcome] += 1
        self.last = {
            "result": outcome,
            "at": dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds"),
            "seconds": round(seconds, 4),
            "trigger": reason,
            "reason": result.reason if isinstance(result, Failed) else None,
            "error": result.error if isinstance(result, Failed) else None,
            "exit_code": result.exit_code if isinstance(result, Failed) else 0,
        }

    def _schedule_retry(self) -> None:
        self._cancel_retry()
        delay = self.config.retry_seconds
        loop = asyncio.get_running_loop()
        self.retry_at = time.time() + delay
        self._retry = loop.call_later(delay, self.debouncer.trigger, "retry after a failure")

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry, self.retry_at = None, None

    # -- triggers -------------------------------------------------------------------------------

    def trigger_tasks(self) -> list[Awaitable[None]]:
        """The coroutines that watch this registry's sources and schedule."""
        from ..loaders.postgres import is_dsn

        trigger = self.debouncer.trigger
        tasks: list[Awaitable[None]] = []
        paths = _source_paths(self.config)
        if self.config.watch and paths:
            tasks.append(watch_files(paths, self.config.watch_interval_seconds, trigger))
        databases = [spec for spec in self.config.sources if is_dsn(spec)]
        if self.config.listen and databases:
            from ..db import NOTIFY_CHANNEL  # psycopg: only for a daemon that serves a database

            tasks += [listen_postgres(spec, NOTIFY_CHANNEL, trigger) for spec in databases]
        if self.config.schedule:
            times = [parse_time_of_day(t).replace(tzinfo=None) for t in self.config.schedule]
            tasks.append(daily(times, INDIA, trigger))
        return tasks

    def status(self) -> dict[str, Any]:
        header = self.publisher.header
        return {
            "generation": self.publisher.generation,
            "checksum": f"{header.payload_checksum:016x}" if header else None,
            "snapshot": str(self.publisher.current) if self.publisher.current else None,
            "instruments": header.instrument_count if header else 0,
            "trade_date": _iso(days_to_date(header.trade_date)) if header else None,
            "feeds": self.feeds,
            "sources": [_shown(spec) for spec in self.config.sources],
            "last_reload": self.last,
            "reloads": dict(self.counts),
            "retry_at": self.retry_at,
            "linked_generations": [p.name for p in self.publisher.linked()],
        }


class Daemon:
    """The running daemon: `run` serves until stopped and returns the exit code."""

    def __init__(self, config: Config, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.paths = resolve_paths(config, self.environ)
        self.gid = resolve_group(config.daemon.group)
        self.metrics = Metrics()
        self.notifier = Notifier(self.environ)
        self.services = {
            name: RegistryService(self, name, c) for name, c in config.registries.items()
        }
        self.started = time.time()
        self.worker = BuildWorker()  # every registry's builds, one at a time
        self._context: zmq.asyncio.Context | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics_address: tuple[str, int] | None = None
        self._metrics_server: asyncio.Server | None = None
        self._ipc_paths: list[Path] = []

    # -- announcements --------------------------------------------------------------------------

    def announce(self, message: announce.Message) -> None:
        if self._pub is None:
            return
        # A zmq.asyncio socket reports a failed send on the future it returns, never by raising.
        sent = asyncio.ensure_future(
            self._pub.send_multipart(announce.encode(message), flags=zmq.NOBLOCK)
        )
        sent.add_done_callback(_log_unsent)

    async def _heartbeats(self) -> None:
        interval = self.config.daemon.heartbeat_seconds
        while True:
            self.announce(
                announce.Heartbeat(
                    pid=os.getpid(),
                    sent_ns=time.time_ns(),
                    interval=interval,
                    registries={n: s.publisher.generation for n, s in self.services.items()},
                )
            )
            await asyncio.sleep(interval)

    async def _count_subscribers(self, pub: zmq.asyncio.Socket) -> None:
        """Keep `metrics.subscribers` at the number of connections the PUB socket holds."""
        from zmq.utils.monitor import parse_monitor_message

        monitor = pub.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                change = 1 if event["event"] == zmq.EVENT_ACCEPTED else -1
                self.metrics.subscribers = max(0, self.metrics.subscribers + change)
        finally:
            pub.disable_monitor()
            monitor.close()

    def update_segments(self, service: RegistryService) -> None:
        linked = service.publisher.linked()
        sizes = []
        for path in linked:
            with contextlib.suppress(OSError):
                sizes.append(path.stat().st_size)
        self.metrics.segments[service.name] = len(sizes)
        self.metrics.segment_bytes[service.name] = sum(sizes)

    async def _expire(self) -> None:
        """Unlink replaced generations as their grace periods end."""
        while True:
            waits = [s.publisher.next_expiry() for s in self.services.values()]
            due = [w for w in waits if w is not None]
            await asyncio.sleep(min([1.0, *due]))
            for service in self.services.values():
                if service.publisher.expire():
                    self.update_segments(service)

    # -- control --------------------------------------------------------------------------------

    async def _control(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            frames = await socket.recv_multipart()
            task = asyncio.create_task(self._answer(socket, frames))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, socket: zmq.asyncio.Socket, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._count("error")
            return  # no envelope to reply to
        envelope, payload = frames[:-1], frames[-1]
        # Each request is counted once: under its command if it was answered, else as an error.
        try:
            request = control.decode_request(payload)
            reply = control.Reply(True, result=await self._execute(request))
        except (ValueError, UnavailableError) as exc:
            self._count("error")
            reply = control.Reply(False, error=str(exc))
        except Exception as exc:  # a bug answering must not take the daemon down
            log.exception("control request failed")
            self._count("error")
            reply = control.Reply(False, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._count(request.command)
        with contextlib.suppress(zmq.ZMQError):
            await socket.send_multipart([*envelope, control.encode_reply(reply)])

    def _count(self, command: str) -> None:
        requests = self.metrics.control_requests
        requests[command] = requests.get(command, 0) + 1

    async def _execute(self, request: control.Request) -> Any:
        if request.registry is not None and request.registry not in self.services:
            raise ValueError(
                f"unknown registry {request.registry!r}; serving {', '.join(self.services)}"
            )
        chosen = [s for n, s in self.services.items() if request.registry in (None, n)]
        if request.command == "status":
            return self.status()
        if request.command == "stats":
            return {"metrics": self.metrics.render().decode()}
        if not request.wait:
            for service in chosen:
                service.debouncer.trigger("resolverd reload")
            return {s.name: "triggered" for s in chosen}
        await asyncio.gather(*(s.debouncer.run_now("resolverd reload") for s in chosen))
        return {s.name: s.status() for s in chosen}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": dt.datetime.fromtimestamp(self.started, dt.UTC).isoformat(
                timespec="seconds"
            ),
            "runtime_dir": str(self.paths.runtime_dir),
            "publish": self.paths.publish,
            "control": self.paths.control,
            "metrics": "{}:{}".format(*self.metrics_address) if self.metrics_address else None,
            "registries": {name: s.status() for name, s in self.services.items()},
        }

    # -- lifetime -------------------------------------------------------------------------------

    def _bind(self, kind: int, endpoint: str, max_frame: int) -> zmq.asyncio.Socket:
        assert self._context is not None
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, max_frame)
        if endpoint.startswith("ipc://"):
            path = Path(endpoint.removeprefix("ipc://"))
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            socket.close()
            raise UnavailableError(f"cannot bind {endpoint}: {exc}") from None
        if endpoint.startswith("ipc://"):
            self._ipc_paths.append(path)
            os.chmod(path, _SOCKET_MODE)
            if self.gid is not None:
                os.chown(path, -1, self.gid)
        return socket

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading every registry")
        self.notifier.reloading()

        async def reload_all() -> None:
            await asyncio.gather(*(s.debouncer.run_now("SIGHUP") for s in self.services.values()))
            self.notifier.ready_after_reload(self.summary())

        self._spawn(reload_all(), "sighup")

    def summary(self) -> str:
        return ", ".join(
            f"{name} generation {s.publisher.generation}" for name, s in self.services.items()
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code (0, or the first build's failure)."""
        loop = asyncio.get_running_loop()
        if not self.paths.runtime_dir.is_dir():
            raise UnavailableError(f"{self.paths.runtime_dir}: runtime_dir does not exist")
        adopted = []
        try:
            for service in self.services.values():
                removed = service.publisher.adopt()
                if removed:
                    log.info("registry %s: removed %d stale files", service.name, len(removed))
                if service.publisher.generation:
                    adopted.append(service)
                    self.metrics.generation[service.name] = service.publisher.generation
                    log.info(
                        "registry %s: serving generation %d left by a previous instance",
                        service.name,
                        service.publisher.generation,
                    )
            self._context = zmq.asyncio.Context()
            self._pub = self._bind(zmq.PUB, self.paths.publish, _MAX_SUBSCRIPTION_BYTES)
            router = self._bind(zmq.ROUTER, self.paths.control, _MAX_REQUEST_BYTES)
            # Before the first builds, which can take long: a stop must not wait for them.
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
            for service in self.services.values():
                if service.publisher.generation:
                    continue
                if not await self._until_stopped(service.debouncer.run_now("start")):
                    log.info("stopped during the first build")
                    return 0
                if not service.publisher.generation:
                    assert service.last is not None
                    log.error("registry %s: nothing to serve; stopping", service.name)
                    return int(service.last["exit_code"]) or 70
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._spawn(self._control(router), "control")
            self._spawn(self._heartbeats(), "heartbeat")
            self._spawn(self._count_subscribers(self._pub), "subscribers")
            self._spawn(self._expire(), "expire")
            for service in self.services.values():
                self.update_segments(service)
                for index, coroutine in enumerate(service.trigger_tasks()):
                    self._spawn(coroutine, f"{service.name}.trigger.{index}")
            for service in adopted:
                service.debouncer.trigger("start: check the sources")
            if self.config.daemon.metrics:
                host, port = parse_host_port(self.config.daemon.metrics)
                server = self._metrics_server = await serve_metrics(self.metrics, host, port)
                bound = server.sockets[0].getsockname()
                self.metrics_address = (bound[0], bound[1])
            interval = self.notifier.watchdog_interval()
            if interval:
                self._spawn(watchdog_loop(self.notifier, interval), "watchdog")
            # Everything made so far (modules, sockets, the first generations' tables) lives as
            # long as the daemon: out of the cycle collector's way, a full collection scans only
            # what reloads made since. Without this one took 12 to 33 ms on the event loop
            # here, and an announcement or a control reply waited for it.
            gc.freeze()
            self.notifier.ready(self.summary())
            log.info("serving %s", self.summary(), extra={"pid": os.getpid()})
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            self.announce(announce.Stopping(pid=os.getpid(), sent_ns=time.time_ns()))
            return 0
        finally:
            await self._shutdown(loop)

    async def _until_stopped(self, work: Awaitable[None]) -> bool:
        """Await `work` unless a stop comes first (then cancel it); True if it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        # A second SIGTERM while stopping changes nothing (the default action would kill the
        # daemon halfway through its cleanup); a SIGHUP no longer reloads.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for service in self.services.values():
            service._cancel_retry()
            await service.debouncer.close()
            service.publisher.close()
        # A build still running is abandoned: its temporary file is removed by the next
        # instance's adopt, and nothing it did is visible to readers.
        self.worker.stop()
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        if self._context is not None:
            self._context.destroy(linger=0)
        for path in self._ipc_paths:
            path.unlink(missing_ok=True)
        self.notifier.close()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit.

    systemd starts services with a soft limit of 1024 and leaves raising it to the service.
    Every peer connection (metrics, the control and PUB sockets) costs the daemon a descriptor,
    and a reload that cannot open its files fails: the headroom is cheap, since nothing here
    uses select(2), which is what the low default protects.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def serve(config: Config, run: Callable[[Awaitable[int]], int] | None = None) -> int:
    """Run the daemon on uvloop until it stops; its exit code."""
    import uvloop

    raise_open_file_limit()

    async def main() -> int:
        return await Daemon(config).run()

    return run(main()) if run is not None else uvloop.run(main())
