"""include/resolverd.h, compiled with the system C compiler, against the Python client: the
conformance vectors, every key of the real Kite file both ways, damaged files, and a
generation swap made by a running daemon.

The C programs (tests/c/) answer queries read from stdin, one per line, strings in hex; this
module writes the queries and compares each answer line with the Python client's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.c_reader import find_compiler
from resolverd import LayoutError, Registry, Resolver, compile_snapshot
from resolverd.daemon.publish import Publisher, purge
from resolverd.loaders import load_kite
from resolverd.shm_layout import (
    BROKER_DTYPE,
    CONTROL_SEQUENCE_LIMIT,
    FEED_DTYPE,
    HEADER_DTYPE,
    HEADER_FIXED_SIZE,
    KIND_STR,
    SECTION_DTYPE,
    field_offset,
    read_header,
    set_generation,
)

from ..fuzzing import of_the_previous_major_version, reseal_payload
from ..publishing import publish_until_a_renewal_is_next
from ..unit.registries import instrument
from .daemons import AARTI, AARTI_RENUMBERED, NIFTY_CALL, Daemon, wait_for, write_kite

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"
SOURCES = ROOT / "tests" / "c"
VECTORS = ROOT / "tests" / "conformance"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Werror", f"-I{INCLUDE}"]


def compiled(compiler: str, flags: list[str], source: str, binary: Path) -> Path:
    """tests/c/`source`.c built into `binary`; the test fails with the compiler's output if
    it does not compile."""
    result = subprocess.run(
        [compiler, *flags, str(SOURCES / f"{source}.c"), "-o", str(binary)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{source}.c does not compile:\n{result.stderr}"
    return binary


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/c/*.c compiled with `cc -std=c99 -O2 -Wall -Werror -Iinclude`."""
    compiler = find_compiler()
    if compiler is None:
        pytest.skip("no C compiler: neither $CC nor cc nor gcc is available")
    out = tmp_path_factory.mktemp("c")
    return {
        source: compiled(compiler, CFLAGS, source, out / source)
        for source in ("conformance", "follow")
    }


def hexed(text: str | bytes) -> str:
    return "x" + (text.encode() if isinstance(text, str) else text).hex()


def forward_query(key: str, broker: str) -> str:
    return f"T {broker} {hexed(key)}"


def reverse_query(token: int | str, feed: str) -> str:
    return f"K {feed} i {token}" if isinstance(token, int) else f"K {feed} s {hexed(token)}"


def forward_answer(resolver: Resolver, key: str, broker: str) -> str:
    return token_answer(resolver.get_token(key, broker))


def token_answer(token: int | str | None) -> str:
    """The C program's line for a token (None: a miss)."""
    if token is None:
        return "-"
    return str(token) if isinstance(token, int) else "s" + hexed(token)


def reverse_answer(resolver: Resolver, token: int | str, feed: str) -> str:
    key = resolver.get_key(token, feed)
    return "-" if key is None else hexed(key)


def run_c(
    program: Path, snapshot: Path, queries: Iterable[str], *options: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *options, str(snapshot)],
        input="".join(f"{q}\n" for q in queries),
        capture_output=True,
        text=True,
        timeout=60,
    )


def answers(program: Path, snapshot: Path, queries: list[str], *options: str) -> list[str]:
    """The C program's answer lines, after checking that it opened the snapshot."""
    result = run_c(program, snapshot, queries, *options)
    assert result.returncode == 0, (result.returncode, result.stdout[:500], result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("open RSV_OK"), lines[0]
    assert len(lines) == len(queries) + 1
    return lines[1:]


# -- the conformance vectors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text("utf-8"))
    return document


@pytest.fixture(scope="module")
def cxx_conformance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/conformance.c compiled as C++17: order gateways in C++ include the header too."""
    compiler = find_compiler("CXX", "c++", "g++")
    if compiler is None:
        pytest.skip("no C++ compiler: neither $CXX nor c++ nor g++ is available")
    flags = ["-x", "c++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}"]
    return compiled(compiler, flags, "conformance", tmp_path_factory.mktemp("cxx") / "conformance")


@pytest.mark.parametrize("language", ["c", "c++"])
@pytest.mark.parametrize("strict", [False, True], ids=["fingerprint", "strict"])
def test_the_header_gives_every_vector_its_answer(
    programs: dict[str, Path],
    vectors: dict[str, Any],
    strict: bool,
    vectors_snapshot: Path,
    language: str,
    request: pytest.FixtureRequest,
) -> None:
    program = (
        programs["conformance"] if language == "c" else request.getfixturevalue("cxx_conformance")
    )
    snapshot = vectors_snapshot
    queries = [forward_query(v["key"], v["broker"]) for v in vectors["forward"]]
    queries += [reverse_query(v["token"], v["feed"]) for v in vectors["reverse"]]
    queries += [f"O {hexed(v['key'])}" for v in vectors["forward"]]
    expected = [token_answer(v["token"]) for v in vectors["forward"]]
    expected += ["-" if v["key"] is None else hexed(v["key"]) for v in vectors["reverse"]]
    expected += [str(v["ordinal"]) for v in vectors["forward"]]
    options = ("--verify", "--strict") if strict else ("--verify",)
    got = answers(program, snapshot, queries, *options)
    mismatches = [(q, g, e) for q, g, e in zip(queries, got, expected, strict=True) if g != e]
    assert not mismatches


def test_strict_ordinals_compare_the_key_bytes(
    programs: dict[str, Path], vectors: dict[str, Any], vectors_snapshot: Path
) -> None:
    keys = vectors["keys"]
    queries = [f"S {hexed(k)}" for k in keys] + [f"S {hexed(k + 'X')}" for k in keys]
    queries += [f"S {hexed(k.encode()[:-1])}" for k in keys]
    expected = [str(i) for i in range(len(keys))] + ["-1"] * (2 * len(keys))
    assert answers(programs["conformance"], vectors_snapshot, queries) == expected


def test_a_lookup_of_the_wrong_token_kind_or_an_unknown_name_is_an_error_not_a_miss(
    programs: dict[str, Path], vectors_snapshot: Path
) -> None:
    queries = [
        forward_query("NSE:INFY", "fyers"),
        reverse_query(408065, "fyers"),
        reverse_query(408065, "upstox"),
        reverse_query("408065", "kite"),
    ]
    got = answers(programs["conformance"], vectors_snapshot, queries)
    assert got == ["RSV_ENAME", "RSV_ENAME", "RSV_EKIND", "RSV_EKIND"]


# -- the real Kite file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kite_snapshot(kite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = load_kite(kite_file)
    path = tmp_path_factory.mktemp("kite") / "kite.snap"
    path.write_bytes(
        compile_snapshot(Registry.from_instruments(rows, trade_date=dt.date(2024, 4, 3)))
    )
    return path


@pytest.mark.parametrize("strict", [False, True], ids=["fingerprint", "strict"])
def test_every_key_of_the_real_kite_file_resolves_as_in_python_both_ways(
    programs: dict[str, Path], kite_snapshot: Path, strict: bool
) -> None:
    with Resolver.open(kite_snapshot, strict=strict) as resolver:
        keys = list(resolver)
        tokens = [resolver.token(k, "kite") for k in keys]
        assert len(keys) == 31_373
        queries = [forward_query(k, "kite") for k in keys]
        queries += [forward_query(k + "X", "kite") for k in keys[:500]]
        queries += [reverse_query(t, "kite") for t in tokens]
        queries += [reverse_query(int(t) + (1 << 40), "kite") for t in tokens[:500]]
        expected = [forward_answer(resolver, k, "kite") for k in keys]
        expected += [forward_answer(resolver, k + "X", "kite") for k in keys[:500]]
        expected += [reverse_answer(resolver, t, "kite") for t in tokens]
        expected += [reverse_answer(resolver, int(t) + (1 << 40), "kite") for t in tokens[:500]]
    assert expected.count("-") == 1000
    options = ("--strict",) if strict else ()
    got = answers(programs["conformance"], kite_snapshot, queries, *options)
    mismatches = [(q, g, e) for q, g, e in zip(queries, got, expected, strict=True) if g != e]
    assert not mismatches[:10]


# -- damaged files -----------------------------------------------------------------------------


def _u64_at(buffer: bytearray, offset: int, value: int) -> None:
    struct.pack_into("<Q", buffer, offset, value)


def _section_offset(snapshot: bytes, name: str) -> int:
    return read_header(snapshot).sections[name].offset


def _damaged() -> dict[str, tuple[bytes, str]]:
    """Damaged copies of the vector snapshot: name -> (bytes, the status rsv_open must give
    with RSV_VERIFY)."""
    good = (VECTORS / "vectors.snap").read_bytes()
    header = read_header(good)
    cases: dict[str, tuple[bytes, str]] = {}

    def resealed(edit: Callable[[bytearray], None]) -> bytes:
        """Edit the header or section table and recompute the header checksum, so that the
        check behind it is the one that must catch the damage."""
        copy = bytearray(good)
        edit(copy)
        set_generation(copy, header.generation)
        return bytes(copy)

    cases["empty"] = (b"", "RSV_ELAYOUT")
    cases["shorter than a header"] = (good[:100], "RSV_ELAYOUT")
    cases["bad magic"] = (b"RSLVSNAQ" + good[8:], "RSV_ELAYOUT")
    cases["truncated"] = (good[:-64], "RSV_ELAYOUT")
    cases["padded"] = (good + bytes(64), "RSV_ELAYOUT")
    flipped = bytearray(good)
    flipped[HEADER_FIXED_SIZE + 5] ^= 0x10
    cases["a flipped section table byte"] = (bytes(flipped), "RSV_ELAYOUT")
    payload = bytearray(good)
    payload[_section_offset(good, "keys") + 3] ^= 0x01
    cases["a flipped payload byte"] = (bytes(payload), "RSV_ELAYOUT")
    version = field_offset(HEADER_DTYPE, "version_major")
    cases["layout version 1"] = (
        resealed(lambda b: struct.pack_into("<H", b, version, 1)),
        "RSV_ELAYOUT",
    )
    count = field_offset(HEADER_DTYPE, "instrument_count")
    cases["instrument_count + 1"] = (
        resealed(lambda b: _u64_at(b, count, header.instrument_count + 1)),
        "RSV_ELAYOUT",
    )
    bits = field_offset(HEADER_DTYPE, "key_bucket_bits")
    cases["key_bucket_bits 33"] = (
        resealed(lambda b: struct.pack_into("<I", b, bits, 33)),
        "RSV_ELAYOUT",
    )
    entry = HEADER_FIXED_SIZE + SECTION_DTYPE.itemsize * 3  # "keys"
    offset = field_offset(SECTION_DTYPE, "offset")
    cases["a section past the end"] = (
        resealed(lambda b: _u64_at(b, entry + offset, header.file_size)),
        "RSV_ELAYOUT",
    )
    cases["a misaligned section"] = (
        resealed(lambda b: _u64_at(b, entry + offset, header.sections["keys"].offset + 8)),
        "RSV_ELAYOUT",
    )
    dtype = field_offset(SECTION_DTYPE, "dtype")
    cases["an unknown section dtype"] = (
        resealed(
            lambda b: b.__setitem__(slice(entry + dtype, entry + dtype + 8), b"<f8\0\0\0\0\0")
        ),
        "RSV_ELAYOUT",
    )
    feeds = header.sections["feeds"].offset + field_offset(FEED_DTYPE, "bucket_bits")
    bad_feed = bytearray(good)
    struct.pack_into("<I", bad_feed, feeds, 0)
    cases["a feed with bucket_bits 0"] = (bytes(bad_feed), "RSV_ELAYOUT")
    # Checksums intact: only the verify pass's comparison of the two fingerprint copies sees it.
    pairs = next(
        (e for n, e in header.sections.items() if n.startswith("tokens.") and e.dtype.kind == "u"),
        None,
    )
    assert pairs is not None and pairs.count, "the vectors need an integer broker"

    def flip_a_copy(b: bytearray, _: Any) -> None:
        b[pairs.offset] ^= 0x01  # instrument 0's copy of its fingerprint

    cases["a broker's copy of a fingerprint that differs"] = (_forged(flip_a_copy), "RSV_ELAYOUT")
    return cases


def test_a_damaged_snapshot_is_refused_with_a_status_and_a_message(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    for name, (data, status) in _damaged().items():
        path = tmp_path / "damaged.snap"
        path.write_bytes(data)
        result = run_c(programs["conformance"], path, [], "--verify")
        assert result.returncode == 3, (name, result.returncode, result.stdout, result.stderr)
        assert result.stdout.startswith(f"open {status} {path}: "), (name, result.stdout)
        with pytest.raises(LayoutError):  # the Python reader refuses it too
            Resolver.open(path, verify=True).close()


def _str_tokens(header: Any) -> Any:
    return next(
        e for n, e in header.sections.items() if n.startswith("tokens.") and e.dtype.kind == "S"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda b, h: struct.pack_into("<i", b, h.sections["records"].offset + 24, 2932897),
            "section 'records': field expiry holds a day that is not a date",
        ),
        (
            lambda b, h: struct.pack_into("<i", b, h.sections["records"].offset + 24, -719163),
            "section 'records': field expiry holds a day that is not a date",
        ),
        (
            lambda b, h: b.__setitem__(h.sections["keys"].offset, 0xFF),
            "section 'keys': a string is not UTF-8",
        ),
        (  # a surrogate, which Python's strict codec refuses too
            lambda b, h: b.__setitem__(
                slice(h.sections["keys"].offset, h.sections["keys"].offset + 3), b"\xed\xa0\x80"
            ),
            "section 'keys': a string is not UTF-8",
        ),
        (
            lambda b, h: b.__setitem__(h.sections["records"].offset + 48, 0xC3),
            "section 'records': field isin: a string is not UTF-8",
        ),
        (
            lambda b, h: b.__setitem__(_str_tokens(h).offset, 0x80),
            "a string is not UTF-8",
        ),
    ],
    ids=[
        "expiry-after-9999",
        "expiry-before-0001",
        "key-0xff",
        "key-surrogate",
        "isin",
        "str-token",
    ],
)
def test_verify_refuses_dates_and_strings_the_python_reader_refuses(
    programs: dict[str, Path],
    tmp_path: Path,
    edit: Callable[[bytearray, Any], None],
    message: str,
) -> None:
    path = tmp_path / "damaged.snap"
    path.write_bytes(_forged(edit))  # both checksums resealed: only verify's checks see it
    result = run_c(programs["conformance"], path, [], "--verify")
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.startswith(f"open RSV_ELAYOUT {path}: "), result.stdout
    assert message in result.stdout
    with pytest.raises(LayoutError, match=re.escape(message.split(": ")[-1])):
        Resolver.open(path, verify=True).close()
    Resolver.open(path).close()  # the O(1) open does not look at them


def test_a_missing_file_and_a_directory_are_refused(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    missing = run_c(programs["conformance"], tmp_path / "nothing.snap", [])
    assert (missing.returncode, missing.stdout.split()[:2]) == (3, ["open", "RSV_ENOENT"])
    directory = run_c(programs["conformance"], tmp_path, [])
    assert (directory.returncode, directory.stdout.split()[:2]) == (3, ["open", "RSV_ELAYOUT"])


def test_lookups_in_a_snapshot_with_damaged_tables_never_crash(
    programs: dict[str, Path], vectors: dict[str, Any], tmp_path: Path
) -> None:
    """Without RSV_VERIFY a damaged payload opens; every lookup must still stay inside the
    mapping: random bytes written over each table give answers (right or wrong), no signal."""
    good = (VECTORS / "vectors.snap").read_bytes()
    header = read_header(good)
    queries = [forward_query(v["key"], v["broker"]) for v in vectors["forward"]]
    queries += [reverse_query(v["token"], v["feed"]) for v in vectors["reverse"]]
    queries += [f"S {hexed(k)}" for k in vectors["keys"]]
    tables = [
        s
        for s in header.sections.values()
        if s.name.endswith(("remap", "targets", "pilots", "tokens", "fingerprints")) and s.nbytes
    ]
    assert len(tables) >= 10
    for section in tables:
        damaged = bytearray(good)
        damaged[section.offset : section.offset + section.nbytes] = os.urandom(section.nbytes)
        path = tmp_path / "damaged.snap"
        path.write_bytes(damaged)
        for strict in ((), ("--strict",)):
            result = run_c(programs["conformance"], path, queries, *strict)
            assert result.returncode == 0, (section.name, result.returncode, result.stderr)
            assert len(result.stdout.splitlines()) == len(queries) + 1


# -- following a running daemon ----------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """`resolverd serve` publishing registry `universe` from a small Kite CSV it watches:
    (the publishing directory, the CSV)."""
    pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")
    directory = tmp_path / "shm"
    directory.mkdir()
    kite = tmp_path / "instruments.csv"
    write_kite(kite, AARTI, NIFTY_CALL)
    running = Daemon(directory, [f"kite={kite}"]).start()
    try:
        yield directory, kite
    finally:
        running.stop()


class CFollower:
    """tests/c/follow.c following registry `universe` in `directory` for `key`'s Kite token."""

    def __init__(
        self, program: Path, directory: Path, key: str, *, retry_ns: int | None = None
    ) -> None:
        environment = dict(os.environ)
        if retry_ns is not None:
            environment["FOLLOW_RETRY_NS"] = str(retry_ns)
        self.process = subprocess.Popen(
            [str(program), str(directory), "universe", key, "kite"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout

    def opened(self) -> str:
        """What it printed on opening the registry."""
        return self.stdout.readline()

    def check(self) -> str:
        """What rsv_follow_check did: ``switched S generation G token T``."""
        self.stdin.write("check\n")
        self.stdin.flush()
        return self.stdout.readline()

    def finish(self) -> int:
        self.stdin.close()
        return self.process.wait(timeout=10)

    def __enter__(self) -> CFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stdout.close()
        if not self.stdin.closed:
            self.stdin.close()


def test_a_c_follower_switches_to_the_generation_a_running_daemon_publishes(
    programs: dict[str, Path], daemon: tuple[Path, Path]
) -> None:
    directory, kite = daemon
    with CFollower(programs["follow"], directory, "NSE:AARTIIND") as follower:
        assert follower.opened() == "generation 1 token 1793\n"
        assert follower.check() == "switched 0 generation 1 token 1793\n"

        write_kite(kite, AARTI_RENUMBERED, NIFTY_CALL)

        def generation() -> int:
            with Resolver.open("universe", directory=directory) as reader:
                return reader.generation

        wait_for(lambda: generation() == 2, "the daemon's second generation")
        assert follower.check() == "switched 1 generation 2 token 2049\n"
        assert follower.check() == "switched 0 generation 2 token 2049\n"
        assert follower.finish() == 0


def test_a_c_follower_of_an_unpublished_registry_is_told_it_is_unavailable(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(programs["follow"]), str(tmp_path), "universe", "NSE:INFY", "kite"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert (result.returncode, result.stdout.split()[:2]) == (3, ["open", "RSV_EUNAVAILABLE"])


# -- trust: the C reader refuses what the Python reader refuses (resolverd/_trust.py) ----------


def test_the_c_reader_refuses_a_snapshot_others_can_write_and_a_symlink(
    programs: dict[str, Path], vectors_snapshot: Path, tmp_path: Path
) -> None:
    writable = tmp_path / "writable.snap"
    writable.write_bytes(vectors_snapshot.read_bytes())
    writable.chmod(0o664)
    result = run_c(programs["conformance"], writable, [])
    assert result.returncode == 3
    assert result.stdout.startswith(f"open RSV_EUNTRUSTED {writable}: mode 0664"), result.stdout
    link = tmp_path / "link.snap"
    link.symlink_to(vectors_snapshot)
    result = run_c(programs["conformance"], link, [])
    assert result.stdout.startswith(f"open RSV_EUNTRUSTED {link}: a symbolic link"), result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user (chown) needs root")
def test_the_c_reader_trusts_another_users_snapshot_only_when_told_to(
    programs: dict[str, Path], vectors_snapshot: Path, tmp_path: Path
) -> None:
    planted = tmp_path / "planted.snap"
    planted.write_bytes(vectors_snapshot.read_bytes())
    planted.chmod(0o644)
    os.chown(planted, 65534, -1)
    result = run_c(programs["conformance"], planted, [])
    assert result.stdout.startswith(f"open RSV_EUNTRUSTED {planted}: owned by uid 65534")
    env = {**os.environ, "RESOLVERD_OWNER": "daemon,65534"}
    trusted = subprocess.run(
        [str(programs["conformance"]), str(planted)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert trusted.stdout.startswith("open RSV_OK"), trusted.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user (chown) needs root")
def test_a_c_follower_refuses_a_generation_its_control_segments_owner_did_not_write(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    from resolverd import Registry, compile_snapshot
    from resolverd.daemon.publish import Publisher
    from resolverd.model import BrokerToken, Instrument

    def snapshot(generation: int, token: int) -> bytearray:
        infy = Instrument(
            "NSE:INFY", "NSE", "NSE", "EQ", tokens=(BrokerToken("kite", "kite", token),)
        )
        return compile_snapshot(Registry.from_instruments([infy]), generation=generation)

    publisher = Publisher(tmp_path, "universe", grace=60.0)
    publisher.adopt()
    publisher.publish(snapshot(1, 408065))
    planted = tmp_path / "planted.snap"
    planted.write_bytes(snapshot(2, 666))
    os.chown(planted, 65534, -1)
    publisher._write_control(2, 0, planted.name)  # the control now names someone else's file
    publisher.close()
    env = {**os.environ, "RESOLVERD_OWNER": "65534"}  # trusting the user is not enough
    result = subprocess.run(
        [str(programs["follow"]), str(tmp_path), "universe", "NSE:INFY", "kite"],
        capture_output=True,
        text=True,
        timeout=10,
        env=env,
    )
    assert result.returncode == 3
    assert "RSV_EUNTRUSTED" in result.stdout and "someone else planted" in result.stdout


def test_a_c_follower_moves_to_a_renewed_control_file(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    """Past CONTROL_SEQUENCE_LIMIT the publisher renews the control file (see shm_layout): the
    C follower, mapping the old one, must turn to the name and keep following."""

    def snapshot(generation: int) -> bytearray:
        registry = Registry.from_instruments(
            [instrument("NSE:INFY", 100 + generation), instrument("NSE:TCS", 2953217)]
        )
        return compile_snapshot(registry, generation=generation)

    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    publisher.publish(snapshot(1))
    try:
        with CFollower(programs["follow"], tmp_path, "NSE:INFY") as follower:
            assert follower.opened() == "generation 1 token 101\n"
            last = CONTROL_SEQUENCE_LIMIT + 20  # two renewals
            for generation in range(2, last + 1):
                publisher.publish(snapshot(generation))
                answer = f"switched 1 generation {generation} token {100 + generation}\n"
                assert follower.check() == answer
            assert follower.finish() == 0
    finally:
        publisher.close()


def infy_at(generation: int, token: int) -> bytearray:
    """A snapshot of one instrument, NSE:INFY, with Kite token `token`."""
    registry = Registry.from_instruments([instrument("NSE:INFY", token)])
    return compile_snapshot(registry, generation=generation)


def test_a_c_follower_of_a_purged_registry_follows_it_when_it_is_served_again(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    """The purged control segment is retired and never written again: the follower looks at
    the name every retry_ns until a new publisher serves the registry there."""

    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    publisher.publish(infy_at(1, 101))
    hour = 3600 * 10**9
    with (
        CFollower(programs["follow"], tmp_path, "NSE:INFY", retry_ns=hour) as waiting,
        CFollower(programs["follow"], tmp_path, "NSE:INFY", retry_ns=0) as eager,
    ):
        assert waiting.opened() == eager.opened() == "generation 1 token 101\n"
        publisher.close()
        purge(tmp_path, "universe")
        assert waiting.check() == eager.check() == "switched 0 generation 1 token 101\n"
        successor = Publisher(tmp_path, "universe", grace=0.0)
        successor.adopt()
        try:
            successor.publish(infy_at(successor.next_generation, 202))  # generation 1 again
            assert waiting.check() == "switched 0 generation 1 token 101\n"
            assert eager.check() == "switched 1 generation 1 token 202\n"
            successor.publish(infy_at(successor.next_generation, 303))
            assert eager.check() == "switched 1 generation 2 token 303\n"
            assert (waiting.finish(), eager.finish()) == (0, 0)
        finally:
            successor.close()


def test_a_c_follower_watches_a_control_file_set_to_no_generation_in_place(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    """A new daemon that finds nothing to adopt (here: the previous release's generation, of
    another layout major version) sets the control file to no generation in place: the follower
    keeps watching that file and follows the next publish at once, with no retry interval."""

    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    publisher.publish(infy_at(1, 101))
    publisher.close()
    hour = 3600 * 10**9
    with CFollower(programs["follow"], tmp_path, "NSE:INFY", retry_ns=hour) as follower:
        assert follower.opened() == "generation 1 token 101\n"
        old = tmp_path / "resolverd.universe.1.snap"
        of_the_previous_major_version(old)
        successor = Publisher(tmp_path, "universe", grace=0.0)
        assert old in successor.adopt()
        try:
            assert follower.check() == "switched 0 generation 1 token 101\n"
            successor.publish(infy_at(successor.next_generation, 202))
            assert follower.check() == "switched 1 generation 2 token 202\n"
            assert follower.finish() == 0
        finally:
            successor.close()


def _forged(edit: Callable[[bytearray, Any], None]) -> bytes:
    """The vector snapshot with `edit(bytes, header)` applied and both checksums recomputed,
    so that only the reader's own checks stand between it and a lookup."""
    copy = bytearray((VECTORS / "vectors.snap").read_bytes())
    edit(copy, read_header(copy))
    reseal_payload(copy)
    return bytes(copy)


def _name_field(record: int) -> slice:
    return slice(record, record + 32)


def _twice_broker(b: bytearray, header: Any) -> None:
    first = header.sections["brokers"].offset  # angel, then kite
    b[_name_field(first + BROKER_DTYPE.itemsize)] = b[_name_field(first)]


def _twice_feed(b: bytearray, header: Any) -> None:
    first = header.sections["feeds"].offset  # angel:NFO, then angel:NSE
    b[_name_field(first + FEED_DTYPE.itemsize)] = b[_name_field(first)]


def _feed_of_the_other_kind(b: bytearray, header: Any) -> None:
    kite = header.sections["feeds"].offset + 2 * FEED_DTYPE.itemsize
    b[kite + field_offset(FEED_DTYPE, "kind")] = KIND_STR


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_twice_broker, "broker 1: name 'angel' appears twice"),
        (_twice_feed, "feed 1: name 'angel:NFO' appears twice"),
        (_feed_of_the_other_kind, "feed 2: field kind 2 is not the kind of broker kite"),
    ],
)
def test_both_readers_refuse_forged_broker_and_feed_records(
    programs: dict[str, Path],
    tmp_path: Path,
    edit: Callable[[bytearray, Any], None],
    message: str,
) -> None:
    path = tmp_path / "forged.snap"
    path.write_bytes(_forged(edit))
    for flags in ([], ["--verify"]):
        result = run_c(programs["conformance"], path, [], *flags)
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert result.stdout.startswith(f"open RSV_ELAYOUT {path}: {message}"), result.stdout
    with pytest.raises(LayoutError):
        Resolver.open(path).close()


def test_a_c_follower_of_a_renewal_naming_its_own_generation_does_not_switch(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    """A successor's adopt() rewrites the current generation; past the limit that renews the
    control file without a new generation, which is no switch."""

    def snapshot(generation: int) -> bytearray:
        registry = Registry.from_instruments([instrument("NSE:INFY", 100 + generation)])
        return compile_snapshot(registry, generation=generation)

    publisher = Publisher(tmp_path, "universe", grace=0.0)
    publisher.adopt()
    publish_until_a_renewal_is_next(publisher, snapshot)
    last = publisher.generation
    with CFollower(programs["follow"], tmp_path, "NSE:INFY") as follower:
        assert follower.opened() == f"generation {last} token {100 + last}\n"
        publisher.close()
        successor = Publisher(tmp_path, "universe", grace=0.0)
        successor.adopt()
        try:
            assert follower.check() == f"switched 0 generation {last} token {100 + last}\n"
            successor.publish(snapshot(last + 1))
            assert follower.check() == f"switched 1 generation {last + 1} token {101 + last}\n"
            assert follower.finish() == 0
        finally:
            successor.close()
