"""include/resolverd.h on damaged and lying snapshot files: never a signal, a sanitizer report
or a hang, whatever the file says.

tests/c/fuzz_open.c opens each file with rsv_open and from an exact-size heap copy, with and
without RSV_VERIFY and RSV_STRICT, and makes every lookup on what opens. It is built with
AddressSanitizer and UndefinedBehaviorSanitizer where the compiler has them (any report
aborts it), else plainly, where a wild read still shows as SIGSEGV. The files are the
mutations of tests/fuzzing.py, the ones the Python reader's fuzz tests use, from a fixed seed.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.c_reader import find_compiler
from resolverd import LayoutError, Resolver
from resolverd.shm_layout import (
    BROKER_DTYPE,
    FEED_DTYPE,
    HEADER_DTYPE,
    HEADER_FIXED_SIZE,
    KIND_INT,
    MAGIC,
    MAX_SECTIONS,
    RECORD_DTYPE,
    SECTION_DTYPE,
    VERSION_MAJOR,
    Section,
    header_checksum,
    header_size_for,
    write_snapshot,
)
from tests import fuzzing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "c" / "fuzz_open.c"
CFLAGS = ["-std=c99", "-Wall", "-Werror", f"-I{ROOT / 'include'}"]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
SANITIZE += ["-fno-sanitize-recover=all"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
MUTANTS = 600
SEED = 20240403
TIMEOUT_S = 300  # a hang guard, not a speed test: a healthy run takes about a second


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fuzz_open.c, sanitized if the compiler can, else with -O2."""
    compiler = find_compiler()
    if compiler is None:
        pytest.skip("no C compiler: neither $CC nor cc nor gcc is available")
    binary = tmp_path_factory.mktemp("c-fuzz") / "fuzz_open"
    for flags in (SANITIZE, ["-O2"]):
        built = subprocess.run(
            [compiler, *CFLAGS, *flags, str(SOURCE), "-o", str(binary)],
            capture_output=True,
            text=True,
        )
        if built.returncode == 0:
            return binary
    raise AssertionError(f"fuzz_open.c does not compile:\n{built.stderr}")


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every key and token of the base snapshot, and misses, in fuzz_open's format."""
    keys, ints, strs = fuzzing.base_queries()
    lines = [f"k x{key.encode().hex()}" for key in keys]
    lines += [f"i {token}" for token in ints]
    lines += [f"s x{token.encode().hex()}" for token in strs]
    path = tmp_path_factory.mktemp("queries") / "queries"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(program: Path, queries: Path, files: list[Path], timeout_s: float = TIMEOUT_S) -> list[str]:
    """fuzz_open's answer lines; fails naming the file it was on if it died."""
    result = subprocess.run(
        [str(program), str(queries), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **SANITIZER_ENV},
    )
    lines = result.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith("begin ")), "begin -1")
    where = files[int(last.split()[1])] if int(last.split()[1]) >= 0 else None
    died = result.returncode < 0 and signal.Signals(-result.returncode).name
    assert result.returncode == 0, (
        f"fuzz_open died ({died or result.returncode}) on {where}:\n{result.stderr[-4000:]}"
    )
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr
    assert lines[-1].startswith("done "), "fuzz_open stopped early"
    return lines


def statuses(lines: list[str]) -> dict[tuple[int, str], str]:
    """(file index, way) -> status name."""
    out = {}
    for line in lines:
        index, way, status, *_ = [*line.split(" ", 3), ""]
        if index.isdigit():
            out[int(index), way] = status
    return out


def python_opens(buf: bytes, verify: bool) -> bool:
    try:
        Resolver(buf, verify=verify).close()
    except LayoutError:
        return False
    return True


def test_the_c_reader_survives_every_mutant_and_opens_what_the_python_reader_opens(
    program: Path, queries: Path, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    cases = fuzzing.recipes()
    cases += [fuzzing.draw_mutations(fuzzing.RandomChooser(rng)) for _ in range(MUTANTS)]
    files, contents = [], []
    for i, mutations in enumerate(cases):
        buf = fuzzing.mutate(mutations)
        files.append(tmp_path / f"{i}.snap")
        files[-1].write_bytes(buf)
        contents.append(buf)
    answers = statuses(run(program, queries, files))
    ways = ("file", "file-verify-strict", "heap", "heap-strict", "heap-verify")
    assert set(answers) == {(i, way) for i in range(len(files)) for way in ways}
    opened = 0
    for i, buf in enumerate(contents):
        # The Python reader checks all the C reader checks, and more (names, dates, UTF-8):
        # whatever it accepts, the C reader must accept too.
        if python_opens(buf, verify=True):
            assert answers[i, "heap-verify"] == "RSV_OK", (i, cases[i])
        if python_opens(buf, verify=False):
            assert answers[i, "heap"] == "RSV_OK", (i, cases[i])
            opened += 1
        assert answers[i, "file"] == answers[i, "heap"]
    assert opened > len(cases) // 20, "too few mutants open for the lookups to be exercised"


def test_the_base_snapshot_opens_every_way(program: Path, queries: Path, tmp_path: Path) -> None:
    path = tmp_path / "base.snap"
    path.write_bytes(fuzzing.base_snapshot())
    assert set(statuses(run(program, queries, [path])).values()) == {"RSV_OK"}


@pytest.mark.parametrize(
    "mutations",
    [fuzzing.empty_registry(0), fuzzing.empty_feed(0, 0), fuzzing.empty_feed(2, 0)],
    ids=["no key slots", "an integer feed with no slots", "a string feed with no slots"],
)
def test_a_hash_with_no_slots_is_refused_not_a_division_by_zero(
    program: Path, queries: Path, tmp_path: Path, mutations: list[fuzzing.Mutation]
) -> None:
    path = tmp_path / "empty.snap"
    path.write_bytes(fuzzing.mutate(mutations))
    lines = run(program, queries, [path])  # was SIGFPE in every lookup
    assert all("RSV_ELAYOUT" in line and "slot_count" in line for line in lines[1:-1])


def many_sections() -> bytes:
    """A valid header over MAX_SECTIONS empty sections of distinct names."""
    size = header_size_for(MAX_SECTIONS)
    buf = bytearray(size)
    table = np.zeros(MAX_SECTIONS, dtype=SECTION_DTYPE)
    table["name"] = [f"s{i}".encode() for i in range(MAX_SECTIONS)]
    table["dtype"], table["offset"] = b"|u1", size
    buf[HEADER_FIXED_SIZE : HEADER_FIXED_SIZE + table.nbytes] = table.tobytes()
    header = np.zeros((), dtype=HEADER_DTYPE)
    header["magic"], header["version_major"], header["header_size"] = MAGIC, VERSION_MAJOR, size
    header["section_count"], header["file_size"] = MAX_SECTIONS, size
    header["key_bucket_bits"], header["key_width"], header["key_slot_count"] = 1, 8, 1
    buf[:HEADER_FIXED_SIZE] = header.tobytes()
    struct.pack_into("<Q", buf, 120, header_checksum(buf, size))
    return bytes(buf)


def many_brokers() -> bytes:
    """A valid snapshot of one instrument and as many integer brokers (with no feeds) as the
    section table can hold."""
    count = MAX_SECTIONS - 9
    brokers = np.zeros(count, dtype=BROKER_DTYPE)
    brokers["name"] = [f"b{j}".encode() for j in range(count)]
    brokers["kind"], brokers["token_width"] = KIND_INT, 8
    sections = [
        Section("key.pilots", "|u1", np.zeros(2, np.uint8)),
        Section("key.remap", "<u4", np.zeros(0, np.uint32)),
        Section("key.fingerprints", "<u8", np.zeros(1, np.uint64)),
        Section("keys", "|S8", np.array([b"K"], dtype="S8")),
        Section("records", "record", np.zeros(1, RECORD_DTYPE)),
        Section("strings.offsets", "<u4", np.zeros(2, np.uint32)),  # one empty string
        Section("strings.data", "|u1", np.zeros(0, np.uint8)),
        Section("brokers", "broker", brokers),
        Section("feeds", "feed", np.zeros(0, FEED_DTYPE)),
        *(Section(f"tokens.{j}", "<u8", np.zeros(2, np.uint64)) for j in range(count)),
    ]
    fields = {"generation": 1, "build_time_ns": 0, "trade_date": 0, "key_seed": 0}
    fields |= {"instrument_count": 1, "key_bucket_bits": 1, "key_width": 8, "key_slot_count": 1}
    return bytes(write_snapshot(sections, broker_count=count, feed_count=0, **fields))


@pytest.mark.parametrize(
    ("build", "answer"),
    [
        (many_sections, "section 'key.pilots' is missing"),
        (many_brokers, "RSV_OK"),  # as the Python reader does: see the test below
    ],
    ids=["sections of unknown names", "a broker per section"],
)
def test_a_table_of_the_most_sections_opens_without_a_quadratic_search(
    program: Path, queries: Path, tmp_path: Path, build: Callable[[], bytes], answer: str
) -> None:
    path = tmp_path / "many.snap"
    path.write_bytes(build())
    # A linear search of the table for each section took about 10 s per open here, 50 s for
    # fuzz_open's five ways; the binary search takes a fraction of a second, far below this
    # hang guard.
    lines = run(program, queries, [path], timeout_s=30)
    assert all(answer in line for line in lines[1:-1]), lines


def test_the_python_reader_opens_the_snapshot_of_the_most_brokers() -> None:
    assert python_opens(many_brokers(), verify=True)
