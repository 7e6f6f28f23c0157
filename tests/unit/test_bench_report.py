"""What a benchmark results file records of its command line."""

from __future__ import annotations

from bench.report import public_argv


def test_a_results_file_keeps_the_arguments_but_not_the_output_directory() -> None:
    assert public_argv(["loaders", "--size", "1000000", "--out", "/tmp/l3"]) == [
        "loaders",
        "--size",
        "1000000",
    ]
    assert public_argv(["core", "--out=/tmp/x", "--size", "10"]) == ["core", "--size", "10"]
    assert public_argv(["daemon", "--quick"]) == ["daemon", "--quick"]
