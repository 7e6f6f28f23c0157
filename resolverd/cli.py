"""The `resolverd` command: argument parsing and output only.

Exit codes (sysexits): 0 success; 1 a key or token was not found (like grep); 64 bad usage;
65 bad data (a bad source row or a bad snapshot); 66 a missing input; 69 a registry that is not
published; 78 bad configuration. Each error class carries its code (`errors.py`); `main` is the
one place that turns an exception into an exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from ._extras import require
from ._files import write_atomically
from .client import SYSTEM_RUNTIME_DIR, Resolver
from .compiler import compile_snapshot
from .errors import EX_USAGE, ConfigError, ResolverError, UnavailableError, os_error_exit_code
from .model import Registry
from .shm_layout import read_header
from .validate import DEFAULT_MAX_DROP, Report

EXIT_NOT_FOUND = 1
SNAPSHOT_ENV = "RESOLVERD_SNAPSHOT"
DSN_ENV = "RESOLVERD_DSN"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _trade_date(text: str | None) -> dt.date:
    """--trade-date, by default today in India (the exchanges' calendar)."""
    from .sources import today_in_india

    if text is None:
        return today_in_india()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--trade-date {text!r} is not a date (YYYY-MM-DD)") from None


def _register_mappings(args: argparse.Namespace) -> None:
    from .loaders import register_mapping

    for mapping in args.mapping or ():
        register_mapping(mapping)


def _build(args: argparse.Namespace, previous: dict[str, int] | None) -> tuple[Registry, Report]:
    from .sources import build_registry

    _register_mappings(args)
    if not 0 <= args.max_drop <= 1:
        raise ConfigError(f"--max-drop {args.max_drop} is not a share between 0 and 1")
    return build_registry(
        args.sources,
        trade_date=_trade_date(args.trade_date),
        previous=previous,
        max_drop=args.max_drop,
    )


def _print_report(report: Report) -> None:
    for line in report.lines():
        print(line, file=sys.stderr)


def cmd_compile(args: argparse.Namespace) -> int:
    from .sources import previous_counts

    started = time.perf_counter()
    baseline = args.previous or args.out
    registry, report = _build(args, previous_counts(baseline))
    loaded = time.perf_counter()
    snapshot = compile_snapshot(registry)
    compiled = time.perf_counter()
    write_atomically(Path(args.out), snapshot)
    header = read_header(snapshot)
    summary = {
        "out": args.out,
        "sources": list(report.sources),
        "instruments": header.instrument_count,
        "brokers": header.broker_count,
        "feeds": header.feed_count,
        "bytes": header.file_size,
        "checksum": f"{header.payload_checksum:016x}",
        "load_seconds": round(loaded - started, 4),
        "compile_seconds": round(compiled - loaded, 4),
        "report": report.to_dict(),
    }
    if args.json:
        _print_json(summary)
    else:
        _print_report(report)
        print(
            f"compiled {summary['instruments']:,} instruments from {', '.join(report.sources)} "
            f"into {args.out} ({header.file_size:,} bytes, checksum {summary['checksum']}); "
            f"load and check {loaded - started:.3f} s, compile {compiled - loaded:.3f} s"
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .sources import previous_counts

    previous = previous_counts(args.previous) if args.previous else None
    _, report = _build(args, previous)
    if args.json:
        _print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
        print("valid: every gate passed")
    return 0


def _given_or_env(value: str | None, variable: str, missing: str) -> str:
    """An option's value, else the environment variable's, else a ConfigError."""
    found = value or os.environ.get(variable)
    if not found:
        raise ConfigError(f"{missing} or set ${variable}")
    return found


def _dsn(args: argparse.Namespace) -> str:
    return _given_or_env(args.dsn, DSN_ENV, "no database: pass --dsn DSN")


def cmd_db_init(args: argparse.Namespace) -> int:
    from .db import init_schema, redact_dsn

    dsn = _dsn(args)
    init_schema(dsn)
    print(f"schema instrument_registry is ready in {redact_dsn(dsn)}")
    return 0


def cmd_db_ingest(args: argparse.Namespace) -> int:
    from .db import ingest, redact_dsn
    from .join import join
    from .sources import load_sources
    from .validate import check

    _register_mappings(args)
    dsn = _dsn(args)
    loaded = load_sources(args.sources)
    # The registry keeps every contract it is given (each compile drops what has expired by
    # its own trade date), so only the join and the duplicate gates run here.
    instruments, report = check(join(loaded), trade_date=None)
    brokers = {t.broker for i in instruments for t in i.tokens}
    result = ingest(dsn, instruments, brokers, source=", ".join(report.sources))
    if args.json:
        _print_json({"report": report.to_dict(), "ingest": dataclasses.asdict(result)})
    else:
        _print_report(report)
        for warning in result.warnings:
            print(f"  {warning}", file=sys.stderr)
        print(
            f"ingested into {redact_dsn(dsn)} in {result.seconds:.2f} s: {result.inserted:,}"
            f" instruments added, {result.updated:,} changed, {result.removed:,} removed;"
            f" {result.tokens:,} tokens; {result.renamed:,} kept their registry key"
        )
    return 0


def _snapshot_arg(args: argparse.Namespace) -> str:
    return _given_or_env(args.snapshot, SNAPSHOT_ENV, "no snapshot: pass --snapshot PATH_OR_NAME")


def _lookup_each(
    args: argparse.Namespace, items: Sequence[str], resolve: Callable[[str], Any]
) -> int:
    results: dict[str, Any] = {}
    for item in items:
        try:
            results[item] = resolve(item)
        except KeyError:
            results[item] = None
    if args.json:
        _print_json(results)
    else:
        for item, value in results.items():
            print(f"{item}\t{'(not found)' if value is None else value}")
    return EXIT_NOT_FOUND if any(v is None for v in results.values()) else 0


def cmd_lookup(args: argparse.Namespace) -> int:
    with Resolver.open(_snapshot_arg(args), strict=args.strict) as resolver:
        return _lookup_each(args, args.keys, lambda key: resolver.token(key, args.broker))


def cmd_reverse(args: argparse.Namespace) -> int:
    with Resolver.open(_snapshot_arg(args), strict=args.strict) as resolver:
        integer_feed = resolver.feed_kind(args.feed) == "int"

        def resolve(token: str) -> str:
            if not integer_feed:
                return resolver.key(token, args.feed)
            if not token.isdigit():
                raise KeyError(token)  # the feed has integer tokens; this cannot be one
            return resolver.key(int(token), args.feed)

        return _lookup_each(args, args.tokens, resolve)


def cmd_record(args: argparse.Namespace) -> int:
    with Resolver.open(_snapshot_arg(args), strict=args.strict) as resolver:
        return _lookup_each(args, args.keys, lambda key: msgspec.to_builtins(resolver.record(key)))


def cmd_inspect(args: argparse.Namespace) -> int:
    control = _control_state(args.snapshot)
    if control is not None:
        return _print_inspected(args, control, sections=None)
    with Resolver.open(args.snapshot, verify=args.verify) as resolver:
        h = resolver.header
        report = {
            "layout_version": f"{h.version_major}.{h.version_minor}",
            "generation": h.generation,
            "build_time": dt.datetime.fromtimestamp(h.build_time_ns / 1e9, dt.UTC).isoformat(),
            "trade_date": None if resolver.trade_date is None else str(resolver.trade_date),
            "instruments": h.instrument_count,
            "bytes": h.file_size,
            "bytes_per_instrument": round(h.file_size / h.instrument_count, 1),
            "payload_checksum": f"{h.payload_checksum:016x}",
            "verified": args.verify,
            "key_hash": {
                "bucket_bits": h.key_bucket_bits,
                "slots": h.key_slot_count,
                "key_width": h.key_width,
            },
            "brokers": {b: resolver.broker_kind(b) for b in resolver.brokers},
            "feeds": {f: resolver.feed_size(f) for f in resolver.feeds},
            "sections": {
                s.name: {
                    "offset": s.offset,
                    "bytes": s.nbytes,
                    "count": s.count,
                    "dtype": s.dtype.str if s.dtype.names is None else "record",
                }
                for s in h.sections.values()
            },
        }
    return _print_inspected(args, report, sections=report.pop("sections"))


def _control_state(given: str) -> dict[str, Any] | None:
    """What a registry's control file says, if `given` is one (an easy file to hand `inspect`:
    it is the one named after the registry); None for anything else."""
    from .shm_layout import CONTROL_MAGIC, read_control

    path = Path(given)
    try:
        with open(path, "rb") as file:
            head = file.read(len(CONTROL_MAGIC))
    except OSError:
        return None  # a name, or no such file: Resolver.open says which
    if head != CONTROL_MAGIC:
        return None
    state = read_control(path.read_bytes())
    return {
        "control_file": str(path),
        "generation": state.generation,
        "snapshot": str(path.parent / state.snapshot) if state.snapshot else None,
        "payload_checksum": f"{state.payload_checksum:016x}",
        "sequence": state.sequence,
        "updated": dt.datetime.fromtimestamp(state.updated_ns / 1e9, dt.UTC).isoformat(),
        "publisher_pid": state.publisher_pid,
    }


def _print_inspected(
    args: argparse.Namespace, report: dict[str, Any], sections: dict[str, dict[str, Any]] | None
) -> int:
    if args.json:
        _print_json(report if sections is None else {**report, "sections": sections})
        return 0
    for field, value in report.items():
        print(f"{field:22} {value}")
    if sections is not None:
        print(f"{'sections':22} {'offset':>12} {'bytes':>12} {'count':>10}  dtype")
        for name, entry in sections.items():
            print(
                f"  {name:20} {entry['offset']:12,} {entry['bytes']:12,} {entry['count']:10,}  "
                f"{entry['dtype']}"
            )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.size, seed=args.seed, out=args.out, parent=args.dir)


# -- the daemon -------------------------------------------------------------------------------


def _serve_config(args: argparse.Namespace) -> Any:
    from .config import load_config, simple_config

    if args.config and args.sources:
        raise ConfigError("give either --config FILE or SOURCE... --name NAME, not both")
    if args.config:
        config = load_config(args.config)
    elif args.sources:
        if not args.name:
            raise ConfigError("serving SOURCE... needs --name NAME (what readers open)")
        settings: dict[str, Any] = {}
        for option in ("trade_date", "max_drop", "mapping"):
            value = getattr(args, option)
            if value is not None:
                settings["mappings" if option == "mapping" else option] = value
        config = simple_config(args.name, args.sources, **settings)
    else:
        raise ConfigError("nothing to serve: pass --config FILE or SOURCE... --name NAME")
    overrides = {
        key: value
        for key, value in (("runtime_dir", args.dir), ("metrics", args.metrics))
        if value is not None
    }
    if overrides:
        config = msgspec.structs.replace(
            config, daemon=msgspec.structs.replace(config.daemon, **overrides)
        )
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    require("daemon", "zmq", "uvloop", needed_by="resolverd serve")
    from .daemon.app import serve
    from .daemon.logs import configure_logging

    config = _serve_config(args)
    configure_logging(args.log_format or config.daemon.log_format, config.daemon.log_level)
    return serve(config)


def _control_endpoint(args: argparse.Namespace) -> str:
    """The daemon's control socket: --control, --config's, $RESOLVERD_CONTROL, or the default
    in the directory readers use (see `client.shm_dir`)."""
    if args.control:
        return str(args.control)
    if args.config:
        from .config import load_config, resolve_paths

        return _as_the_unit_binds(resolve_paths(load_config(args.config)).control)
    from .client import shm_dir
    from .config import CONTROL_SOCKET

    return os.environ.get("RESOLVERD_CONTROL") or f"ipc://{shm_dir() / CONTROL_SOCKET}"


def _as_the_unit_binds(endpoint: str) -> str:
    """Under systemd the daemon binds its ipc:// sockets in the unit's RuntimeDirectory
    ($RUNTIME_DIRECTORY, see `config.resolve_paths`), which a shell does not have: where the
    config's socket is absent and the unit's directory holds one of its name, that one."""
    if not endpoint.startswith("ipc://"):
        return endpoint
    path = Path(endpoint.removeprefix("ipc://"))
    unit = SYSTEM_RUNTIME_DIR / path.name
    return f"ipc://{unit}" if not path.exists() and unit.exists() else endpoint


def cmd_status(args: argparse.Namespace) -> int:
    from .daemon.control import request

    try:
        status = request(_control_endpoint(args), "status", timeout=args.timeout)
    except UnavailableError:
        _print_published(args)
        raise
    if args.json:
        _print_json(status)
        return 0
    print(f"resolverd pid {status['pid']}, up since {status['started_at']}")
    print(f"  publishing in {status['runtime_dir']}; announcements on {status['publish']}")
    for name, registry in status["registries"].items():
        last = registry["last_reload"] or {}
        feeds = ", ".join(f"{feed} {count:,}" for feed, count in registry["feeds"].items())
        print(
            f"{name}: generation {registry['generation']}, {registry['instruments']:,} "
            f"instruments, trade date {registry['trade_date']}, checksum {registry['checksum']}"
        )
        if feeds:
            print(f"  feeds: {feeds}")
        if last:
            print(
                f"  last reload {last['at']}: {last['result']} in {last['seconds']} s"
                f" ({last['trigger']})" + (f": {last['error']}" if last["error"] else "")
            )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    require("daemon", "zmq", needed_by="resolverd watch")
    from .daemon.control import request
    from .daemon.watch import watch

    endpoint = args.publish
    if not endpoint:  # where the daemon says it announces, which no guess about paths beats
        endpoint = request(_control_endpoint(args), "status", timeout=args.timeout)["publish"]
    watch(
        endpoint,
        registry=args.name,
        heartbeats=args.heartbeats,
        as_json=args.json,
        count=args.count,
        idle=args.idle,
        out=lambda line: print(line, flush=True),
    )
    return 0


def _print_published(args: argparse.Namespace) -> None:
    """With no daemon answering, what its files still publish (readers keep resolving it)."""
    from .client import shm_dir
    from .daemon.publish import published

    directory = shm_dir()
    if args.json or not directory.is_dir():
        return
    for name, state in published(directory).items():
        print(
            f"{name}: generation {state.generation} still published in {directory} "
            f"(by pid {state.publisher_pid}, "
            f"{'running' if _alive(state.publisher_pid) else 'not running'})"
        )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_reload(args: argparse.Namespace) -> int:
    from .daemon.control import request

    endpoint = _control_endpoint(args)
    # A daemon that does not answer is found out in --timeout; a build may take minutes.
    request(endpoint, "status", timeout=args.timeout)
    timeout = args.timeout if args.no_wait else max(args.timeout, 600.0)
    result = request(endpoint, "reload", args.name, wait=not args.no_wait, timeout=timeout)
    if args.json:
        _print_json(result)
    code = 0
    for name, outcome in result.items():
        if isinstance(outcome, str):  # --no-wait: "triggered"
            line = f"{name}: reload {outcome}"
        else:
            last = outcome["last_reload"]
            code = code or int(last["exit_code"])
            detail = f": {last['error']}" if last["error"] else ""
            line = f"{name}: {last['result']}, generation {outcome['generation']}{detail}"
        if not args.json:
            print(line)
    return code


def cmd_purge(args: argparse.Namespace) -> int:
    from .client import shm_dir
    from .daemon.publish import purge

    removed = purge(shm_dir(args.dir), args.name)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print(f"registry {args.name!r}: nothing to remove in {shm_dir(args.dir)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resolverd", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="generate a universe, compile it and resolve it with timings, then serve it, "
        "follow it from a second process and swap it (the built-in default job)",
    )
    demo.add_argument("--size", type=int, default=1_000_000, help="instruments (default 1M)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", help="also keep the snapshot at this path")
    demo.add_argument("--dir", help="make the demo's temporary directory in DIR (default /dev/shm)")
    demo.set_defaults(run=cmd_demo)

    compile_ = commands.add_parser("compile", help="compile sources into a snapshot file")
    validate = commands.add_parser(
        "validate", help="load sources and run every gate, without compiling"
    )
    for command in (compile_, validate):
        command.add_argument(
            "sources",
            nargs="+",
            metavar="SOURCE",
            help="FORMAT=PATH, a bare PATH (format detected), a PostgreSQL DSN, or synthetic=N",
        )
        command.add_argument(
            "--trade-date",
            help="YYYY-MM-DD; contracts expired before it are dropped (default: today in India)",
        )
        command.add_argument(
            "--max-drop",
            type=float,
            default=DEFAULT_MAX_DROP,
            help="refuse a broker that lost more than this share of its instruments against"
            f" the previous snapshot (default {DEFAULT_MAX_DROP})",
        )
        command.add_argument(
            "--mapping",
            action="append",
            metavar="TOML",
            help="a generic loader's column mapping; its name becomes a FORMAT (repeatable)",
        )
        command.add_argument("--json", action="store_true")
    compile_.add_argument("--out", required=True, help="snapshot file to write")
    compile_.add_argument(
        "--previous", help="snapshot to compare sizes with (default: the --out file, if any)"
    )
    validate.add_argument("--previous", help="snapshot to compare sizes with")
    compile_.set_defaults(run=cmd_compile)
    validate.set_defaults(run=cmd_validate)

    db = commands.add_parser("db", help="the PostgreSQL instrument registry")
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    init = db_commands.add_parser("init", help="create the instrument_registry schema")
    ingest = db_commands.add_parser(
        "ingest", help="load broker masters into the registry in one transaction"
    )
    ingest.add_argument("sources", nargs="+", metavar="SOURCE", help="FORMAT=PATH or a bare PATH")
    ingest.add_argument("--mapping", action="append", metavar="TOML")
    ingest.add_argument("--json", action="store_true")
    for command in (init, ingest):
        command.add_argument("--dsn", help=f"the database (default ${DSN_ENV})")
    init.set_defaults(run=cmd_db_init)
    ingest.set_defaults(run=cmd_db_ingest)

    for name, run, what, metavar in (
        ("lookup", cmd_lookup, "key to token for a broker", "KEY"),
        ("reverse", cmd_reverse, "token to key within a feed", "TOKEN"),
        ("record", cmd_record, "a key's metadata and tokens", "KEY"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("keys" if metavar == "KEY" else "tokens", nargs="+", metavar=metavar)
        if name == "lookup":
            command.add_argument("--broker", "-b", required=True)
        if name == "reverse":
            command.add_argument("--feed", "-f", required=True)
        command.add_argument(
            "--snapshot", "-s", help=f"snapshot file or registry name (default ${SNAPSHOT_ENV})"
        )
        command.add_argument(
            "--strict",
            action="store_true",
            help="compare stored key bytes, not only 64-bit fingerprints",
        )
        command.add_argument("--json", action="store_true")
        command.set_defaults(run=run)

    inspect = commands.add_parser("inspect", help="header, counts and sections of a snapshot")
    inspect.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot file or registry name")
    inspect.add_argument("--verify", action="store_true", help="also check the payload checksum")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(run=cmd_inspect)

    serve = commands.add_parser(
        "serve", help="publish registries in shared memory and keep them current"
    )
    serve.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="serve these sources as registry --name"
    )
    serve.add_argument("--name", help="the registry name readers open (with SOURCE...)")
    serve.add_argument("--config", help="a TOML configuration (instead of SOURCE...)")
    serve.add_argument("--dir", help="where to publish (overrides daemon.runtime_dir)")
    serve.add_argument("--metrics", help="HOST:PORT of the metrics endpoint, '' for none")
    serve.add_argument("--trade-date", help="YYYY-MM-DD (default: today in India, each reload)")
    serve.add_argument("--max-drop", type=float, help=f"default {DEFAULT_MAX_DROP}")
    serve.add_argument("--mapping", action="append", metavar="TOML")
    serve.add_argument("--log-format", choices=("json", "text"))
    serve.set_defaults(run=cmd_serve)

    for name, run, what in (
        ("status", cmd_status, "what the running daemon serves"),
        ("reload", cmd_reload, "reload now and wait for the result"),
    ):
        command = commands.add_parser(name, help=what)
        if name == "reload":
            command.add_argument("name", nargs="?", help="one registry (default: all)")
            command.add_argument("--no-wait", action="store_true")
        command.add_argument("--config", help="the daemon's TOML configuration")
        command.add_argument("--control", help="the daemon's control endpoint")
        command.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        command.add_argument("--json", action="store_true")
        command.set_defaults(run=run)

    watch = commands.add_parser(
        "watch", help="print the daemon's announcements (swaps and their diffs) as they come"
    )
    watch.add_argument("name", nargs="?", help="one registry's swaps (default: all)")
    watch.add_argument("--config", help="the daemon's TOML configuration")
    watch.add_argument("--control", help="the daemon's control endpoint, to ask where it announces")
    watch.add_argument("--publish", help="the PUB endpoint itself (the daemon is not asked)")
    watch.add_argument("--timeout", type=float, default=5.0, help="for the daemon's answer")
    watch.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    watch.add_argument("--count", type=int, help="stop after this many announcements")
    watch.add_argument("--idle", type=float, help="fail (69) after this many quiet seconds")
    watch.add_argument("--json", action="store_true", help="one JSON object a line")
    watch.set_defaults(run=cmd_watch)

    purge = commands.add_parser(
        "purge", help="remove every file of a registry (the daemon must be stopped)"
    )
    purge.add_argument("name")
    purge.add_argument("--dir", help="the publishing directory (default as readers find it)")
    purge.set_defaults(run=cmd_purge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ResolverError as exc:
        print(f"resolverd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the OS refused that no resolverd error names: no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"resolverd: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return os_error_exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
